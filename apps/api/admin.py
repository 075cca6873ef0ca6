from django.contrib import admin, messages

from apps.api.models import ApiToken
from apps.api.services import apitoken_revoke, role_of
from controlpanel.errors import PanelError


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made with `manage.py apitoken create` (the only moment the token is shown);
    here they are read and revoked, never edited or deleted (the row is history)."""

    list_display = ["name", "prefix", "role", "created_at", "created_by", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "name",
        "prefix",
        "role",
        "user",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]
    exclude = ["token_hash"]
    actions = ["revoke"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").prefetch_related("user__groups")

    @admin.display(description="role")
    def role(self, token: ApiToken) -> str:
        return role_of(token)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            try:
                apitoken_revoke(name=token.name, actor=request.user)
            except PanelError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Revoked API token {token.name}.")

    def has_revoke_permission(self, request):
        return request.user.has_perm("api.change_apitoken")

from django.contrib import admin, messages

from apps.audit.models import AuditEvent, Operation
from apps.audit.operations import kind_get, sentence
from apps.audit.operations import retry as operation_retry
from controlpanel.errors import PanelError


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by services only; the admin shows it and changes nothing."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "actor_name", "action", "target_type", "target_id", "outcome", "bytes_reclaimed"]
    list_filter = ["outcome", "action", "target_type"]
    search_fields = ["target_id", "actor_name", "action", "message"]
    date_hierarchy = "occurred_at"
    list_select_related = ["actor_user"]


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "label",
        "target_type",
        "target_id",
        "actor_name",
        "status",
        "created_at",
        "finished_at",
        "outcome",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["target_id", "kind", "actor_name", "error"]
    readonly_fields = ["label", "outcome"]
    actions = ["retry"]

    @admin.display(description="what", ordering="kind")
    def label(self, operation: Operation) -> str:
        # Old rows may name a kind that is no longer declared: show the raw name.
        try:
            return kind_get(operation.kind).label
        except PanelError:
            return operation.kind

    @admin.display(description="outcome")
    def outcome(self, operation: Operation) -> str:
        """The result in one sentence instead of its JSON; nothing while the work runs."""
        return "" if operation.is_active else sentence(operation)

    @admin.action(description="Retry the selected failed operations", permissions=["retry"])
    def retry(self, request, queryset):
        for operation in queryset:
            try:
                retry = operation_retry(operation=operation, actor=request.user)
            except PanelError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{self.label(operation)} #{operation.pk} queued again as #{retry.pk}")

    def has_retry_permission(self, request):
        return request.user.has_perm("audit.retry_operation")

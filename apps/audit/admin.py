from django import forms
from django.contrib import admin, messages

from apps.audit.holds import HOLDABLE, hold_release, hold_set
from apps.audit.models import AuditEvent, Hold, Operation
from apps.audit.operations import kind_get, sentence
from apps.audit.operations import retry as operation_retry
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes


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
    list_display = ["occurred_at", "actor_name", "action", "target_type", "target_id", "outcome", "reclaimed"]
    list_filter = ["outcome", "action", "target_type"]
    search_fields = ["target_id", "actor_name", "action", "message"]
    date_hierarchy = "occurred_at"
    list_select_related = ["actor_user"]

    @admin.display(description="reclaimed", ordering="bytes_reclaimed")
    def reclaimed(self, event: AuditEvent) -> str:
        return humanize_bytes(event.bytes_reclaimed) if event.bytes_reclaimed else ""


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


class HoldForm(forms.ModelForm):
    target_type = forms.ChoiceField(choices=[(value, value) for value in sorted(HOLDABLE)])

    class Meta:
        model = Hold
        fields = ["target_type", "target_id", "reason", "until"]


@admin.register(Hold)
class HoldAdmin(admin.ModelAdmin):
    """Set a hold with the add form, release it with the action; both go through the
    audited services, and a hold is never edited or deleted (it is history)."""

    form = HoldForm
    list_display = ["target_type", "target_id", "reason", "held_by", "created_at", "until", "released_at"]
    list_filter = ["target_type", ("released_at", admin.EmptyFieldListFilter)]
    search_fields = ["target_id", "reason", "held_by"]
    actions = ["release"]

    def has_change_permission(self, request, obj=None):
        return obj is None and request.user.has_perm("audit.hold_storage")

    def has_add_permission(self, request):
        return request.user.has_perm("audit.hold_storage")

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        try:
            saved = hold_set(
                target_type=obj.target_type,
                target_id=obj.target_id,
                reason=obj.reason,
                until=obj.until,
                actor=request.user,
            )
        except PanelError as exc:
            # The form was valid, the hold was not (already held, an end in the past): say why.
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.pk = saved.pk

    @admin.action(description="Release the selected holds", permissions=["release"])
    def release(self, request, queryset):
        for hold in queryset.filter(released_at__isnull=True):
            try:
                hold_release(target_type=hold.target_type, target_id=hold.target_id, actor=request.user)
            except PanelError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Released the hold on {hold.target_type} {hold.target_id}.")

    def has_release_permission(self, request):
        return request.user.has_perm("audit.hold_storage")

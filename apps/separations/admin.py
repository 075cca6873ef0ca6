"""The mirror in the admin: read-only rows; cleanup actions open the same confirmation
page as the dashboard (a dry-run preview), sync queues the same operation."""

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse

from apps.audit.names import Kind
from apps.audit.operations import request as request_work
from apps.separations.models import SeparationSession
from apps.separations.operations import CLEANUP_PERMISSION, SYNC_PERMISSION
from controlpanel.errors import PanelError


@admin.register(SeparationSession)
class SeparationSessionAdmin(admin.ModelAdmin):
    list_display = [
        "session_id",
        "volume",
        "status",
        "total_bytes",
        "file_count",
        "input_present",
        "stems_present",
        "modified_at",
        "last_seen_at",
        "deleted_at",
    ]
    list_filter = ["status", "volume"]
    search_fields = ["session_id"]
    ordering = ["modified_at"]
    actions = ["cleanup_selected", "cleanup_download_policy", "cleanup_exit_policy", "sync_volume"]

    # The mirror is written by sync and cleanup only; deleting a row would lose history
    # while leaving the bytes, so the only deletion here is the cleanup action.
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_cleanup_permission(self, request):
        return request.user.has_perm(CLEANUP_PERMISSION)

    def has_sync_permission(self, request):
        return request.user.has_perm(SYNC_PERMISSION)

    @admin.action(description="Clean up selected sessions (manual, one batch)", permissions=["cleanup"])
    def cleanup_selected(self, request, queryset):
        ids = list(queryset.filter(status__in=SeparationSession.LIVE).values_list("session_id", flat=True)[:500])
        if not ids:
            self.message_user(request, "None of the selected sessions is on the volume.", messages.WARNING)
            return None
        query = urlencode([("session", sid) for sid in ids])
        return redirect(f"{reverse('separations:cleanup', args=['manual'])}?{query}")

    @admin.action(description="Run the download policy on the volume (preview first)", permissions=["cleanup"])
    def cleanup_download_policy(self, request, queryset):
        return redirect(reverse("separations:cleanup", args=["download"]))

    @admin.action(description="Run the exit policy on the volume (preview first)", permissions=["cleanup"])
    def cleanup_exit_policy(self, request, queryset):
        return redirect(reverse("separations:cleanup", args=["exit"]))

    @admin.action(description="Sync the mirror from the volume", permissions=["sync"])
    def sync_volume(self, request, queryset):
        try:
            operation = request_work(Kind.SESSIONS_SYNC, actor=request.user)
        except PanelError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Sync queued as operation #{operation.pk}.")

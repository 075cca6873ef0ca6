"""Admin: hosts are edited here; pods change only through actions that call the services,
after the same confirmation page the dashboard shows."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from apps.pods.models import DockerHost, OrphanVolume, Pod, PodVolume, Snapshot
from apps.pods.services import pod_preview, pod_request
from controlpanel.errors import PanelError


@admin.register(DockerHost)
class DockerHostAdmin(admin.ModelAdmin):
    list_display = ["name", "base_url", "reachable", "checked_at", "last_error"]
    readonly_fields = ["reachable", "checked_at", "last_error"]


class PodVolumeInline(admin.TabularInline):
    model = PodVolume
    fields = ["name", "docker_name", "mount_path", "exists", "size_bytes", "measured_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class SnapshotInline(admin.TabularInline):
    model = Snapshot
    fields = ["id", "status", "store_url", "total_bytes", "started_at", "finished_at", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


def _pod_action(action: str, permission: str, description: str):
    @admin.action(description=description, permissions=[permission])
    def run(modeladmin, request, queryset):
        pods = list(queryset)
        if request.POST.get("confirm") != "yes":
            return modeladmin.confirm_page(request, pods, action)
        for pod in pods:
            try:
                operation = pod_request(action=action, pod_id=pod.pod_id, actor=request.user)
            except PanelError as exc:
                modeladmin.message_user(request, str(exc), messages.ERROR)
            else:
                modeladmin.message_user(request, f"pod {pod.pod_id}: {action} queued as operation #{operation.pk}")
        return None

    run.__name__ = f"{action}_pods"
    return run


@admin.register(Pod)
class PodAdmin(admin.ModelAdmin):
    list_display = ["pod_id", "status", "host", "image", "container_id", "updated_at", "last_error"]
    list_filter = ["status", "host"]
    search_fields = ["pod_id", "container_id"]
    list_select_related = ["host"]
    readonly_fields = [
        "pod_id",
        "host",
        "image",
        "status",
        "container_id",
        "last_error",
        "created_at",
        "updated_at",
        "status_changed_at",
        "restoring_snapshot",
    ]
    inlines = [PodVolumeInline, SnapshotInline]
    actions = [
        _pod_action("stop", "stop", "Stop (snapshot, verify, then remove volumes)"),
        _pod_action("start", "start", "Start (reattach or restore)"),
        _pod_action("deprovision", "deprovision", "Deprovision (remove container and volumes)"),
        _pod_action("delete", "purge", "Delete (container, volumes and snapshots)"),
    ]

    def has_add_permission(self, request):
        return False  # provisioning goes through the pods page or the CLI

    def has_delete_permission(self, request, obj=None):
        return False  # a row delete would leak the volumes: use the Delete action

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_stop_permission(self, request):
        return request.user.has_perm("pods.stop_pod")

    def has_start_permission(self, request):
        return request.user.has_perm("pods.start_pod")

    def has_deprovision_permission(self, request):
        return request.user.has_perm("pods.deprovision_pod")

    def has_purge_permission(self, request):
        return request.user.has_perm("pods.delete_pod")

    def confirm_page(self, request, pods: list[Pod], action: str):
        """The shared confirmation page: what each pod loses and how many bytes."""
        items, errors = [], []
        for pod in pods:
            try:
                preview = pod_preview(pod_id=pod.pod_id, action=action)
            except PanelError as exc:
                errors.append(str(exc))
                continue
            items += preview["items"] or [{"label": pod.pod_id, "bytes": None, "note": preview["summary"]}]
        fields = [("action", request.POST["action"])]
        fields += [(helpers.ACTION_CHECKBOX_NAME, str(pod.pk)) for pod in pods]
        names = ", ".join(pod.pod_id for pod in pods)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.capitalize()} {len(pods)} pod{'s' if len(pods) != 1 else ''}",
            "summary": f"{action.capitalize()}: {names}. " + " ".join(errors),
            "items": items,
            "total_bytes": sum(item["bytes"] or 0 for item in items),
            "action_url": request.get_full_path(),
            "cancel_url": request.get_full_path(),
            "confirm_label": f"{action.capitalize()} {names}",
            "fields": fields,
            "error": "; ".join(errors) if errors and len(errors) == len(pods) else "",
        }
        return TemplateResponse(request, "dashboard/confirm.html", context)


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "pod", "status", "total_bytes", "store_url", "started_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["pod__pod_id"]
    list_select_related = ["pod"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # snapshots go through retention or the pod's Delete


@admin.register(OrphanVolume)
class OrphanVolumeAdmin(admin.ModelAdmin):
    list_display = ["docker_name", "host", "pod_id", "reason", "size_bytes", "created_at", "seen_at"]
    list_filter = ["host"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

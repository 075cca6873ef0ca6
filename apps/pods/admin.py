"""Admin: hosts are edited here; pods change only through actions that ask for the same
operation kinds as the pages, after the same confirmation page."""

from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers

from apps.audit import operations
from apps.audit.admin import ReadOnlyAdmin
from apps.pods.actions import PAGE_ACTIONS, PodAction
from apps.pods.models import DockerHost, OrphanVolume, Pod, PodVolume, Snapshot
from apps.pods.services import pod_preview
from apps.pods.services.backup import pod_backup_interval_set
from controlpanel.errors import PanelError
from controlpanel.formatting import plural
from controlpanel.preview import Preview, PreviewItem, confirm_page, is_confirmed


class DockerHostForm(forms.ModelForm):
    class Meta:
        model = DockerHost
        fields = ["name", "base_url"]

    def clean_base_url(self):
        url = self.cleaned_data["base_url"].strip()
        parsed = urlsplit(url)
        if parsed.scheme not in {"unix", "tcp", "ssh"} or not (parsed.netloc or parsed.path.strip("/")):
            raise forms.ValidationError(
                "An engine URL is unix:///path/docker.sock, tcp://host:port or ssh://user@host."
            )
        return url


@admin.register(DockerHost)
class DockerHostAdmin(admin.ModelAdmin):
    form = DockerHostForm
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


def _pods_preview(pods: list[Pod], action: PodAction) -> tuple[Preview, PanelError | None]:
    """One preview for the selected pods; a pod the action does not fit is named, not hidden."""
    delete, keep, errors = [], [], []
    for pod in pods:
        try:
            preview = pod_preview(pod_id=pod.pod_id, action=action)
        except PanelError as exc:
            errors.append(str(exc))
            continue
        delete += preview.delete or [PreviewItem(pod.pod_id, why=preview.summary)]
        keep += preview.keep
    names = ", ".join(pod.pod_id for pod in pods)
    preview = Preview(
        title=f"{action.name.capitalize()} {plural(len(pods), 'pod')}",
        summary=f"{action.name.capitalize()}: {names}. " + " ".join(errors),
        delete=delete,
        keep=keep,
        destructive=action.destructive,
    )
    refused = PanelError("; ".join(errors)) if errors and len(errors) == len(pods) else None
    return preview, refused


def _admin_action(action: PodAction):
    @admin.action(description=action.admin_label, permissions=[f"{action.name}_pod"])
    def run(modeladmin, request, queryset):
        pods = list(queryset)
        if not is_confirmed(request):
            preview, error = _pods_preview(pods, action)
            fields = [("action", request.POST["action"])]
            fields += [(helpers.ACTION_CHECKBOX_NAME, str(pod.pk)) for pod in pods]
            return confirm_page(
                request,
                title=preview.title,
                preview=preview,
                error=error,
                action_url=request.get_full_path(),
                cancel_url=request.get_full_path(),
                confirm_label=action.confirm_label,
                fields=fields,
            )
        for pod in pods:
            try:
                operation = operations.request(action.kind, pod.pod_id, actor=request.user)
            except PanelError as exc:
                modeladmin.message_user(request, str(exc), messages.ERROR)
            else:
                modeladmin.message_user(request, f"pod {pod.pod_id}: {action.name} queued as operation #{operation.pk}")
        return None

    run.__name__ = f"{action.name}_pods"
    return run


def _may(action: PodAction):
    def has_permission(modeladmin, request) -> bool:
        return operations.user_may(request.user, action.kind)

    return has_permission


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
        "backup_unchanged_at",
        "backup_at_risk_at",
    ]
    inlines = [PodVolumeInline, SnapshotInline]
    actions = [_admin_action(action) for action in PAGE_ACTIONS]

    def has_add_permission(self, request):
        return False  # provisioning goes through the pods page or the CLI

    def has_delete_permission(self, request, obj=None):
        return False  # a row delete would leak the volumes: use the Delete action

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        # The backup interval goes through its service (audited), as the pod page's form does.
        if "backup_every_hours" in form.changed_data:
            pod_backup_interval_set(pod_id=obj.pod_id, hours=obj.backup_every_hours, actor=request.user)
        if set(form.changed_data) - {"backup_every_hours"}:
            super().save_model(request, obj, form, change)


# `has_stop_pod_permission`, …: each action is offered to the roles its kind allows.
for _action in PAGE_ACTIONS:
    setattr(PodAdmin, f"has_{_action.name}_pod_permission", _may(_action))


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    """Snapshots go through retention or the pod's Delete, never a row delete."""

    list_display = ["id", "pod", "kind", "status", "total_bytes", "store_url", "started_at", "finished_at"]
    list_filter = ["status", "kind"]
    search_fields = ["pod__pod_id"]
    list_select_related = ["pod"]


@admin.register(OrphanVolume)
class OrphanVolumeAdmin(ReadOnlyAdmin):
    """What the last reconcile saw; the orphan sweep removes them."""

    list_display = ["docker_name", "host", "pod_id", "reason", "size_bytes", "created_at", "seen_at"]
    list_filter = ["host"]

"""Volume pages: the list, a volume's page (latest inspection, history, cross-checks)
and the two buttons (inspect, cross-check), which queue an operation and come back."""

from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Prefetch, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.audit.charts import bytes_chart
from apps.audit.holds import holds_by_id
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import request as request_operation
from apps.volumes import selectors
from apps.volumes.models import Finding, Inspection, Volume
from apps.volumes.operations import CROSSCHECK_PERMISSION, INSPECT_PERMISSION, REMOVE_FOLDER_PERMISSION
from apps.volumes.services import volume_backend, volume_price_per_gb_month
from apps.volumes.services.removal import folder_target, volume_folder_preview
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.paths import validate_id
from controlpanel.preview import confirm_page, is_confirmed

HISTORY_ROWS = 20
FAILED_STATUSES = {Operation.Status.FAILED, Operation.Status.ERRORED}


def known_volume(view):
    """A malformed or unknown volume name is a 404 whatever the method, before anything else."""

    @wraps(view)
    def checked(request, name: str, *args, **kwargs):
        _volume_or_404(name)
        return view(request, name, *args, **kwargs)

    return checked


def _volume_or_404(name: str) -> Volume:
    try:
        validate_id(name, kind="volume name")
    except InvalidInput as exc:
        raise Http404(str(exc)) from None
    return get_object_or_404(Volume, name=name)


@require_safe
def list_view(request):
    return render(request, "volumes/list.html", {"rows": selectors.volume_rows()})


@require_safe
def detail_view(request, name: str):
    volume = _volume_or_404(name)
    error = ""
    try:
        volume_backend(volume=volume)
    except PanelError as exc:
        error = str(exc)
    # The volume's own work and the folders removed from it (`<volume>:<path>`).
    on_volume = Q(target_type=TargetType.VOLUME, target_id=volume.name) | Q(
        target_type=TargetType.VOLUME_FOLDER, target_id__startswith=f"{volume.name}:"
    )
    operations = list(Operation.objects.filter(on_volume)[:5])
    last_inspect = next((op for op in operations if op.kind == Kind.VOLUME_INSPECT), None)
    if not error and last_inspect and last_inspect.status in FAILED_STATUSES:
        error = f"The last inspection failed: {last_inspect.error}"
    history = list(
        Inspection.objects.filter(volume=volume)
        .only("pk", "inspected_at", "total_bytes", "total_files", "bytes_delta", "files_delta", "monthly_cost")
        .order_by("-inspected_at", "-id")[:HISTORY_ROWS]
    )
    inspection, folder_rows, folder_holds = None, [], {}
    if history:
        # Each finding with its rule in the same query: a folder_absent one offers its removal.
        findings = Prefetch("findings", queryset=Finding.objects.select_related("rule"))
        inspection = Inspection.objects.prefetch_related(findings).get(pk=history[0].pk)
        # Each folder row with its hold's target (`<volume>:<path>`) and every row's hold in one query.
        folder_rows = [{**row, "target": folder_target(volume.name, row["path"])} for row in inspection.folder_rows]
        folder_holds = holds_by_id(target_type=TargetType.VOLUME_FOLDER, target_ids=[r["target"] for r in folder_rows])
    context = {
        "volume": volume,
        "error": error,
        "inspection": inspection,
        "folder_rows": folder_rows,
        "folder_holds": folder_holds,
        "history": history,
        "rules": list(volume.rules.all()),
        "price": volume_price_per_gb_month(url=volume.url),
        "chart": bytes_chart(domain="volumes", subject=volume.name),
        "operations": operations,
        "crosschecks": list(volume.crosschecks.all()[:5]),
        # A cross-check that failed wrote no result row: the section says so, not "none yet".
        "failed_crosschecks": [
            op for op in operations if op.kind == Kind.VOLUME_CROSSCHECK and op.status in FAILED_STATUSES
        ],
        "events": AuditEvent.objects.filter(on_volume)[:10],
    }
    # The page reloads its body when an inspection or cross-check shown on it ends (htmx).
    template = "volumes/part_body.html" if request.GET.get("part") == "body" else "volumes/detail.html"
    return render(request, template, context)


@known_volume
@require_POST
@permission_required(INSPECT_PERMISSION, raise_exception=True)
def inspect_run(request, name: str):
    volume = _volume_or_404(name)
    try:
        operation = request_operation(Kind.VOLUME_INSPECT, volume.name, actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Inspection queued as operation #{operation.pk}.")
    return redirect("volumes:detail", name=volume.name)


@known_volume
@require_POST
@permission_required(CROSSCHECK_PERMISSION, raise_exception=True)
def crosscheck_run(request, name: str):
    volume = _volume_or_404(name)
    try:
        operation = request_operation(
            Kind.VOLUME_CROSSCHECK,
            volume.name,
            folder=request.POST.get("folder", ""),
            s3_url=request.POST.get("s3_url", "").strip(),
            actor=request.user,
        )
    except PanelError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Cross-check queued as operation #{operation.pk}.")
    return redirect("volumes:detail", name=volume.name)


@known_volume
@require_safe
def remove_folder_confirm(request, name: str):
    """The dry run: every file in the folder with its bytes, measured now. Looking writes nothing."""
    volume = _volume_or_404(name)
    path = request.GET.get("path", "")
    page = {
        "title": f"Remove {path.strip('/')}/ from volume {volume.name}",
        "cancel_url": reverse("volumes:detail", args=[volume.name]),
        "confirm_label": "Remove this folder",
        "kind": Kind.VOLUME_REMOVE_FOLDER,
    }
    try:
        preview = volume_folder_preview(volume=volume, path=path)
    except PanelError as exc:
        return confirm_page(request, **page, error=exc)
    action_url = reverse("volumes:remove-folder-run", args=[volume.name])
    return confirm_page(request, **page, preview=preview, action_url=action_url, fields=[("path", path)])


@known_volume
@require_POST
@permission_required(REMOVE_FOLDER_PERMISSION, raise_exception=True)
def remove_folder_run(request, name: str):
    volume = _volume_or_404(name)
    path = request.POST.get("path", "")
    if not is_confirmed(request):
        return redirect(f"{reverse('volumes:remove-folder', args=[volume.name])}?{urlencode({'path': path})}")
    try:
        operation = request_operation(Kind.VOLUME_REMOVE_FOLDER, folder_target(volume.name, path), actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Removing {path.strip('/')}/ queued as operation #{operation.pk}.")
    return redirect("volumes:detail", name=volume.name)

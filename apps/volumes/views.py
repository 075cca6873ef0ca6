"""Volume pages: the list, a volume's page (latest inspection, history, cross-checks)
and the two buttons (inspect, cross-check), which queue an operation and come back."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from apps.audit.charts import bytes_chart
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import request as request_operation
from apps.volumes import selectors
from apps.volumes.models import Inspection, Volume
from apps.volumes.operations import CROSSCHECK_PERMISSION, INSPECT_PERMISSION
from apps.volumes.services import volume_backend, volume_price_per_gb_month
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.paths import validate_id

HISTORY_ROWS = 20


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
    operations = list(Operation.objects.filter(target_type=TargetType.VOLUME, target_id=volume.name)[:5])
    last_inspect = next((op for op in operations if op.kind == Kind.VOLUME_INSPECT), None)
    if not error and last_inspect and last_inspect.status in {Operation.Status.FAILED, Operation.Status.ERRORED}:
        error = f"The last inspection failed: {last_inspect.error}"
    history = list(
        Inspection.objects.filter(volume=volume)
        .only("pk", "inspected_at", "total_bytes", "total_files", "bytes_delta", "files_delta", "monthly_cost")
        .order_by("-inspected_at", "-id")[:HISTORY_ROWS]
    )
    inspection = None
    if history:
        inspection = Inspection.objects.prefetch_related("findings").get(pk=history[0].pk)
    context = {
        "volume": volume,
        "error": error,
        "inspection": inspection,
        "history": history,
        "rules": list(volume.rules.all()),
        "price": volume_price_per_gb_month(url=volume.url),
        "chart": bytes_chart(domain="volumes", subject=volume.name),
        "operations": operations,
        "crosschecks": list(volume.crosschecks.all()[:5]),
        "events": AuditEvent.objects.filter(target_type=TargetType.VOLUME, target_id=volume.name)[:10],
    }
    return render(request, "volumes/detail.html", context)


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

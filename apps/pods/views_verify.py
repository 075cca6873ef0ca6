"""The pod page's proof and hold controls: verify its latest snapshot, run a restore drill,
set or release a hold. Thin: each POST asks a service (or an operation kind) and redirects
back to the pod's page; a refusal is one line there."""

from datetime import UTC, datetime, time

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.views.decorators.http import require_POST

from apps.audit import operations
from apps.audit.holds import hold_release, hold_set
from apps.audit.names import Kind, TargetType
from apps.pods.services import pod_get
from controlpanel.errors import InvalidInput, NotFound, PanelError

HOLD_PERMISSION = "audit.hold_storage"


def _pod_id_or_404(pod_id: str) -> str:
    try:
        return pod_get(pod_id=pod_id).pod_id
    except (InvalidInput, NotFound) as exc:
        raise Http404(str(exc)) from None


def _ask(request, kind: str, target_id: str | None, what: str, **params) -> None:
    if not operations.user_may(request.user, kind):
        raise PermissionDenied
    try:
        operation = operations.request(kind, target_id, actor=request.user, **params)
    except PanelError as exc:
        messages.error(request, str(exc))
        return
    messages.success(request, f"{what} queued as operation #{operation.pk}.")


@require_POST
def verify_view(request, pod_id: str):
    pod_id = _pod_id_or_404(pod_id)
    _ask(request, Kind.PODS_VERIFY, None, f"Verification of pod {pod_id}'s latest snapshot", pod_id=pod_id)
    return redirect("pods:detail", pod_id=pod_id)


@require_POST
def drill_view(request, pod_id: str):
    pod_id = _pod_id_or_404(pod_id)
    _ask(request, Kind.PODS_DRILL, pod_id, f"Restore drill of pod {pod_id}")
    return redirect("pods:detail", pod_id=pod_id)


def _until(text: str) -> datetime | None:
    """An optional end: a date (the end of that day, UTC) or a date and time (UTC)."""
    text = (text or "").strip()
    if not text:
        return None
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise InvalidInput(f"{text[:40]!r} is not a date (YYYY-MM-DD) or a date and time")
        moment = datetime.combine(day, time(23, 59, 59))
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


@require_POST
def hold_view(request, pod_id: str):
    pod_id = _pod_id_or_404(pod_id)
    if not request.user.has_perm(HOLD_PERMISSION):
        raise PermissionDenied
    try:
        hold_set(
            target_type=TargetType.POD,
            target_id=pod_id,
            reason=request.POST.get("reason", ""),
            until=_until(request.POST.get("until", "")),
            actor=request.user,
        )
    except (PanelError, ValueError) as exc:
        messages.error(request, str(exc) if isinstance(exc, PanelError) else "that end date does not exist")
    else:
        messages.success(request, f"Pod {pod_id} is on hold: nothing deletes it until the hold is released.")
    return redirect("pods:detail", pod_id=pod_id)


@require_POST
def release_view(request, pod_id: str):
    pod_id = _pod_id_or_404(pod_id)
    if not request.user.has_perm(HOLD_PERMISSION):
        raise PermissionDenied
    try:
        hold_release(target_type=TargetType.POD, target_id=pod_id, actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Hold on pod {pod_id} released.")
    return redirect("pods:detail", pod_id=pod_id)


# pods:verify, pods:drill, pods:hold, pods:release-hold (inserted into apps/pods/urls.py)
URLS = [
    path("<str:pod_id>/verify/", verify_view, name="verify"),
    path("<str:pod_id>/drill/", drill_view, name="drill"),
    path("<str:pod_id>/hold/", hold_view, name="hold"),
    path("<str:pod_id>/release-hold/", release_view, name="release-hold"),
]

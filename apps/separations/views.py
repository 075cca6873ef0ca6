"""Sessions pages: the list with its gauge and chart, a session's page, and the cleanup
confirmation (a dry-run preview read from the volume) that every cleanup button opens."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.audit.charts import bytes_chart
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import request as request_work
from apps.audit.operations import user_may
from apps.separations import selectors
from apps.separations.models import SeparationSession
from apps.separations.operations import CLEANUP_PERMISSION, SYNC_PERMISSION
from apps.separations.services import POLICIES, SAMPLE_DOMAIN, cleanup_plan, policy_get, sessions_backend
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.paths import validate_id
from controlpanel.preview import confirm_page, is_confirmed

PAGE_SIZE = 50
PARTS = {
    "gauge": "separations/part_gauge.html",
    "sessions": "separations/part_sessions.html",
    "chart": "separations/part_chart.html",
    "audit": "separations/part_audit.html",
}


def known_policy(view):
    """An unknown policy is a 404 whatever the method, before anything else is said."""

    @wraps(view)
    def checked(request, policy: str, *args, **kwargs):
        if policy not in POLICIES:
            raise Http404("no such policy")
        return view(request, policy, *args, **kwargs)

    return checked


@require_safe
def list_view(request):
    try:
        volume = selectors.volume_name()
    except PanelError as exc:
        return render(request, "separations/list.html", {"error": str(exc)})
    status = request.GET.get("status", "live")
    queryset = SeparationSession.objects.filter(volume=volume)
    if status in SeparationSession.Status.values:
        queryset = queryset.filter(status=status)
    elif status == "live":
        # Every status but deleted, written so the partial index of live sessions serves it.
        queryset = queryset.exclude(status=SeparationSession.Status.DELETED)
    gauge = selectors.sessions_gauge(volume=volume)
    context = {
        "volume": volume,
        "status": status,
        "statuses": SeparationSession.Status.choices,
        "page": Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page")),
        "gauge": gauge,
        "oldest": selectors.sessions_oldest(volume=volume) if gauge.over else [],
        "chart": bytes_chart(domain=SAMPLE_DOMAIN, subject=volume),
        "operations": Operation.objects.filter(target_type=TargetType.SESSION_VOLUME, target_id=volume)[:5],
        "events": AuditEvent.objects.filter(target_type=TargetType.SESSION_VOLUME, target_id=volume)[:10],
        "policies": [policy_get("download"), policy_get("exit")],
        # Row links: one reverse for the page, not one per row (ids are validated [A-Za-z0-9_-]).
        "detail_prefix": reverse("separations:detail", args=["_"])[:-2],
        "may_clean": user_may(request.user, Kind.SESSIONS_CLEANUP),
    }
    # Parts reload themselves when a sync or cleanup shown here ends (`?part=`, htmx).
    part = PARTS.get(request.GET.get("part", ""))
    return render(request, part or "separations/list.html", context)


@require_safe
def detail_view(request, session_id: str):
    try:
        validate_id(session_id, kind="session id")
    except InvalidInput as exc:
        raise Http404(str(exc)) from None
    try:
        volume = selectors.volume_name()
    except PanelError as exc:
        return render(request, "separations/list.html", {"error": str(exc)})
    session = get_object_or_404(SeparationSession, volume=volume, session_id=session_id)
    context = {"session": session, "may_clean": user_may(request.user, Kind.SESSIONS_CLEANUP)}
    return render(request, "separations/detail.html", context)


def _session_ids(request) -> list[str]:
    return request.POST.getlist("session") if request.method == "POST" else request.GET.getlist("session")


@known_policy
@require_safe
def cleanup_confirm(request, policy: str):
    """GET only: what the batch would delete now, read from the volume; changes nothing."""
    chosen = policy_get(policy)
    session_ids = _session_ids(request)
    page = {
        "title": f"Clean up sessions: {chosen.name} policy",
        # A role that may not clean up sees the preview without a button it cannot use.
        "action_url": reverse("separations:cleanup-run", args=[policy])
        if user_may(request.user, Kind.SESSIONS_CLEANUP)
        else "",
        "fields": [("session", sid) for sid in session_ids],
        "cancel_url": reverse("separations:list"),
        "confirm_label": "Delete these sessions",
    }
    try:
        plan = cleanup_plan(backend=sessions_backend(), policy=chosen, session_ids=session_ids)
    except PanelError as exc:
        return confirm_page(request, error=exc, **page)
    return confirm_page(request, preview=plan.preview(), **page)


@known_policy
@require_POST
@permission_required(CLEANUP_PERMISSION, raise_exception=True)
def cleanup_run(request, policy: str):
    if not is_confirmed(request):
        return redirect(reverse("separations:cleanup", args=[policy]))
    try:
        operation = request_work(
            Kind.SESSIONS_CLEANUP, actor=request.user, policy=policy, session_ids=_session_ids(request)
        )
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("separations:list")
    messages.success(request, f"Cleanup queued as operation #{operation.pk}.")
    return redirect("dashboard:operation", operation_id=operation.pk)


@require_POST
@permission_required(SYNC_PERMISSION, raise_exception=True)
def sync_run(request):
    try:
        operation = request_work(Kind.SESSIONS_SYNC, actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("separations:list")
    messages.success(request, f"Sync queued as operation #{operation.pk}.")
    return redirect("dashboard:operation", operation_id=operation.pk)

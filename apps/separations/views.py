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
from apps.separations import selectors
from apps.separations.models import SeparationSession
from apps.separations.services import (
    POLICIES,
    TARGET_TYPE,
    cleanup_plan,
    policy_get,
    sessions_backend,
    sessions_cleanup_enqueue,
    sessions_sync_enqueue,
)
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.paths import validate_id

PAGE_SIZE = 50


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
        "chart": bytes_chart(domain="sessions", subject=volume),
        "operations": Operation.objects.filter(target_type=TARGET_TYPE, target_id=volume)[:5],
        "events": AuditEvent.objects.filter(target_type=TARGET_TYPE, target_id=volume)[:10],
        "policies": [policy_get("download"), policy_get("exit")],
        # Row links: one reverse for the page, not one per row (ids are validated [A-Za-z0-9_-]).
        "detail_prefix": reverse("separations:detail", args=["_"])[:-2],
    }
    return render(request, "separations/list.html", context)


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
    return render(request, "separations/detail.html", {"session": session})


def _session_ids(request) -> list[str]:
    return request.POST.getlist("session") if request.method == "POST" else request.GET.getlist("session")


@known_policy
@require_safe
def cleanup_confirm(request, policy: str):
    """GET only: what the batch would delete now, read from the volume; changes nothing."""
    chosen = policy_get(policy)
    session_ids = _session_ids(request)
    context = {
        "title": f"Clean up sessions: {chosen.name} policy",
        "summary": chosen.description,
        "action_url": reverse("separations:cleanup-run", args=[policy]),
        "fields": [("session", sid) for sid in session_ids],
        "cancel_url": reverse("separations:list"),
        "confirm_label": "Delete these sessions",
    }
    try:
        plan = cleanup_plan(backend=sessions_backend(), policy=chosen, session_ids=session_ids)
    except PanelError as exc:
        return render(request, "dashboard/confirm.html", {**context, "error": str(exc)})
    context["items"] = [
        {
            "label": s.session_id,
            "bytes": s.total_bytes,
            "note": f"last written {s.modified_at:%Y-%m-%d %H:%M} UTC, {s.file_count} files"
            + (", symlinks removed unfollowed" if s.symlinks or s.is_symlink else "")
            if s.modified_at
            else f"{s.file_count} files",
        }
        for s in plan.to_delete
    ]
    context["total_bytes"] = plan.total_bytes
    context["summary"] = (
        f"{chosen.description}. Looked at {len(plan.looked_at)} on {plan.volume}; "
        f"{len(plan.to_delete)} would be deleted, then one commit if the volume needs it."
    )
    if not plan.to_delete:
        context["action_url"] = ""
    return render(request, "dashboard/confirm.html", context)


@known_policy
@require_POST
@permission_required("separations.cleanup_separationsession", raise_exception=True)
def cleanup_run(request, policy: str):
    if request.POST.get("confirm") != "yes":
        return redirect(reverse("separations:cleanup", args=[policy]))
    try:
        operation = sessions_cleanup_enqueue(policy=policy, session_ids=_session_ids(request), actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("separations:list")
    messages.success(request, f"Cleanup queued as operation #{operation.pk}.")
    return redirect("dashboard:operation", operation_id=operation.pk)


@require_POST
@permission_required("separations.sync_separationsession", raise_exception=True)
def sync_run(request):
    try:
        operation = sessions_sync_enqueue(actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("separations:list")
    messages.success(request, f"Sync queued as operation #{operation.pk}.")
    return redirect("dashboard:operation", operation_id=operation.pk)

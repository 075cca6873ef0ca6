from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.audit.services import operation_enqueue
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import expired_filter, live_jobs, mixjobs_held_bytes, mixjobs_totals, stalled_filter
from apps.mixjobs.services import mixjobs_cleanup, mixjobs_cleanup_start, mixjobs_sync_start
from controlpanel.errors import PanelError
from controlpanel.paths import validate_id

PAGE_SIZE = 50
YES = "yes"


@require_safe
def list_view(request):
    queryset = live_jobs()
    filters = {key: request.GET.get(key, "").strip() for key in ["state", "session", "expired", "stalled", "problem"]}
    if filters["state"] in MixJob.State.values:
        queryset = queryset.filter(state=filters["state"])
    if filters["session"]:
        queryset = queryset.filter(session_id=filters["session"])
    if filters["expired"] == YES:
        queryset = queryset.filter(expired_filter())
    if filters["stalled"] == YES:
        queryset = queryset.filter(stalled_filter())
    if filters["problem"] == YES:
        queryset = queryset.exclude(problem="")
    totals = mixjobs_totals()
    paginator = Paginator(queryset.order_by("-updated_at", "-id"), PAGE_SIZE)
    if not any(filters.values()):
        # Unfiltered, the page lists every live job: the totals (dropped by every sync and
        # cleanup, the only writers) have already counted them, so no second count of the table.
        paginator.count = totals["jobs"]
    page = paginator.get_page(request.GET.get("page"))
    context = {
        "page": page,
        "filters": filters,
        "states": MixJob.State.choices,
        "totals": totals,
        "held_bytes": mixjobs_held_bytes(),
    }
    return render(request, "mixjobs/list.html", context)


def _sessions(request) -> list[str]:
    return [validate_id(value, kind="session id") for value in request.GET.getlist("session") if value]


@require_safe
def cleanup_confirm(request):
    """The dry run: what would go and how many bytes. Looking writes nothing."""
    context = {
        "title": "Clean up expired mix jobs",
        "action_url": reverse("mixjobs:cleanup-run"),
        "cancel_url": reverse("mixjobs:list"),
        "confirm_label": "Delete these jobs",
    }
    try:
        sessions = _sessions(request)
        reports = [
            mixjobs_cleanup(actor=request.user, session_id=session, dry_run=True, audit=False)
            for session in (sessions or [None])
        ]
    except PanelError as exc:
        return render(request, "dashboard/confirm.html", {**context, "error": str(exc)}, status=400)
    items = [{"label": path, "bytes": None, "note": "file"} for report in reports for path in report.deleted_files] + [
        {"label": s["path"], "bytes": None, "note": f"kept: {s['reason']}"} for r in reports for s in r.skipped
    ]
    jobs = sum(len(report.deleted_jobs) for report in reports)
    context.update(
        {
            "summary": (
                f"{jobs} expired job(s) in {', '.join(sessions) or 'all sessions'}: their JSON and index files, "
                "and a session's final_mix.wav only when none of its jobs remain. "
                "Each file is read again just before it is deleted."
            ),
            "items": items,
            "total_bytes": sum(report.bytes_reclaimed for report in reports),
            "fields": [("session", session) for session in sessions],
        }
    )
    if not jobs:
        context["action_url"] = ""
        context["summary"] = "Nothing has expired: there is nothing to delete."
    return render(request, "dashboard/confirm.html", context)


@require_POST
@permission_required("mixjobs.cleanup_mixjob", raise_exception=True)
def cleanup_run(request):
    if request.POST.get("confirm") != YES:
        return redirect("mixjobs:cleanup")
    try:
        sessions = [validate_id(v, kind="session id") for v in request.POST.getlist("session") if v]
        operations = [mixjobs_cleanup_start(actor=request.user, session_id=s) for s in (sessions or [None])]
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("mixjobs:list")
    for operation in operations:
        operation_enqueue(operation=operation)
    messages.success(request, f"Cleanup queued as operation #{operations[0].pk}.")
    return redirect("dashboard:operation", operation_id=operations[0].pk)


@require_POST
@permission_required("mixjobs.cleanup_mixjob", raise_exception=True)
def sync_run(request):
    try:
        operation = mixjobs_sync_start(actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("mixjobs:list")
    operation_enqueue(operation=operation)
    return redirect("dashboard:operation", operation_id=operation.pk)

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import BooleanField, ExpressionWrapper
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import request as request_work
from apps.audit.operations import request_many
from apps.mixjobs.models import MixJob
from apps.mixjobs.operations import CLEANUP_PERMISSION
from apps.mixjobs.selectors import expired_filter, live_jobs, mixjobs_held_bytes, mixjobs_totals, stalled_filter
from apps.mixjobs.services import mixjobs_cleanup_preview
from controlpanel.errors import PanelError
from controlpanel.preview import confirm_page, is_confirmed

PAGE_SIZE = 50
YES = "yes"
PARTS = {"headline": "mixjobs/part_headline.html", "table": "mixjobs/part_table.html"}


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
    # Each row says whether it is expired or stalled, by the same rules as the filters.
    queryset = queryset.annotate(
        is_expired=ExpressionWrapper(expired_filter(), output_field=BooleanField()),
        is_stalled=ExpressionWrapper(stalled_filter(), output_field=BooleanField()),
    )
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
        "operations": Operation.objects.filter(kind__startswith="mixjobs.").order_by("-created_at")[:3],
        "part_query": request.GET.copy(),
    }
    context["part_query"].pop("part", None)
    # Parts reload themselves when a sync or cleanup shown here ends (`?part=`, htmx).
    part = PARTS.get(request.GET.get("part", ""))
    return render(request, part or "mixjobs/list.html", context)


def _sessions(values: list[str]) -> list[str]:
    # A session named twice is one cleanup, not two.
    return list(dict.fromkeys(value for value in values if value))


@require_safe
def cleanup_confirm(request):
    """The dry run: every file that would go and every file kept, and why. Looking writes nothing."""
    page = {
        "title": "Clean up expired mix jobs",
        "cancel_url": reverse("mixjobs:list"),
        "confirm_label": "Delete these jobs",
    }
    sessions = _sessions(request.GET.getlist("session"))
    try:
        preview = mixjobs_cleanup_preview(session_ids=sessions)
    except PanelError as exc:
        return confirm_page(request, **page, error=exc)
    fields = [("session", session) for session in sessions]
    return confirm_page(request, **page, preview=preview, action_url=reverse("mixjobs:cleanup-run"), fields=fields)


@require_POST
@permission_required(CLEANUP_PERMISSION, raise_exception=True)
def cleanup_run(request):
    if not is_confirmed(request):
        return redirect("mixjobs:cleanup")
    sessions = _sessions(request.POST.getlist("session"))
    try:
        if sessions:
            # All or none: a session refused leaves no other one pending and never queued.
            operations = request_many(Kind.MIXJOBS_CLEANUP_SESSION, sessions, actor=request.user)
        else:
            operations = [request_work(Kind.MIXJOBS_CLEANUP, actor=request.user)]
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("mixjobs:list")
    messages.success(request, f"Cleanup queued as operation #{operations[0].pk}.")
    return redirect("dashboard:operation", operation_id=operations[0].pk)


@require_POST
@permission_required(CLEANUP_PERMISSION, raise_exception=True)
def sync_run(request):
    try:
        operation = request_work(Kind.MIXJOBS_SYNC, actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("mixjobs:list")
    return redirect("dashboard:operation", operation_id=operation.pk)

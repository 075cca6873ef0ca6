from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST, require_safe
from django_q.models import Failure, Schedule

from apps.audit.holds import holds_active
from apps.audit.models import AuditEvent, Operation
from apps.audit.operations import retry as operation_retry
from apps.audit.overview import bytes_held, bytes_leaked
from apps.dashboard import ratelimit
from apps.dashboard.selectors import (
    attention_items,
    in_flight_context,
    leak_rows,
    operation_kinds,
    operations_filtered,
    overview_figures,
    recent_charts,
)
from controlpanel.errors import PanelError

PAGE_SIZE = 50


@method_decorator(login_not_required, name="dispatch")
class RateLimitedLoginView(auth_views.LoginView):
    """The login page. django-axes counts its failures and, past the limit, answers with
    `ratelimit.login_locked_out` (429, saying when to retry) whatever the password."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        ratelimit.login_succeeded(username=form.get_user().get_username())
        return super().form_valid(form)


@require_safe
def overview(request):
    sections, figures_at = overview_figures()
    leaks = leak_rows(sections)
    context = {
        "sections": sections,
        "attention": attention_items(sections, leaks),
        "figures_at": figures_at,
        "leaks": leaks[:10],
        "leak_count": len(leaks),
        "leaks_unmeasured": sum(1 for leak in leaks if leak.bytes is None),
        "leaked_bytes": bytes_leaked(sections),
        "held_bytes": bytes_held(sections),
        "charts": recent_charts(),
        "recent_events": AuditEvent.objects.select_related("actor_user")[:10],
        # What people put on hold: nothing automatic deletes it until they release it.
        "holds": list(holds_active().order_by("-created_at")[:50]),
        **in_flight_context(),
    }
    return render(request, "dashboard/overview.html", context)


@require_safe
def in_flight(request):
    """The work-in-flight fragment the overview polls."""
    return render(request, "includes/in_flight.html", in_flight_context())


@require_safe
def leaks(request):
    sections, figures_at = overview_figures()
    rows = leak_rows(sections)
    # Largest first, a page at a time: the total and the count still cover every leak.
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "leaks": page.object_list,
        "leak_count": len(rows),
        "leaks_unmeasured": sum(1 for leak in rows if leak.bytes is None),
        "leaked_bytes": bytes_leaked(sections),
        "errors": [section for section in sections if section.error],
        "figures_at": figures_at,
    }
    return render(request, "dashboard/leaks.html", context)


@require_safe
def operations(request):
    """The task panel: work of every kind, newest first, filtered by kind, target, actor
    and status; routine schedule successes hidden unless asked for. Then the schedules and
    the queue's own failures."""
    queryset, filters = operations_filtered(request.GET)
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "filters": filters,
        "statuses": Operation.Status.choices,
        "kinds": operation_kinds(),
        "schedules": Schedule.objects.order_by("next_run")[:50],
        "queue_failures": Failure.objects.order_by("-stopped")[:20],
    }
    return render(request, "dashboard/operations.html", context)


@require_safe
def operation_detail(request, operation_id: int):
    operation = get_object_or_404(Operation, pk=operation_id)
    return render(request, "dashboard/operation_detail.html", {"operation": operation})


@require_safe
def operation_progress(request, operation_id: int):
    """The fragment htmx polls while the work runs; it stops polling once finished."""
    operation = get_object_or_404(Operation, pk=operation_id)
    response = render(request, "includes/operation_progress.html", {"operation": operation})
    # The page's sections listening for these reload themselves: at the poll that first
    # sees the work change status (claimed), and at the last one (finished).
    if not operation.is_active:
        response["HX-Trigger"] = "operation-finished"
    elif request.GET.get("seen") != operation.status:
        response["HX-Trigger"] = "operation-changed"
    return response


@require_POST
@permission_required("audit.retry_operation", raise_exception=True)
def operation_retry_view(request, operation_id: int):
    operation = get_object_or_404(Operation, pk=operation_id)
    try:
        retry = operation_retry(operation=operation, actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:operation", operation_id=operation.pk)
    messages.success(request, f"Queued again as operation #{retry.pk}.")
    return redirect("dashboard:operation", operation_id=retry.pk)


@require_safe
def audit_list(request):
    queryset = AuditEvent.objects.select_related("actor_user")
    filters = {}
    for field in ["action", "target_type", "target_id", "outcome", "actor_name"]:
        value = request.GET.get(field, "").strip()
        if value:
            filters[field] = value
            queryset = queryset.filter(**{field: value})
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/audit_list.html",
        {"page": page, "filters": filters, "outcomes": AuditEvent.Outcome.choices},
    )

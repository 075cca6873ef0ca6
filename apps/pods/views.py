"""Pod pages: thin. GET shows (and confirms, through the one confirmation page); POST asks
for the work as an operation kind and redirects."""

from functools import wraps

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.audit import operations
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind, TargetType
from apps.pods.actions import PAGE_ACTIONS, POD_ACTIONS, PROVISION, START
from apps.pods.forms import FROM_SNAPSHOT, ProvisionForm
from apps.pods.models import DockerHost, Pod, Snapshot
from apps.pods.operations import HELD_REFUSED
from apps.pods.selectors import pods_with_totals
from apps.pods.selectors_backup import backup_state
from apps.pods.services import orphans_preview, pod_get, pod_preview, retention_preview
from controlpanel.errors import InvalidInput, NotFound, PanelError
from controlpanel.formatting import join_words
from controlpanel.preview import confirm_page, is_confirmed

PAGE_SIZE = 50


def _pod_or_404(pod_id: str):
    try:
        return pod_get(pod_id=pod_id)
    except (InvalidInput, NotFound) as exc:
        raise Http404(str(exc)) from None


def known_pod(view):
    """Unknown or malformed pod ids are a 404 whatever the method, before anything else."""

    @wraps(view)
    def checked(request, pod_id: str, *args, **kwargs):
        _pod_or_404(pod_id)
        return view(request, pod_id, *args, **kwargs)

    return checked


def may(kind_of):
    """Refuse (403) a person whose role lacks the permission the kind of work declares.
    `kind_of(**view_kwargs)` names the kind."""

    def decorate(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            if not operations.user_may(request.user, kind_of(**kwargs)):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return checked

    return decorate


def _queue(request, kind: str, target_id: str | None = None, **params) -> Operation | None:
    """Ask for the work; a refusal is one line on the next page, and None."""
    try:
        return operations.request(kind, target_id, actor=request.user, **params)
    except PanelError as exc:
        messages.error(request, str(exc))
        return None


# Parts of a page that reload themselves when an operation on it changes status or ends
# (`?part=<name>`, htmx, `hx-trigger="operation-finished from:body"`): page → part → template.
PARTS = {
    "list": {"table": "pods/part_table.html"},
    "detail": {
        "head": "pods/part_head.html",
        "volumes": "pods/part_volumes.html",
        "snapshots": "pods/part_snapshots.html",
        "audit": "pods/part_audit.html",
        "proven": "pods/proven.html",
        "backup": "pods/_backup.html",
    },
}


def _render(request, page: str, template: str, context: dict):
    part = PARTS[page].get(request.GET.get("part", ""))
    return render(request, part or template, context)


def _list_context(request, form: ProvisionForm | None = None) -> dict:
    return {
        "page": Paginator(pods_with_totals(), PAGE_SIZE).get_page(request.GET.get("page")),
        "hosts": DockerHost.objects.all(),
        "active_operations": Operation.objects.filter(
            target_type__in=[TargetType.POD, TargetType.PODS], status__in=Operation.ACTIVE
        ).order_by("created_at")[:20],
        "form": form or ProvisionForm(),
    }


@require_safe
def list_view(request):
    return _render(request, "list", "pods/list.html", _list_context(request))


@require_safe
def detail_view(request, pod_id: str):
    pod = _pod_or_404(pod_id)
    on_pod = {"target_type": TargetType.POD, "target_id": pod.pod_id}
    # Work on this pod: its own actions, and a verification asked for from its page (a fleet
    # kind, with the pod as a parameter).
    pod_work = Q(**on_pod) | Q(kind=Kind.PODS_VERIFY, params__pod_id=pod.pod_id)
    snapshots = list(pod.snapshots.all()[:20])
    actions = [action for action in PAGE_ACTIONS if action.allowed(pod)]
    if pod.status == Pod.Status.DEPROVISIONED and not pod.snapshots.filter(status=Snapshot.Status.COMPLETE).exists():
        actions = [action for action in actions if action is not START]  # nothing to start from
    hold = pod.active_hold()
    context = {
        "pod": pod,
        "hold": hold,
        # What the hold refuses is shown, disabled, with the reason: not offered, not hidden.
        "held_actions": [action for action in actions if hold and action in HELD_REFUSED],
        "volumes": pod.volumes.order_by("id"),
        # Snapshots taken before this pod was provisioned under the same id belong to an
        # earlier pod: listed apart, never as this pod's.
        "snapshots": [s for s in snapshots if s.created_at >= pod.created_at],
        "earlier_snapshots": [s for s in snapshots if s.created_at < pod.created_at],
        "events": AuditEvent.objects.filter(**on_pod).select_related("actor_user")[:50],
        "operations": Operation.objects.filter(pod_work).order_by("-created_at")[:5],
        "busy": Operation.objects.filter(pod_work, status__in=Operation.ACTIVE).exists(),
        "has_complete_snapshot": pod.snapshots.filter(status=Snapshot.Status.COMPLETE).exists(),
        "backup": backup_state(pod),
        # What this person may do; a viewer is told why there are no buttons.
        "actions": [action for action in actions if operations.user_may(request.user, action.kind)],
        "actions_refused": join_words(
            [action.name for action in actions if not operations.user_may(request.user, action.kind)], last="or"
        ),
    }
    return _render(request, "detail", "pods/detail.html", context)


def _page_action(name: str):
    action = POD_ACTIONS.get(name)
    if action is None or not action.on_pod_page:
        raise Http404("no such action")
    return action


@require_safe
def confirm_view(request, pod_id: str, action: str):
    """The confirmation page: exactly what will be deleted, and how many bytes."""
    pod_action = _page_action(action)
    pod = _pod_or_404(pod_id)
    # A hold (or work under way) refuses the action: the page says so, with no button.
    error = operations.refusal(pod_action.kind, pod.pod_id)
    preview = None
    if error is None:
        try:
            preview = pod_preview(pod_id=pod.pod_id, action=pod_action)
        except PanelError as exc:
            error = exc
    return confirm_page(
        request,
        title=f"{pod_action.name.capitalize()} pod {pod.pod_id}",
        preview=preview,
        error=error,
        action_url=reverse(f"pods:{pod_action.name}", args=[pod.pod_id]),
        cancel_url=reverse("pods:detail", args=[pod.pod_id]),
        confirm_label=pod_action.confirm_label,
    )


@known_pod
@require_POST
@may(lambda action, **_: POD_ACTIONS[action].kind)
def action_view(request, pod_id: str, action: str):
    """Stop, start, deprovision or delete, once confirmed (the URL names the action)."""
    pod_action = _page_action(action)
    if not is_confirmed(request):
        return redirect("pods:confirm", pod_id=pod_id, action=pod_action.name)
    operation = _queue(request, pod_action.kind, pod_id)
    if operation is not None:
        messages.success(request, f"Pod {pod_id}: {pod_action.name} queued as operation #{operation.pk}.")
    return redirect("pods:detail", pod_id=pod_id)


@require_POST
@may(lambda **_: PROVISION.kind)
def provision_view(request):
    """The form checks the id before anything is queued; a refused id stays in the field
    with its error beside it (400), and an id with snapshots asks how to begin."""
    form = ProvisionForm(request.POST)
    if not form.is_valid():
        return render(request, "pods/list.html", _list_context(request, form), status=400)
    pod_id = form.cleaned_data["pod_id"]
    if form.cleaned_data.get("start") == FROM_SNAPSHOT:
        operation = _queue(request, Kind.POD_START, pod_id)
        done = f"Pod {pod_id}: start from snapshot #{form.latest.pk} queued"
    else:
        image, host = form.cleaned_data["image"] or None, form.cleaned_data["host"] or None
        operation = _queue(request, PROVISION.kind, pod_id, image=image, host=host)
        done = f"Pod {pod_id}: provision queued"
    if operation is not None:
        messages.success(request, f"{done} as operation #{operation.pk}.")
    return redirect("pods:list")


@require_POST
@may(lambda **_: Kind.PODS_RECONCILE)
def reconcile_view(request):
    operation = _queue(request, Kind.PODS_RECONCILE)
    if operation is not None:
        messages.success(request, f"Reconcile queued as operation #{operation.pk}.")
    return redirect("pods:list")


# The two housekeeping pages (pods:sweep, pods:retention, each with its `-run`): the kind
# each asks for, the preview it confirms and the button that confirms it.
HOUSEKEEPING = {
    "sweep": (Kind.PODS_SWEEP_ORPHANS, orphans_preview, "Delete these volumes"),
    "retention": (Kind.PODS_RETENTION, retention_preview, "Purge these snapshots"),
}


@require_safe
def housekeeping_confirm_view(request, page: str):
    kind, preview_of, confirm_label = HOUSEKEEPING[page]
    try:
        preview, error = preview_of(), None
    except PanelError as exc:
        preview, error = None, exc
    return confirm_page(
        request,
        title=preview.title if preview else operations.kind_get(kind).label,
        preview=preview,
        error=error,
        action_url=reverse(f"pods:{page}-run"),
        cancel_url=reverse("pods:list"),
        confirm_label=confirm_label,
    )


@require_POST
@may(lambda page, **_: HOUSEKEEPING[page][0])
def housekeeping_run_view(request, page: str):
    if not is_confirmed(request):
        return redirect(f"pods:{page}")
    operation = _queue(request, HOUSEKEEPING[page][0])
    if operation is None:
        return redirect("pods:list")
    return redirect("dashboard:operation", operation_id=operation.pk)

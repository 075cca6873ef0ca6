"""Pod pages: thin. GET shows (and confirms); POST checks permission, enqueues, redirects."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from apps.audit.models import AuditEvent, Operation
from apps.pods.models import DockerHost
from apps.pods.selectors import pods_with_totals
from apps.pods.services import (
    orphans_plan,
    pod_action_allowed,
    pod_get,
    pod_preview,
    pod_request,
    pods_request,
    snapshots_to_retire,
)
from controlpanel.errors import InvalidInput, NotFound, PanelError

PAGE_SIZE = 50
CONFIRM_LABELS = {
    "stop": "Snapshot, then delete the volumes",
    "start": "Start the pod",
    "deprovision": "Delete the container and volumes",
    "delete": "Delete the pod, its volumes and snapshots",
}


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


@require_safe
def list_view(request):
    page = Paginator(pods_with_totals(), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "hosts": DockerHost.objects.all(),
        "active_operations": Operation.objects.filter(
            target_type__in=["pod", "pods"], status__in=Operation.ACTIVE
        ).order_by("created_at")[:20],
    }
    return render(request, "pods/list.html", context)


@require_safe
def detail_view(request, pod_id: str):
    pod = _pod_or_404(pod_id)
    context = {
        "pod": pod,
        "volumes": pod.volumes.order_by("id"),
        "snapshots": pod.snapshots.all()[:20],
        "events": AuditEvent.objects.filter(target_type="pod", target_id=pod.pod_id).select_related("actor_user")[:50],
        "operations": Operation.objects.filter(target_type="pod", target_id=pod.pod_id).order_by("-created_at")[:5],
        "actions": [action for action in CONFIRM_LABELS if pod_action_allowed(pod, action)],
    }
    return render(request, "pods/detail.html", context)


@require_safe
def confirm_view(request, pod_id: str, action: str):
    """The confirmation page: exactly what will be deleted, and how many bytes."""
    if action not in CONFIRM_LABELS:
        raise Http404("no such action")
    pod = _pod_or_404(pod_id)
    context = {
        "title": f"{action.capitalize()} pod {pod.pod_id}",
        "action_url": reverse(f"pods:{action}", args=[pod.pod_id]),
        "cancel_url": reverse("pods:detail", args=[pod.pod_id]),
        "confirm_label": CONFIRM_LABELS[action],
        "fields": [],
    }
    try:
        preview = pod_preview(pod_id=pod.pod_id, action=action)
    except PanelError as exc:
        context.update(error=str(exc), summary="Nothing was changed.", items=[], total_bytes=0)
    else:
        context.update(summary=preview["summary"], items=preview["items"], total_bytes=preview["total_bytes"])
    return render(request, "dashboard/confirm.html", context)


def _enqueue(request, action: str, pod_id: str):
    if request.POST.get("confirm") != "yes":
        return redirect("pods:confirm", pod_id=pod_id, action=action)
    try:
        operation = pod_request(action=action, pod_id=pod_id, actor=request.user)
    except (InvalidInput, NotFound) as exc:
        raise Http404(str(exc)) from None
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("pods:detail", pod_id=pod_id)
    messages.success(request, f"Pod {pod_id}: {action} queued as operation #{operation.pk}.")
    return redirect("pods:detail", pod_id=pod_id)


@known_pod
@require_POST
@permission_required("pods.stop_pod", raise_exception=True)
def stop_view(request, pod_id: str):
    return _enqueue(request, "stop", pod_id)


@known_pod
@require_POST
@permission_required("pods.start_pod", raise_exception=True)
def start_view(request, pod_id: str):
    return _enqueue(request, "start", pod_id)


@known_pod
@require_POST
@permission_required("pods.deprovision_pod", raise_exception=True)
def deprovision_view(request, pod_id: str):
    return _enqueue(request, "deprovision", pod_id)


@known_pod
@require_POST
@permission_required("pods.delete_pod", raise_exception=True)
def delete_view(request, pod_id: str):
    return _enqueue(request, "delete", pod_id)


@require_POST
@permission_required("pods.provision_pod", raise_exception=True)
def provision_view(request):
    pod_id = request.POST.get("pod_id", "").strip()
    params = {"image": request.POST.get("image", "").strip() or None, "host": request.POST.get("host") or None}
    try:
        operation = pod_request(action="provision", pod_id=pod_id, actor=request.user, params=params)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("pods:list")
    messages.success(request, f"Pod {pod_id}: provision queued as operation #{operation.pk}.")
    return redirect("pods:list")


@require_POST
@permission_required("pods.change_pod", raise_exception=True)
def reconcile_view(request):
    try:
        operation = pods_request(action="reconcile", actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Reconcile queued as operation #{operation.pk}.")
    return redirect("pods:list")


@require_safe
def sweep_confirm_view(request):
    context = {
        "title": "Sweep orphaned pod volumes",
        "action_url": reverse("pods:sweep-run"),
        "cancel_url": reverse("pods:list"),
        "confirm_label": "Delete these volumes",
        "fields": [],
    }
    try:
        plan = orphans_plan()
    except PanelError as exc:
        context.update(error=str(exc), summary="Nothing was changed.", items=[], total_bytes=0)
    else:
        context.update(
            summary=f"These {len(plan)} volumes belong to no pod that needs them and are older than the grace "
            "period. They will be deleted (each is checked again just before).",
            items=[{"label": f"{p['host'].name}: {p['name']}", "bytes": p["bytes"], "note": p["reason"]} for p in plan],
            total_bytes=sum(p["bytes"] or 0 for p in plan),
        )
    return render(request, "dashboard/confirm.html", context)


@require_POST
@permission_required("pods.sweep_orphans", raise_exception=True)
def sweep_run_view(request):
    if request.POST.get("confirm") != "yes":
        return redirect("pods:sweep")
    try:
        operation = pods_request(action="sweep-orphans", actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("pods:list")
    return redirect("dashboard:operation", operation_id=operation.pk)


@require_safe
def retention_confirm_view(request):
    retire = snapshots_to_retire()
    context = {
        "title": "Purge old snapshots",
        "summary": "Failed snapshots and complete ones beyond the latest kept per pod will be deleted from their "
        "store. The snapshot a stopped pod needs is never among them.",
        "items": [
            {"label": f"{s.pod.pod_id} snapshot #{s.pk} ({s.status})", "bytes": s.total_bytes, "note": s.store_url}
            for s in retire
        ],
        "total_bytes": sum(s.total_bytes for s in retire),
        "action_url": reverse("pods:retention-run"),
        "cancel_url": reverse("pods:list"),
        "confirm_label": "Purge these snapshots",
        "fields": [],
    }
    return render(request, "dashboard/confirm.html", context)


@require_POST
@permission_required("pods.sweep_orphans", raise_exception=True)
def retention_run_view(request):
    if request.POST.get("confirm") != "yes":
        return redirect("pods:retention")
    try:
        operation = pods_request(action="retention", actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect("pods:list")
    return redirect("dashboard:operation", operation_id=operation.pk)

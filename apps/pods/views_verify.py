"""The pod page's proof controls: verify its latest snapshot, run a restore drill. Thin: each
POST asks for an operation kind and redirects back to the pod's page; a refusal is one line
there."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.http import require_POST

from apps.audit import operations
from apps.audit.names import Kind
from apps.pods.services import pod_get
from controlpanel.errors import InvalidInput, NotFound, PanelError


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


# pods:verify, pods:drill (inserted into apps/pods/urls.py); holds go through the one hold
# control every page shares (apps/dashboard/holds.py).
URLS = [
    path("<str:pod_id>/verify/", verify_view, name="verify"),
    path("<str:pod_id>/drill/", drill_view, name="drill"),
]

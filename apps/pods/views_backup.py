"""The pod page's backup controls: **Back up now** (asks for `pod.backup`; it deletes nothing,
so no confirmation page) and the pod's own backup interval. Thin: each POST calls one service
or asks for the kind, and redirects back; the operation's progress and end show on the page
without a reload, as Verify's do."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.http import require_POST

from apps.audit.names import Kind
from apps.pods.services.backup import pod_backup_interval_set
from apps.pods.views_verify import _ask, _pod_id_or_404
from controlpanel.errors import PanelError


class BackupIntervalForm(forms.Form):
    hours = forms.FloatField(
        required=False, min_value=0, max_value=24 * 366, help_text="empty: POD_BACKUP_EVERY_HOURS; 0: never"
    )


@require_POST
def backup_view(request, pod_id: str):
    pod_id = _pod_id_or_404(pod_id)
    _ask(request, Kind.POD_BACKUP, pod_id, f"Backup of running pod {pod_id}")
    return redirect("pods:detail", pod_id=pod_id)


@require_POST
def backup_interval_view(request, pod_id: str):
    pod_id = _pod_id_or_404(pod_id)
    if not request.user.has_perm("pods.change_pod"):
        raise PermissionDenied
    form = BackupIntervalForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Hours between backups: " + " ".join(form.errors.get("hours", ["not a number"])))
        return redirect("pods:detail", pod_id=pod_id)
    try:
        pod_backup_interval_set(pod_id=pod_id, hours=form.cleaned_data["hours"], actor=request.user)
    except PanelError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Backups of pod {pod_id}'s running volumes: saved.")
    return redirect("pods:detail", pod_id=pod_id)


# pods:backup, pods:backup-interval (inserted into apps/pods/urls.py).
URLS = [
    path("<str:pod_id>/backup/", backup_view, name="backup"),
    path("<str:pod_id>/backup-interval/", backup_interval_view, name="backup-interval"),
]

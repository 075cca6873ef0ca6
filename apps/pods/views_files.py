"""A snapshot's files (issue #22, "Any file back"): browse, search, download, restore beside
or in place of the current one (a replace also needs `pods.backup_pod`: it backs the pod up).
Thin: the service (`services.snapshot_files`, `services.restore_path`) decides; names and sizes
are for anyone who may view the pod, contents and restores need `pods.restore_files_pod`."""

import posixpath
from urllib.parse import quote, urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST, require_safe

from apps.audit import operations
from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.pods.services.restore_path import REPLACE_PERMISSION, restore_path_preview, target_of
from apps.pods.services.restore_replace import replace_sentence
from apps.pods.services.snapshot_download import snapshot_download
from apps.pods.services.snapshot_files import (
    file_index,
    file_read,
    folder_tar,
    mount_of,
    mtime_utc,
    path_normalise,
    snapshot_entries,
    snapshot_for_files,
)
from apps.pods.services.state import pod_get
from controlpanel.errors import PanelError, http_status
from controlpanel.preview import Alternative, confirm_page, is_confirmed

PERMISSION = "pods.restore_files_pod"
VIEW_PERMISSION = "pods.view_pod"
PAGE_SIZE = 100


def _files_url(pod_id: str, number: int, **query) -> str:
    query = {key: value for key, value in query.items() if value}
    url = reverse("pods:snapshot-files", args=[pod_id, number])
    return f"{url}?{urlencode(query)}" if query else url


def _crumbs(pod_id: str, number: int, at: str) -> list[tuple[str, str]]:
    """(name, url) from `/` down to the folder shown."""
    crumbs, so_far = [("/", _files_url(pod_id, number))], ""
    for part in [p for p in at.split("/") if p]:
        so_far += "/" + part
        crumbs.append((part, _files_url(pod_id, number, path=so_far)))
    return crumbs


def _refused(request, pod_id: str, number: int, exc: PanelError):
    """The one sentence saying why (an unknown pod or snapshot, one that is not complete, a
    path not in it), on the panel's refusal page with the status it calls for."""
    try:
        back = reverse("pods:detail", args=[pod_get(pod_id=pod_id).pod_id])
    except PanelError:
        back = reverse("pods:list")
    return confirm_page(request, title=f"Files of snapshot #{number}", error=exc, cancel_url=back)


def _require(request, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


@require_safe
def files_view(request, pod_id: str, number: int):
    _require(request, VIEW_PERMISSION)
    at, query = request.GET.get("path") or "/", (request.GET.get("q") or "").strip()[:200]
    try:
        snapshot = snapshot_for_files(pod_id=pod_id, number=number)
    except PanelError as exc:
        return _refused(request, pod_id, number, exc)
    error, status, entries, unsafe = "", 200, [], 0
    try:
        at = path_normalise(at)
        entries = snapshot_entries(pod_id=pod_id, number=number, path=at, query=query)
        unsafe = file_index(snapshot).unsafe
    except PanelError as exc:
        error, status = str(exc), http_status(exc)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    may_restore = request.user.has_perm(PERMISSION)
    rows = [
        {
            "entry": entry,
            "mtime": mtime_utc(entry.mtime),
            "open": _files_url(pod_id, number, path=entry.path) if entry.type == "folder" else "",
            "download": reverse("pods:snapshot-download", args=[pod_id, number]) + "?" + urlencode({"path": entry.path})
            if may_restore
            else "",
            "restore": reverse("pods:snapshot-restore", args=[pod_id, number]) + "?" + urlencode({"path": entry.path})
            if may_restore and mount_of(entry.path) not in {None, entry.path}
            else "",
        }
        for entry in page.object_list
    ]
    restores = Operation.objects.filter(
        kind=Kind.POD_RESTORE_PATH, target_type=TargetType.POD, target_id=snapshot.pod.pod_id
    ).order_by("-created_at")[:5]
    context = {
        "pod": snapshot.pod,
        "snapshot": snapshot,
        "at": at,
        "query": query,
        "crumbs": _crumbs(pod_id, number, at if not error else "/"),
        "page": page,
        "rows": rows,
        "error": error,
        "unsafe": unsafe,
        "may_restore": may_restore,
        "restores": restores,
        "search_url": _files_url(pod_id, number),
    }
    return render(request, "pods/snapshot_files.html", context, status=status)


@require_GET
def download_view(request, pod_id: str, number: int):
    """A file as itself, a folder as a tar; streamed (a damaged copy stops before its end).
    Audited: who took which path out of which snapshot (GET only: a HEAD would be audited as a
    download that sent nothing)."""
    _require(request, PERMISSION)
    try:
        selection = snapshot_download(
            pod_id=pod_id, number=number, path=request.GET.get("path") or "", actor=request.user
        )
    except PanelError as exc:
        return _refused(request, pod_id, number, exc)
    if selection.is_folder:
        response = StreamingHttpResponse(folder_tar(selection), content_type="application/x-tar")
        filename = f"{selection.name}.tar"
    else:
        response = StreamingHttpResponse(file_read(selection), content_type="application/octet-stream")
        response["Content-Length"] = str(selection.bytes)
        filename = selection.name
    response["Content-Disposition"] = _attachment(filename)
    return response


def _attachment(filename: str) -> str:
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename)}"


@require_safe
def restore_confirm_view(request, pod_id: str, number: int):
    """What a restore beside the current one will write, and where; or why not. Only for
    people who may restore: the preview asks the pod's engine."""
    _require(request, PERMISSION)
    at = request.GET.get("path") or ""
    preview, error = None, None
    try:
        snapshot_for_files(pod_id=pod_id, number=number)
    except PanelError as exc:
        return _refused(request, pod_id, number, exc)
    error = operations.refusal(Kind.POD_RESTORE_PATH, pod_id, snapshot=number, path=at)
    if error is None:
        try:
            preview = restore_path_preview(pod_id=pod_id, number=number, path=at)
        except PanelError as exc:
            error = exc
    shown = at[:200]
    alternative = None
    if preview is not None and request.user.has_perm(REPLACE_PERMISSION):
        refused = operations.refusal(Kind.POD_RESTORE_PATH, pod_id, snapshot=number, path=at, replace=True)
        alternative = Alternative(
            summary=replace_sentence(pod_id=pod_id, number=number, path=shown),
            label="Replace the current one (backs it up first)",
            fields=[("replace", "yes")],
            error=str(refused) if refused else "",
        )
    return confirm_page(
        request,
        title=f"Restore {shown} from snapshot #{number} beside the current one",
        preview=preview,
        error=error,
        action_url=reverse("pods:snapshot-restore-run", args=[pod_id, number]),
        cancel_url=_files_url(pod_id, number, path=posixpath.dirname(shown) if shown.startswith("/") else ""),
        confirm_label=f"Restore as {target_of(shown, number).rsplit('/', 1)[-1]}",
        fields=[("path", at)],
        kind=Kind.POD_RESTORE_PATH,
        alternative=alternative,
    )


@require_POST
def restore_run_view(request, pod_id: str, number: int):
    replace = request.POST.get("replace") == "yes"
    if not operations.user_may(request.user, Kind.POD_RESTORE_PATH):
        raise PermissionDenied
    if replace and not request.user.has_perm(REPLACE_PERMISSION):
        raise PermissionDenied
    at = request.POST.get("path") or ""
    try:
        snapshot_for_files(pod_id=pod_id, number=number)
    except PanelError as exc:
        return _refused(request, pod_id, number, exc)
    folder = posixpath.dirname(at) if at.startswith("/") else ""
    if not is_confirmed(request):
        return redirect(reverse("pods:snapshot-restore", args=[pod_id, number]) + "?" + urlencode({"path": at}))
    try:
        operation = operations.request(
            Kind.POD_RESTORE_PATH, pod_id, actor=request.user, snapshot=number, path=at, replace=replace
        )
    except PanelError as exc:
        messages.error(request, str(exc))
        return redirect(_files_url(pod_id, number, path=folder))
    how = "in place of the current one, after a backup of the pod," if replace else "beside the current one"
    messages.success(request, f"Restore of {at} {how} queued as operation #{operation.pk}.")
    return redirect(_files_url(pod_id, number, path=folder))


# pods:snapshot-files, pods:snapshot-download, pods:snapshot-restore, pods:snapshot-restore-run
URLS = [
    path("<str:pod_id>/snapshots/<int:number>/files/", files_view, name="snapshot-files"),
    path("<str:pod_id>/snapshots/<int:number>/files/download/", download_view, name="snapshot-download"),
    path("<str:pod_id>/snapshots/<int:number>/files/restore/", restore_confirm_view, name="snapshot-restore"),
    path("<str:pod_id>/snapshots/<int:number>/files/restore/run/", restore_run_view, name="snapshot-restore-run"),
]

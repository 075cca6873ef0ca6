"""A path out of a snapshot, put into the running pod beside the current one: `PATH` from
snapshot N becomes `PATH.from-snapshot-N` (a folder: every file under it), never overwriting.

check → write → read back, as one short pipeline:
1. the snapshot is complete and the pod's own, the path is inside one of the eight volumes
   (not a volume's root: its copy would land outside every volume), the pod is running and
   not on hold, and `PATH.from-snapshot-N` does not exist;
2. under the pod's hold lock, looked at again (a hold or the target may have come
   meanwhile), the files stream as one tar from the store (each checked against the
   snapshot's sha256) through the engine's archive API into the running container;
3. the written files are read back out of the container (size and sha256 of each) before it
   says done.

A write that fails on the way (the store's copy damaged, the store or the engine gone) or reads
back wrong leaves no copy that looks whole: what it wrote is removed when the target holds
nothing but files this restore writes (it did not exist when the writing began), and the
failure says so, or says where the part written is left.

The names written are the snapshot's own (`snapshot_files` leaves out any that is not a plain
relative path), and no folder above the target may be a link: a link the pod made
(`/workspace/proj -> /etc`) would carry the copy somewhere else than `PATH.from-snapshot-N`.

With `replace` (`pods restore-path --replace`, services/restore_replace.py), the running pod is
backed up first, then the copy written and read back as above takes PATH's place: the current
PATH is moved aside, the copy moved in, read back from its place, and only then is the copy
moved aside removed; a failure after the move aside puts the original back.

Files come back with their mtime, mode 0644 and owner root (the snapshot's file list keeps
no mode or owner; a whole restore, a start, brings those back)."""

import logging
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from apps.audit.holds import Held, hold_guard, hold_refuse
from apps.audit.models import Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, Progress, audit_record
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod
from apps.pods.services.backup import backup_active
from apps.pods.services.hosts import engine_for
from apps.pods.services.snapshot_files import (
    FileRow,
    Selection,
    _member,
    _rows_read,
    mount_of,
    shown,
    snapshot_select,
)
from apps.pods.services.state import _locked, _log
from apps.pods.stores.tarlist import BLOCK, TarFileList
from controlpanel.errors import Busy, Forbidden, InvalidInput, PanelError
from controlpanel.formatting import first_line, humanize_bytes, plural
from controlpanel.preview import Preview, PreviewItem

logger = logging.getLogger(__name__)

# Files a confirmation page names one by one; the rest are counted.
PREVIEW_FILES = 50
# Zeros that finish a member whose bytes failed, per piece.
ZEROS = 1024 * 1024
# A replace backs the running pod up first (services/backup.py): a person needs this as well.
REPLACE_PERMISSION = "pods.backup_pod"
# Go's os.ModeDir, in the mode of the engine's stat of a path.
GO_MODE_DIR = 1 << 31


@dataclass(frozen=True)
class RestorePlan:
    selection: Selection
    pod: Pod
    target: str  # PATH.from-snapshot-N, in the pod
    mount: str
    replace: bool = False

    @property
    def aside(self) -> str:
        """Where a replace moves the current PATH until the restored one reads back in its place."""
        return f"{self.selection.path}.replaced-by-snapshot-{self.selection.snapshot.pk}"

    def name_of(self, row: FileRow) -> str:
        """The row's name in the tar put at the mount: relative to the mount, renamed."""
        renamed = self.target[len(self.mount) + 1 :]
        if not self.selection.is_folder:
            return renamed
        return renamed + row.path[len(self.selection.path) :]


def target_of(path: str, number: int) -> str:
    return f"{path}.from-snapshot-{number}"


def restore_path_plan(
    *, pod_id: str, number: int | str, path: str, replace: bool = False, look: bool = True
) -> RestorePlan:
    """Everything checked that can be checked before writing; one sentence otherwise. With
    `look`, the running container is asked whether the target exists."""
    selection = snapshot_select(pod_id=pod_id, number=number, path=path)
    pod, path = selection.snapshot.pod, selection.path
    mount = mount_of(path)
    if mount is None or mount == path:
        raise InvalidInput(
            f"{shown(path)} is a whole volume or above one: restore a file or folder inside it "
            "(its copy beside it would lie outside the pod's volumes)"
        )
    if pod.status != Pod.Status.RUNNING:
        raise InvalidInput(f"pod {pod.pod_id} is {pod.status}: a path is restored only into a running pod")
    plan = RestorePlan(selection, pod, target_of(path, selection.snapshot.pk), mount, replace=bool(replace))
    if look:
        _running_and_free(plan, engine_for(pod.host))
    return plan


def _running_and_free(plan: RestorePlan, engine: DockerEngine) -> None:
    info = engine.container_get(plan.pod.container_name)
    if info is None or not (info.running or info.status == "paused"):  # paused: a dead worker's (`_thawed`)
        raise InvalidInput(f"pod {plan.pod.pod_id}'s container is not running: start the pod first")
    _in_the_way(plan, engine)


def _in_the_way(plan: RestorePlan, engine: DockerEngine) -> None:
    """Nothing at the target (nor, for a replace, where the current one goes), and no link in
    a folder above it."""
    if engine.path_exists(container=plan.pod.container_name, path=plan.target):
        raise Busy(
            f"{shown(plan.target)} already exists in pod {plan.pod.pod_id}: nothing is overwritten; "
            "move or remove it first"
        )
    if plan.replace and engine.path_exists(container=plan.pod.container_name, path=plan.aside):
        raise Busy(
            f"{shown(plan.aside)} already exists in pod {plan.pod.pod_id} (left by an earlier replace?): "
            "a replace moves the current one there; move or remove it first"
        )
    _no_link_above(plan, engine)


def _no_link_above(plan: RestorePlan, engine: DockerEngine) -> None:
    """Each folder above the target, from / down, is a real folder, or missing (the engine
    makes it): the engine follows a link, so one would put the copy elsewhere."""
    parts = plan.target.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:depth])
        stat = engine.path_stat(container=plan.pod.container_name, path=folder)
        if stat is None:
            return
        if stat.get("linkTarget") or not int(stat.get("mode") or 0) & GO_MODE_DIR:
            raise InvalidInput(
                f"{shown(folder)} in pod {plan.pod.pod_id} is a link or not a folder: {shown(plan.target)} "
                "would not land where it is named, so nothing was written"
            )


def restore_path_check(*, pod_id: str, number: int | str, path: str, replace: bool = False) -> RestorePlan:
    """What a request must pass (the operation kind's check): the plan, and no hold."""
    plan = restore_path_plan(pod_id=pod_id, number=number, path=path, replace=replace)
    hold_refuse(target_type=TargetType.POD, target_id=plan.pod.pod_id, what=f"pod {plan.pod.pod_id}")
    return plan


def restore_path_preview(*, pod_id: str, number: int | str, path: str) -> Preview:
    plan = restore_path_check(pod_id=pod_id, number=number, path=path)
    rows = plan.selection.rows
    items = [
        PreviewItem(name=plan.mount + "/" + plan.name_of(row), bytes=row.size, why=f"from {row.path}")
        for row in rows[:PREVIEW_FILES]
    ]
    more = f" The first {PREVIEW_FILES} are listed." if len(rows) > PREVIEW_FILES else ""
    return Preview(
        title=f"Restore {shown(plan.selection.path)} beside the current one",
        summary=(
            f"Writes {plural(len(rows), 'file')} ({humanize_bytes(plan.selection.bytes)}) from snapshot "
            f"#{plan.selection.snapshot.pk} into the running pod {plan.pod.pod_id} as {plan.target}; "
            f"{shown(plan.selection.path)} itself is left as it is, and nothing is overwritten.{more}"
        ),
        delete=items,
        destructive=False,
    )


def _counted(chunks, row: FileRow, progress: Progress, failures: list[PanelError]):
    """The row's bytes, counted. When they fail on the way (the store's copy damaged, the store
    gone) the failure is kept and the member is finished with zeros: the engine then ends its
    unpacking as the request ends. An archive cut off mid-way fails the request at once,
    while the engine is still unpacking what it got, so a look right after could miss it."""
    sent = 0
    try:
        for chunk in chunks:
            progress.advance(len(chunk))
            sent += len(chunk)
            yield chunk
    except PanelError as exc:
        failures.append(exc)
        while sent < row.size:
            piece = bytes(min(row.size - sent, ZEROS))
            sent += len(piece)
            yield piece


def _archive(plan: RestorePlan, progress: Progress, failures: list[PanelError]):
    """The files as one tar, named from the mount on (missing folders above are made); it
    ends after the first file that fails (`_counted`), and the failure is raised once the
    engine is done."""
    rows = _rows_read(plan.selection)
    try:
        for row, chunks in rows:
            yield from _member(plan.name_of(row), row, _counted(chunks, row, progress, failures))
            if failures:
                break
    except PanelError as exc:
        failures.append(exc)
    finally:
        rows.close()
    yield bytes(2 * BLOCK)


def _read_back(plan: RestorePlan, engine: DockerEngine, at: str = "") -> list[str]:
    """The written files as the container gives them back from `at` (the target unless
    named: a replace reads PATH again from its final place), against the snapshot's list."""
    at = at or plan.target
    found = TarFileList()
    for chunk in engine.archive_read(container=plan.pod.container_name, path=at):
        found.feed(chunk)
    # get_archive names entries from the path's own name on.
    top = posixpath.basename(at)
    have = {entry[0]: (entry[1], entry[2]) for entry in found.files}
    problems = []
    for row in plan.selection.rows:
        below = row.path[len(plan.selection.path) :] if plan.selection.is_folder else ""
        if have.get(top + below) != (row.size, row.sha256):
            problems.append(at + below)
    return problems


def _undo(plan: RestorePlan, engine: DockerEngine) -> str:
    """Take back a write that failed, and say what is left: the target is removed only when
    every file in it is one this restore writes (it was missing when the writing began)."""
    where, container = f"{shown(plan.target)} in pod {plan.pod.pod_id}", plan.pod.container_name
    try:
        if engine.path_stat(container=container, path=plan.target) is None:
            return "nothing was left in the pod"
        written = {f"{plan.mount}/{plan.name_of(row)}" for row in plan.selection.rows}
        found = TarFileList(hash_files=False)
        for chunk in engine.archive_read(container=container, path=plan.target):
            found.feed(chunk)
        above = posixpath.dirname(plan.target)
        if not {posixpath.join(above, entry[0]) for entry in found.files} <= written:
            return f"{where} holds files this restore did not write, so it was left as it is: look at it"
        code, output = engine.container_exec(container=container, command=["rm", "-rf", "--", plan.target])
        if code != 0 or engine.path_exists(container=container, path=plan.target):
            raise PanelError(first_line(output, default=f"rm answered {code}"))
    except PanelError as exc:
        return f"the part written is left as {where} and is incomplete: remove it ({first_line(exc)})"
    return f"the part written was removed ({where} does not exist)"


def pod_restore_path(
    *,
    pod_id: str,
    number: int | str,
    path: str,
    actor: Actor,
    operation: Operation | None = None,
    replace: bool = False,
) -> dict:
    # Late: restore_replace builds on this module's plan, read back and undo.
    from apps.pods.services.restore_replace import backup_first, swap_into_place

    plan = restore_path_plan(pod_id=pod_id, number=number, path=path, replace=replace, look=False)
    engine = engine_for(plan.pod.host)
    selection, snapshot = plan.selection, plan.selection.snapshot
    backup = None
    if plan.replace and isinstance(actor, AbstractBaseUser) and not actor.has_perm(REPLACE_PERMISSION):
        # A replace backs the pod up first: a person needs that permission too, whoever asked.
        raise Forbidden(f"{actor.get_username()} may not back up pods (needs {REPLACE_PERMISSION}), so may not replace")
    with transaction.atomic():  # under the pod's lock, as a backup claims it
        _locked(plan.pod.pod_id)
        if (backing := backup_active(plan.pod.pod_id)) is not None:
            raise Busy(
                f"pod {plan.pod.pod_id} is being backed up (operation #{backing.pk}): nothing was written; "
                "restore the path once it ends"
            )
    _thawed(plan, engine, operation)
    if plan.replace:
        # Looked at before the backup too: a pod that is held or has a target in the way gets none.
        hold_refuse(target_type=TargetType.POD, target_id=plan.pod.pod_id, what=f"pod {plan.pod.pod_id}")
        _running_and_free(plan, engine)
        backup = backup_first(plan, actor=actor, operation=operation)
    kept = f"; backup snapshot #{backup} taken first stays" if backup else ""
    progress = Progress(operation, total=selection.bytes, unit="bytes")
    _log(operation, f"restoring {shown(selection.path)} from snapshot #{snapshot.pk} as {shown(plan.target)}")
    # Under the pod's hold lock: a hold set now waits until the files are written (and swapped).
    with hold_guard((TargetType.POD, plan.pod.pod_id)) as hold:
        if hold is not None:
            raise Held(
                f"pod {plan.pod.pod_id} is on hold by {hold.held_by} ({hold.reason}): nothing was written into it{kept}"
            )
        _running_and_free(plan, engine)
        failures: list[PanelError] = []
        problems: list[str] = []
        with _frozen(plan, engine, operation):
            _in_the_way(plan, engine)  # again: from now on nothing in the pod moves
            try:
                engine.archive_write(
                    container=plan.pod.container_name, path=plan.mount, chunks=_archive(plan, progress, failures)
                )
            except PanelError as exc:
                failures.insert(0, exc)
            if not failures:
                progress.flush()
                _log(operation, f"wrote {plural(len(selection.rows), 'file')}; reading them back from the pod")
                problems = _read_back(plan, engine)
        if failures:
            raise PanelError(f"{first_line(failures[0])}; {_undo(plan, engine)}{kept}") from failures[0]
        if problems:
            raise PanelError(
                f"{shown(plan.target)} in pod {plan.pod.pod_id} does not read back as snapshot #{snapshot.pk} holds "
                f"it: {', '.join(problems[:3])}{' and more' if len(problems) > 3 else ''} differ; "
                f"{_undo(plan, engine)}{kept}"
            )
        left = swap_into_place(plan, engine=engine, operation=operation, backup=backup) if plan.replace else None
    result = {
        "pod_id": plan.pod.pod_id,
        "snapshot": snapshot.pk,
        "path": selection.path,
        "target": selection.path if plan.replace else plan.target,
        "files": len(selection.rows),
        "bytes": selection.bytes,
    }
    if plan.replace:
        result.update(replaced=True, backup=backup, left=left)
        message = (
            f"{shown(selection.path)} replaced by its copy from snapshot #{snapshot.pk}; "
            f"the one it replaced is kept in backup snapshot #{backup}"
        )
    else:
        message = f"{shown(selection.path)} from snapshot #{snapshot.pk} restored as {shown(plan.target)}"
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.POD_RESTORE_PATH,
            target_type=TargetType.POD,
            target_id=plan.pod.pod_id,
            message=message,
            details=result,
            operation=operation,
        )
    return result


@contextmanager
def _frozen(plan: RestorePlan, engine: DockerEngine, operation: Operation | None) -> Iterator[None]:
    """The pod's container paused while the copy is written and read back: the engine writes
    as root and follows links in the folders it writes into, so nothing in the pod may swap a
    folder of the copy for a link meanwhile (a file written elsewhere, over another). Unpaused
    whatever happens; a worker that died meanwhile leaves it to the next one (`_thawed`)."""
    container, began = plan.pod.container_name, time.monotonic()
    try:
        engine.container_pause(container)  # within: a pause that raised may still have happened
        yield
    finally:
        try:
            info = engine.container_get(container)
            if info is not None and info.status == "paused":
                engine.container_unpause(container)
            _log(operation, f"{container} was paused {time.monotonic() - began:.2f} s while the copy was written")
        except PanelError as exc:  # the error that ended the block is the one to tell
            logger.warning("could not unpause %s after a path restore: %s", container, exc)


def _thawed(plan: RestorePlan, engine: DockerEngine, operation: Operation | None) -> None:
    """A container a dead worker left paused (this restore's kind, or a backup's) runs again:
    the pod is claimed by this operation, so no other pause is under way."""
    info = engine.container_get(plan.pod.container_name)
    if info is not None and info.status == "paused":
        engine.container_unpause(plan.pod.container_name)
        _log(operation, f"unpaused {plan.pod.container_name}, which an earlier worker left paused")


def restored_sentence(result: dict) -> str:
    if result.get("replaced"):
        left = f" {result['left']}" if result.get("left") else ""
        return (
            f"{shown(result['path'])} in pod {result['pod_id']} is replaced by its copy from snapshot "
            f"#{result['snapshot']}: {plural(result['files'], 'file')} ({humanize_bytes(result['bytes'])}), read back "
            f"from its place and matching; the one it replaced is kept in backup snapshot #{result['backup']}.{left}"
        )
    return (
        f"{shown(result['path'])} from snapshot #{result['snapshot']} is in pod {result['pod_id']} as "
        f"{shown(result['target'])}: "
        f"{plural(result['files'], 'file')} ({humanize_bytes(result['bytes'])}), read back and matching."
    )

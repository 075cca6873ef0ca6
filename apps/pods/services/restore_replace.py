"""`pods restore-path --replace`: PATH in the running pod replaced by its copy from snapshot N,
the pod backed up first so that the current PATH is kept in a backup snapshot. One operation
kind with the beside-restore (`restore_path.pod_restore_path(replace=True)`); this module holds
the two steps only a replace takes:

1. before anything is written, `pod_backup` of the running pod (a snapshot of kind backup of
   its eight volumes, the pod not stopped), and the backup's copy of PATH read back from the
   store (every file against its sha256); if either fails, nothing is written or replaced;
2. after the copy was written as PATH.from-snapshot-N and read back (as a beside-restore does),
   under the same hold lock: the current PATH is moved aside to PATH.replaced-by-snapshot-N,
   the copy moved into its place, PATH read back from there against the snapshot's list (size
   and sha256 of every file), and only then is the copy moved aside removed. A failure after
   the move aside puts the original back: the copy is moved out of the way first, then the
   original renamed back, so the pod never holds neither.

The moves are `mv` run in the container (busybox and coreutils both have it): a rename inside
one volume (PATH and its siblings share their folder), never half done. `-n -T`: never onto,
nor into, something that appeared meanwhile; each move is looked at afterwards, since a
`mv -n` that did nothing still answers 0."""

import posixpath

from apps.audit.models import Operation
from apps.audit.services import Actor
from apps.pods.docker_engine import DockerEngine
from apps.pods.services.backup import pod_backup
from apps.pods.services.restore_path import RestorePlan, _read_back, _undo
from apps.pods.services.snapshot_files import _rows_read, shown, snapshot_select
from apps.pods.services.state import _log
from apps.pods.stores.tarlist import TarFileList
from controlpanel.errors import NotFound, PanelError
from controlpanel.formatting import first_line, humanize_bytes, plural


def replace_sentence(*, pod_id: str, number: int | str, path: str) -> str:
    """What the confirmation page says a replace does."""
    return (
        f"Or replace the current {shown(path)}: the running pod {pod_id} is backed up first (a backup snapshot of "
        f"its eight volumes, which keeps the current {shown(path)}), then {shown(path)} is replaced by these files "
        f"from snapshot #{number}, read back from its place; the current one is then removed from the pod."
    )


def backup_first(plan: RestorePlan, *, actor: Actor, operation: Operation | None) -> int:
    """The running pod backed up (its progress is the operation's meanwhile); the backup's number."""
    path, pod_id = shown(plan.selection.path), plan.pod.pod_id
    _log(operation, f"backing up the running pod {pod_id} before replacing {path}")
    try:
        backup = pod_backup(pod_id=pod_id, actor=actor, operation=operation)
    except PanelError as exc:
        raise type(exc)(
            f"the backup of pod {pod_id} taken before replacing {path} failed, so nothing was replaced: "
            f"{first_line(exc)}"
        ) from exc
    _log(operation, f"backup snapshot #{backup['snapshot']} keeps the current {path}")
    _backup_read_back(plan, number=backup["snapshot"], operation=operation)
    return backup["snapshot"]


def _backup_read_back(plan: RestorePlan, *, number: int, operation: Operation | None) -> None:
    """The current PATH goes only once its copy in the backup has been read back in this
    operation: every file the backup lists under PATH, each checked against its sha256 (a
    backup is otherwise proven only by a later verify)."""
    path = plan.selection.path
    try:
        kept = snapshot_select(pod_id=plan.pod.pod_id, number=number, path=path)
    except NotFound:
        # Not there, or no regular file under it (an empty folder, a link): nothing to read.
        _log(operation, f"backup snapshot #{number} holds no regular file under {shown(path)}")
        return
    try:
        for _row, chunks in _rows_read(kept):
            for _chunk in chunks:
                pass
    except PanelError as exc:
        raise PanelError(
            f"backup snapshot #{number} of pod {plan.pod.pod_id} does not read back its copy of {shown(path)}, "
            f"so nothing was replaced: {first_line(exc)}"
        ) from exc
    _log(
        operation,
        f"read back {plural(len(kept.rows), 'file')} ({humanize_bytes(kept.bytes)}) of {shown(path)} "
        f"from backup snapshot #{number}",
    )


def _move(engine: DockerEngine, container: str, source: str, dest: str) -> None:
    code, output = engine.container_exec(container=container, command=["mv", "-n", "-T", "--", source, dest])
    if (
        code != 0
        or engine.path_exists(container=container, path=source)
        or not engine.path_exists(container=container, path=dest)
    ):
        said = first_line(output, default=f"mv answered {code}" if code else "mv did not move it")
        raise PanelError(f"{shown(source)} could not be moved to {shown(dest)} ({said})")


def swap_into_place(plan: RestorePlan, *, engine: DockerEngine, operation: Operation | None, backup: int) -> str:
    """The restored copy (written and read back at the target) takes PATH's place. Returns a
    sentence when the copy moved aside is left behind (the replace itself succeeded), else ""."""
    container, path, aside = plan.pod.container_name, plan.selection.path, plan.aside
    had_current = engine.path_stat(container=container, path=path) is not None
    if had_current:
        _log(operation, f"moving the current {shown(path)} aside as {shown(aside)}")
        try:
            _move(engine, container, path, aside)
        except PanelError as exc:
            raise PanelError(f"{first_line(exc)}: nothing was replaced; {_undo(plan, engine)}") from exc
    try:
        _log(operation, f"moving {shown(plan.target)} into its place")
        _move(engine, container, plan.target, path)
        _log(operation, f"reading {shown(path)} back from its place")
        problems = _read_back(plan, engine, at=path)
        if problems:
            raise PanelError(
                f"{shown(path)} does not read back from its place as snapshot #{plan.selection.snapshot.pk} holds "
                f"it: {', '.join(problems[:3])}{' and more' if len(problems) > 3 else ''} differ"
            )
    except PanelError as exc:
        raise PanelError(f"{first_line(exc)}; {_put_back(plan, engine, had_current, backup)}") from exc
    if not had_current:
        return ""
    # Only now, with the restored PATH read back in its place, does the current one go, and
    # only as the backup holds it: a write after the backup read it would be in neither.
    changed = _changed_since_backup(plan, engine, backup)
    if changed:
        return f"The one it replaced is left as {shown(aside)} in the pod: {changed}; look at it, then remove it."
    _log(operation, f"{shown(path)} reads back in its place; removing the one moved aside")
    try:
        code, output = engine.container_exec(container=container, command=["rm", "-rf", "--", aside])
        if code != 0 or engine.path_exists(container=container, path=aside):
            raise PanelError(first_line(output, default=f"rm answered {code}"))
    except PanelError as exc:
        return f"The one it replaced is also left as {shown(aside)} in the pod ({first_line(exc)}): remove it."
    return ""


def _changed_since_backup(plan: RestorePlan, engine: DockerEngine, backup: int) -> str:
    """What of the copy moved aside differs from the backup's (each regular file's path, size
    and sha256, read from the container now), or "" when nothing does."""
    path = plan.selection.path
    try:
        kept = {
            (row.path[len(path) :], row.size, row.sha256)
            for row in snapshot_select(pod_id=plan.pod.pod_id, number=backup, path=path).rows
        }
    except NotFound:
        kept = set()
    except PanelError as exc:  # PATH is replaced already: the one moved aside stays
        return f"it could not be compared with backup snapshot #{backup} ({first_line(exc)})"
    found = TarFileList()
    try:
        for chunk in engine.archive_read(container=plan.pod.container_name, path=plan.aside):
            found.feed(chunk)
    except PanelError as exc:
        return f"it could not be read back to compare it with backup snapshot #{backup} ({first_line(exc)})"
    name = posixpath.basename(plan.aside)
    now = {("/" + entry[0][len(name) + 1 :] if entry[0] != name else "", entry[1], entry[2]) for entry in found.files}
    differing = sorted({entry[0] for entry in now ^ kept})
    if not differing:
        return ""
    more = " and more" if len(differing) > 1 else ""
    changed = f"{shown(path + differing[0])}{more} changed"
    return f"{changed} since backup snapshot #{backup} read it, so it is in no snapshot"


def _put_back(plan: RestorePlan, engine: DockerEngine, had_current: bool, backup: int) -> str:
    """After a failure past the move aside: the restored copy out of PATH's place (back to the
    target, which `_undo` then removes), the original renamed back. Says what is where."""
    container, path, aside = plan.pod.container_name, plan.selection.path, plan.aside
    try:
        if engine.path_stat(container=container, path=path) is not None:
            _move(engine, container, path, plan.target)
        if had_current:
            _move(engine, container, aside, path)
    except PanelError as exc:
        return (
            f"the original could not be put back ({first_line(exc)}): it is left as {shown(aside)} in pod "
            f"{plan.pod.pod_id}, and kept in backup snapshot #{backup}"
        )
    put = f"the original {shown(path)} was put back" if had_current else f"{shown(path)} is missing as it was"
    return f"{put}; {_undo(plan, engine)}"

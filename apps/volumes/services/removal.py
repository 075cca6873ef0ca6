"""Removing a folder that a layout rule says must not exist (issue #17, item 9): the fix for a
`folder_absent` finding. Previewed (every file and its bytes, measured for the preview),
then removed in one recursive call, committed once where the panel mounts a Modal volume
(from outside, Modal's `remove_file` persists at once), audited, and followed by a fresh
inspection so the finding, the leak and the volume's size move at once.

Only a folder that an enabled `folder_absent` rule of the volume names may go: never the
root, never a path that leaves the volume (`clean_path`, and the local backend resolves
parents inside the root), never a file or a symlink, and never while anything in it or above it is on hold: a
volume folder (`TargetType.VOLUME_FOLDER`, `<volume>:<path>`), a session, a mix-job session
(each app says where its held things live, `apps.audit.holds.HOLD_PLACES`). Holds are read
again under `holds_frozen` right before the removal.

    preview = volume_folder_preview(volume=volume, path="results")
    request(Kind.VOLUME_REMOVE_FOLDER, folder_target("brain-go-brr-results", "results"), actor=user)
"""

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from django.db import transaction

from apps.audit.holds import Held, held_places, holds_frozen
from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, Progress, audit_record, operation_log, storage_sample_record
from apps.volumes.backends import VolumeBackend, clean_path, removal_target_check
from apps.volumes.models import LayoutRule, Volume
from apps.volumes.services.inspection import volume_inspect
from apps.volumes.services.registry import volume_backend
from controlpanel.errors import InvalidInput, NotFound, PanelError
from controlpanel.formatting import humanize_bytes, plural
from controlpanel.preview import Preview, PreviewItem

# Files listed one by one in a preview; the rest are one row with their count and bytes.
PREVIEW_FILES = 200
# Progress is written per this many files counted (and at most once a second by Progress).
COUNT_EVERY = 500
SEPARATOR = ":"


def folder_target(volume_name: str, path: str) -> str:
    """The operation's and the hold's target id: `<volume>:<path>`."""
    return f"{volume_name}{SEPARATOR}{clean_path(path)}"


def folder_target_parse(target_id: str) -> tuple[str, str]:
    """`<volume>:<path>` → (volume name, cleaned path); InvalidInput for anything else."""
    name, separator, path = str(target_id).partition(SEPARATOR)
    if not separator or not name:
        raise InvalidInput(f"{str(target_id)[:80]!r} names no volume folder: use <volume>:<path>")
    return name, clean_path(path)


def _rule_for(volume: Volume, relative: str) -> LayoutRule | None:
    rules = volume.rules.filter(kind=LayoutRule.Kind.FOLDER_ABSENT, enabled=True)
    return next((rule for rule in rules if rule.path.strip("/") == relative), None)


def folder_hold_places(target_id: str) -> list[tuple[str, str, str]]:
    """Where a held volume folder lives (`apps.audit.holds.HOLD_PLACES`)."""
    try:
        name, path = folder_target_parse(target_id)
    except InvalidInput:
        return []
    volume = Volume.objects.filter(name=name).first()
    return [(volume.url, path, f"{path}/")] if volume is not None else []


def _location(url: str, path: str) -> tuple[str, str] | None:
    """A path inside a volume, comparable with one inside another volume: a local folder by
    its real path (two URLs may reach one folder), a Modal path by volume and environment."""
    parsed = urlparse(url)
    if parsed.scheme == "local":
        return "local", os.path.realpath(os.path.join(unquote(parsed.netloc + parsed.path), path.strip("/")))
    if parsed.scheme == "modal":
        environment = parse_qs(parsed.query).get("environment", [""])[0]
        return f"modal://{parsed.netloc}?{environment}", posixpath.normpath("/" + path.strip("/"))
    return None


def _held_overlap(volume: Volume, relative: str) -> str | None:
    """Why removing this folder would touch something on hold (of any kind: a volume folder,
    a session, a mix-job session: the held thing, one above it or one inside it), or None."""
    here = _location(volume.url, relative)
    what = f"folder {relative}/ on volume {volume.name}"
    for hold, url, path, label in held_places():
        there = _location(url, path)
        if here is None or there is None or here[0] != there[0]:
            continue
        mine, theirs = here[1].rstrip("/"), there[1].rstrip("/")
        if mine == theirs:
            verb = "is" if label == f"{relative}/" else f"is {label}, which is"
        elif mine.startswith(f"{theirs}/"):
            verb = f"is inside {label}, which is"
        elif theirs.startswith(f"{mine}/"):
            verb = f"contains {label}, which is"
        else:
            continue
        until = f" until {hold.until:%Y-%m-%d %H:%M} UTC" if hold.until else ""
        return f"{what} {verb} on hold by {hold.held_by}{until} ({hold.reason}); release the hold first"
    return None


def removable_folder(*, volume: Volume, path: str) -> tuple[str, LayoutRule]:
    """The cleaned path and the rule that forbids it, or a PanelError saying why it may not
    go. Reads the database only: the volume itself is asked by the preview and the run."""
    relative = clean_path(path)
    if not relative:
        raise InvalidInput(f"refusing to remove the root of volume {volume.name}: name a folder inside it")
    rule = _rule_for(volume, relative)
    if rule is None:
        raise InvalidInput(
            f"{relative}/ on volume {volume.name}: no enabled layout rule says it must not exist, "
            "and only such folders can be removed here"
        )
    held = _held_overlap(volume, relative)
    if held is not None:
        raise Held(held)
    return relative, rule


@dataclass
class FolderContents:
    files: int = 0
    bytes: int = 0
    unreadable: list[str] = field(default_factory=list)
    listed: list[PreviewItem] = field(default_factory=list)


def _folder_entry_check(backend: VolumeBackend, volume: Volume, relative: str) -> None:
    entry = backend.stat(relative)
    if entry is None:
        raise NotFound(f"{relative}/ is not on volume {volume.name} (removed already?)")
    if entry.is_symlink or not entry.is_dir:
        what = "a symlink" if entry.is_symlink else "a file"
        raise InvalidInput(f"{relative} on volume {volume.name} is {what}, not a folder; nothing was removed")


def _measure(
    backend: VolumeBackend, relative: str, *, why: str = "", progress: Progress | None = None
) -> FolderContents:
    """Every file below the folder, counted and summed now; the first PREVIEW_FILES listed."""
    contents = FolderContents()
    for entry in backend.iter_entries(relative):
        if entry.unreadable:
            contents.unreadable.append(f"{entry.path} ({entry.unreadable})")
            continue
        if entry.is_dir and not entry.is_symlink:
            continue
        contents.files += 1
        contents.bytes += entry.size
        if len(contents.listed) < PREVIEW_FILES:
            contents.listed.append(PreviewItem(name=entry.path, bytes=entry.size, why=why))
        if progress is not None and contents.files % COUNT_EVERY == 0:
            progress.advance(COUNT_EVERY)
    return contents


def volume_folder_preview(*, volume: Volume, path: str) -> Preview:
    """Every file that would go, with its bytes, measured now. Writes nothing."""
    relative, rule = removable_folder(volume=volume, path=path)
    backend = volume_backend(volume=volume)
    backend.check()
    _folder_entry_check(backend, volume, relative)
    why = rule.description or f"a layout rule says {relative}/ must not exist"
    contents = _measure(backend, relative, why=why)
    delete = list(contents.listed)
    rest = contents.files - len(delete)
    if rest:
        rest_bytes = contents.bytes - sum(item.bytes or 0 for item in delete)
        delete.append(PreviewItem(name=f"{plural(rest, 'more file')} in {relative}/", bytes=rest_bytes, why=why))
    if not contents.files:
        # An empty folder is still a finding: removing it is the work.
        delete.append(PreviewItem(name=f"{relative}/", bytes=0, why=f"{why} (the folder is empty)"))
    summary = (
        f"Remove {relative}/ and everything in it from volume {volume.name}: "
        f"{plural(contents.files, 'file')}, {humanize_bytes(contents.bytes)}, measured now."
    )
    if backend.commit_is_meaningful:
        summary += " The volume is mounted here: the removal is committed once, at the end."
    if contents.unreadable:
        summary += (
            f" {plural(len(contents.unreadable), 'folder')} inside could not be read "
            f"({', '.join(contents.unreadable[:3])}); the removal may fail there and says so."
        )
    summary += " The volume is inspected again afterwards."
    return Preview(title=f"Remove {relative}/ from volume {volume.name}", summary=summary, delete=delete)


def _record_sample_without(volume: Volume, removed: int) -> None:
    """When the fresh inspection failed: the last size less what went, so totals still move."""
    last = StorageSample.objects.filter(domain="volumes", subject=volume.name).order_by("-sampled_at").first()
    if last is not None and removed:
        storage_sample_record(domain="volumes", subject=volume.name, total_bytes=max(0, last.total_bytes - removed))


def volume_folder_remove(
    *, volume: Volume, path: str, actor: Actor, operation: Operation | None = None
) -> dict[str, Any]:
    """Measure, remove (one recursive call), commit once where that means something, audit,
    then inspect the volume again. A failure to remove is audited as failed and raised."""
    relative, _rule = removable_folder(volume=volume, path=path)
    target = folder_target(volume.name, relative)
    backend = volume_backend(volume=volume)
    progress = Progress(operation, unit="files")
    log = (lambda line: operation_log(operation, line)) if operation is not None else (lambda line: None)
    log(f"measuring {relative}/ on {volume.url}")
    backend.check()
    _folder_entry_check(backend, volume, relative)
    contents = _measure(backend, relative, progress=progress)
    # The total is what was just measured: the bar counts towards it and never passes it.
    progress.done = 0
    progress.set_total(contents.files)
    # Settings read now, not when the volume was opened: panel data moved here meanwhile stays.
    removal_target_check(backend=backend, path=relative)
    log(f"removing {relative}/ ({plural(contents.files, 'file')}, {humanize_bytes(contents.bytes)})")
    commits = 0
    try:
        # Holds of any kind are read again now and none is set until the folder is gone: one
        # set since the run was asked for keeps the folder (and is said to).
        with holds_frozen(what=f"{relative}/ on volume {volume.name}"):
            held = _held_overlap(volume, relative)
            if held is not None:
                raise Held(held)
            backend.remove(relative, recursive=True)
        if backend.commit():
            commits = 1
            log("committed the removal to the volume")
    except PanelError as exc:
        audit_record(
            actor=actor,
            action=AuditAction.VOLUME_REMOVE_FOLDER,
            target_type=TargetType.VOLUME_FOLDER,
            target_id=target,
            outcome=AuditEvent.Outcome.FAILED,
            message=f"removing {relative}/ from {volume.name} failed: {exc}",
            details={"on_hold": [str(exc)]} if isinstance(exc, Held) else {},
            operation=operation,
        )
        raise
    progress.done = contents.files
    progress.flush()
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.VOLUME_REMOVE_FOLDER,
            target_type=TargetType.VOLUME_FOLDER,
            target_id=target,
            bytes_reclaimed=contents.bytes,
            message=f"removed {relative}/ from {volume.name}: {plural(contents.files, 'file')}, "
            f"{humanize_bytes(contents.bytes)}" + (", committed once" if commits else ""),
            details={"files": contents.files, "bytes": contents.bytes, "commits": commits},
            operation=operation,
        )
    log("inspecting the volume again")
    inspection_id, reinspect_error = None, ""
    try:
        inspection_id = volume_inspect(volume=volume, actor=actor).pk
    except PanelError as exc:
        reinspect_error = str(exc)
        log(f"the fresh inspection failed: {exc}")
        _record_sample_without(volume, contents.bytes)
    return {
        "volume": volume.name,
        "path": relative,
        "files": contents.files,
        "bytes": contents.bytes,
        "commits": commits,
        "inspection_id": inspection_id,
        "reinspect_error": reinspect_error,
    }


def describe_removal(result: dict) -> str:
    sentence = (
        f"Removed {result['path']}/ from {result['volume']}: "
        f"{plural(result['files'], 'file')}, {humanize_bytes(result['bytes'])}"
    )
    if result.get("reinspect_error"):
        return f"{sentence}; inspecting the volume again failed ({result['reinspect_error']})."
    return f"{sentence}; the volume was inspected again."

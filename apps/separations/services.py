"""Separation sessions on their volume: scan, mirror (sync) and cleanup batches.

The volume (a Modal Volume or a local folder, `settings.SESSIONS_VOLUME_URL`) holds

    sessions/<session_id>/input.wav
    sessions/<session_id>/output/{drums,bass,vocals,other}.flac

A cleanup batch applies one policy: *download* and *exit* look at the N oldest sessions
and delete those older than their age limit; *manual* deletes the named sessions now.
Each batch is an exclusive Operation on the volume (a second batch is refused while one
runs), deletes folder by folder, verifies, commits **once** (only where a commit means
something), then marks the mirror rows and writes one audit event with the commit count,
in the same transaction. Nothing outside `sessions/` is ever removed, and only folders
whose names are valid ids.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.services import (
    Actor,
    Progress,
    actor_parts,
    audit_record,
    operation_create,
    operation_enqueue,
    operation_log,
    operation_run_inline,
    storage_sample_record,
)
from apps.separations.models import STEMS, SeparationSession, session_transition
from apps.volumes.backends import VolumeBackend, backend_for_url
from controlpanel.errors import InvalidInput, NotFound, PanelError, Unreachable
from controlpanel.paths import validate_id

logger = logging.getLogger(__name__)

SESSIONS_DIR = "sessions"
TARGET_TYPE = "session-volume"
CLEANUP_TASK = "apps.separations.tasks.sessions_cleanup_task"
SYNC_TASK = "apps.separations.tasks.sessions_sync_task"
STEM_FILES = {f"output/{stem}.flac": stem for stem in STEMS}
POLICIES = ("download", "exit", "manual")


def sessions_backend() -> VolumeBackend:
    return backend_for_url(settings.SESSIONS_VOLUME_URL)


# -- reading the volume ----------------------------------------------------------------------


@dataclass
class SessionScan:
    """One `sessions/<id>/` folder as found on the volume."""

    session_id: str
    total_bytes: int = 0
    file_count: int = 0
    input_present: bool = False
    stems: set[str] = field(default_factory=set)
    created_at: datetime | None = None
    modified_at: datetime | None = None
    symlinks: int = 0
    is_symlink: bool = False  # the session folder itself is a link: removing it removes the link
    is_file: bool = False  # a plain file where a folder should be: not a session, never touched
    hard_links: int = 0  # files with another name (maybe outside the volume): the session is left alone

    def touch(self, mtime: datetime | None) -> None:
        if mtime is None:
            return
        if self.created_at is None or mtime < self.created_at:
            self.created_at = mtime
        if self.modified_at is None or mtime > self.modified_at:
            self.modified_at = mtime

    @property
    def path(self) -> str:
        return f"{SESSIONS_DIR}/{self.session_id}"

    @property
    def status(self) -> str:
        if self.file_count == 0:
            return SeparationSession.Status.EMPTY
        if self.input_present and len(self.stems) == len(STEMS):
            return SeparationSession.Status.COMPLETE
        return SeparationSession.Status.PARTIAL

    def add(self, relative: str, entry) -> None:
        """Count one entry found below the session folder (`relative` to it)."""
        self.touch(entry.mtime)
        if entry.is_symlink:
            self.symlinks += 1  # never followed, never counted as bytes; removed with the folder
            return
        if entry.is_dir:
            return
        self.file_count += 1
        self.total_bytes += entry.size
        if entry.links > 1:
            self.hard_links += 1
        if relative == "input.wav":
            self.input_present = True
        elif relative in STEM_FILES:
            self.stems.add(STEM_FILES[relative])


@dataclass
class VolumeScan:
    volume: str
    total_bytes: int = 0
    total_files: int = 0
    sessions: dict[str, SessionScan] = field(default_factory=dict)
    # Names under sessions/ that are not valid ids (or are files): reported, never touched.
    ignored: list[str] = field(default_factory=list)


def volume_check(backend: VolumeBackend) -> None:
    """The volume itself missing is an outage of the sessions domain, not an unknown session."""
    try:
        backend.check()
    except NotFound as exc:
        raise Unreachable(f"sessions volume unavailable: {exc}") from None


def volume_scan(*, backend: VolumeBackend, progress: Progress | None = None) -> VolumeScan:
    """One streamed pass over the whole volume: its size, and a summary per session."""
    volume_check(backend)
    scan = VolumeScan(volume=backend.name)
    ignored: set[str] = set()
    for entry in backend.iter_entries("", recursive=True):
        if progress is not None:
            progress.advance(1)  # throttled: writes at most once an interval
        if not entry.is_dir and not entry.is_symlink:
            scan.total_bytes += entry.size
            scan.total_files += 1
        parts = entry.path.split("/")
        if parts[0] != SESSIONS_DIR or len(parts) < 2:
            continue
        name = parts[1]
        if name in ignored:
            continue
        try:
            validate_id(name, kind="session id")
        except InvalidInput:
            ignored.add(name)
            continue
        session = scan.sessions.setdefault(name, SessionScan(session_id=name))
        if len(parts) == 2:
            session.touch(entry.mtime)
            session.is_symlink = entry.is_symlink
            session.is_file = not entry.is_dir and not entry.is_symlink
            continue
        session.add("/".join(parts[2:]), entry)
    for name, session in list(scan.sessions.items()):
        if session.is_file:
            ignored.add(name)
            del scan.sessions[name]
    scan.ignored = sorted(ignored)
    return scan


def session_scan(*, backend: VolumeBackend, session_id: str) -> SessionScan:
    """One session, read directly (a manual cleanup must not list the whole volume)."""
    validate_id(session_id, kind="session id")
    path = f"{SESSIONS_DIR}/{session_id}"
    volume_check(backend)
    folder = backend.stat(path)
    if folder is None or not (folder.is_dir or folder.is_symlink):
        raise NotFound(f"session {session_id!r} is not on volume {backend.name}")
    session = SessionScan(session_id=session_id, is_symlink=folder.is_symlink)
    session.touch(folder.mtime)
    if not folder.is_symlink:
        for entry in backend.iter_entries(path, recursive=True):
            session.add(entry.path[len(path) + 1 :], entry)
    return session


# -- policies and plans ----------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int | None  # how many of the oldest sessions are looked at
    min_age: timedelta | None  # only sessions older than this (strictly) are deleted

    @property
    def description(self) -> str:
        if self.name == "manual":
            return "manual: the named sessions, now"
        hours = self.min_age.total_seconds() / 3600
        return f"{self.name}: the {self.limit} oldest sessions, those older than {hours:g} h"


def policy_get(name: str) -> Policy:
    if name == "download":
        return Policy(
            "download",
            settings.SESSIONS_POLICY_DOWNLOAD_LIMIT,
            timedelta(minutes=settings.SESSIONS_POLICY_DOWNLOAD_AGE_MINUTES),
        )
    if name == "exit":
        return Policy(
            "exit", settings.SESSIONS_POLICY_EXIT_LIMIT, timedelta(minutes=settings.SESSIONS_POLICY_EXIT_AGE_MINUTES)
        )
    if name == "manual":
        return Policy("manual", None, None)
    raise InvalidInput(f"policy {str(name)[:40]!r} is not known: use download, exit or manual")


def _oldest_first(session: SessionScan):
    # A session without any mtime cannot be proven old: it sorts last and is never due.
    missing = session.modified_at is None
    return (missing, session.modified_at or datetime.min, session.session_id)


@dataclass
class CleanupPlan:
    policy: Policy
    volume: str
    looked_at: list[SessionScan]
    to_delete: list[SessionScan]
    ignored: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(s.total_bytes for s in self.to_delete)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.name,
            "volume": self.volume,
            "looked_at": len(self.looked_at),
            "would_delete": [s.session_id for s in self.to_delete],
            "bytes": self.total_bytes,
        }


def clean_session_ids(session_ids: Sequence[str]) -> list[str]:
    ids = [validate_id(value, kind="session id") for value in session_ids]
    return list(dict.fromkeys(ids))


def cleanup_plan(
    *, backend: VolumeBackend, policy: Policy, session_ids: Sequence[str] = (), now: datetime | None = None
) -> CleanupPlan:
    """What a batch would delete, read from the volume itself (the mirror may be stale)."""
    now = now or timezone.now()
    if policy.name == "manual":
        ids = clean_session_ids(session_ids)
        if not ids:
            raise InvalidInput("a manual cleanup needs at least one session id")
        sessions = [session_scan(backend=backend, session_id=sid) for sid in ids]
        return CleanupPlan(
            policy=policy,
            volume=backend.name,
            looked_at=sessions,
            to_delete=[s for s in sessions if not s.hard_links],
            ignored=_hard_linked(sessions),
        )
    if session_ids:
        raise InvalidInput(f"the {policy.name} policy chooses its own sessions; name sessions only with manual")
    scan = volume_scan(backend=backend)
    looked_at = sorted(scan.sessions.values(), key=_oldest_first)[: policy.limit]
    cutoff = now - policy.min_age
    # Strictly older: a session exactly at the limit stays for this round.
    due = [s for s in looked_at if s.modified_at is not None and s.modified_at < cutoff]
    return CleanupPlan(
        policy=policy,
        volume=scan.volume,
        looked_at=looked_at,
        to_delete=[s for s in due if not s.hard_links],
        ignored=scan.ignored + _hard_linked(due),
    )


def _hard_linked(sessions: list[SessionScan]) -> list[str]:
    """Sessions holding hard-linked files are reported and left alone: removing them would
    free nothing for those files and change a file that may live outside the volume."""
    return [f"{s.session_id} ({s.hard_links} hard-linked files, left alone)" for s in sessions if s.hard_links]


# -- the batch -------------------------------------------------------------------------------


def _mirror_deleted(*, volume: str, sessions: list[SessionScan], by: str, reason: str) -> None:
    rows = {
        row.session_id: row
        for row in SeparationSession.objects.filter(volume=volume, session_id__in=[s.session_id for s in sessions])
    }
    now = timezone.now()
    to_create, to_update = [], []
    for scan in sessions:
        row = rows.get(scan.session_id)
        if row is None:
            row = SeparationSession(volume=volume, session_id=scan.session_id, first_seen_at=now)
            to_create.append(row)
        else:
            to_update.append(row)
        _fill(row, scan, now)
        if row.status != SeparationSession.Status.DELETED:
            session_transition(row, SeparationSession.Status.DELETED, by=by, reason=reason)
    SeparationSession.objects.bulk_create(to_create, batch_size=500)
    SeparationSession.objects.bulk_update(to_update, MIRROR_FIELDS + DELETION_FIELDS, batch_size=500)


MIRROR_FIELDS = [
    "input_present",
    "stems_present",
    "total_bytes",
    "file_count",
    "created_at",
    "modified_at",
    "last_seen_at",
    "status",
]
DELETION_FIELDS = ["deleted_at", "deleted_by", "deleted_reason"]


def _fill(row: SeparationSession, scan: SessionScan, now: datetime) -> None:
    row.input_present = scan.input_present
    row.stems_present = len(scan.stems)
    row.total_bytes = scan.total_bytes
    row.file_count = scan.file_count
    row.created_at = scan.created_at
    row.modified_at = scan.modified_at
    row.last_seen_at = now


def sessions_cleanup(
    *,
    policy: str,
    actor: Actor,
    session_ids: Sequence[str] = (),
    operation: Operation | None = None,
    backend: VolumeBackend | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run one cleanup batch and return {"deleted", "bytes_reclaimed", "commits", ...}.

    Call it through `sessions_cleanup_now` / `sessions_cleanup_enqueue`, which hold the
    volume's exclusive Operation so two batches never race."""
    chosen = policy_get(policy)
    backend = backend or sessions_backend()
    plan = cleanup_plan(backend=backend, policy=chosen, session_ids=session_ids, now=now)
    _, actor_name = actor_parts(actor)
    if operation is not None:
        operation_log(
            operation,
            f"{chosen.description}; looked at {len(plan.looked_at)}, {len(plan.to_delete)} to delete "
            f"({plan.total_bytes} bytes) on {plan.volume}",
        )
    progress = Progress(operation, total=len(plan.to_delete), unit="sessions")
    removed: list[SessionScan] = []
    failure: PanelError | None = None
    for session in plan.to_delete:
        # Check: the path is built from a validated id, directly under sessions/ and nowhere else.
        path = f"{SESSIONS_DIR}/{validate_id(session.session_id, kind='session id')}"
        try:
            # Recursive removal unlinks symlinks inside the folder and never follows them; a
            # session folder that is itself a link loses the link only.
            backend.remove(path, recursive=not session.is_symlink)
        except NotFound:
            # Gone between the plan and now (someone else removed it): not ours to count.
            logger.info("session %s was already gone from %s", session.session_id, plan.volume)
            continue
        except PanelError as exc:
            failure = exc
            break
        removed.append(session)
        progress.advance(1)
        if operation is not None:
            operation_log(operation, f"removed {path} ({session.total_bytes} bytes)")

    commits = 0
    if removed:
        try:
            # One commit for the whole batch, and only where it means something.
            commits = 1 if backend.commit() else 0
        except PanelError as exc:
            failure = failure or PanelError(f"removed {len(removed)} sessions but the commit failed: {exc}")

    # Verify: look again; what is still there was not deleted, whatever the calls said.
    if removed and failure is None:
        try:
            still_there = {e.name for e in backend.iter_entries(SESSIONS_DIR, recursive=False)}
        except PanelError as exc:
            failure = PanelError(f"removed {len(removed)} sessions but could not verify: {exc}")
        else:
            missed = [s.session_id for s in removed if s.session_id in still_there]
            if missed:
                failure = PanelError(f"still on {plan.volume} after removal: {', '.join(missed[:5])}")
                removed = [s for s in removed if s.session_id not in still_there]

    reclaimed = sum(s.total_bytes for s in removed)
    result = {
        "deleted": [s.session_id for s in removed],
        "bytes_reclaimed": reclaimed,
        "commits": commits,
        "policy": chosen.name,
        "volume": plan.volume,
        "looked_at": len(plan.looked_at),
    }
    reason = f"cleanup policy {chosen.name}" + (f" by {actor_name}" if actor_name else "")
    with transaction.atomic():
        _mirror_deleted(volume=plan.volume, sessions=removed, by=actor_name, reason=reason)
        audit_record(
            actor=actor,
            action="sessions.cleanup",
            target_type=TARGET_TYPE,
            target_id=plan.volume,
            outcome=AuditEvent.Outcome.FAILED if failure else AuditEvent.Outcome.SUCCEEDED,
            bytes_reclaimed=reclaimed,
            message=(
                f"{chosen.name}: deleted {len(removed)} of {len(plan.to_delete)} due "
                f"({len(plan.looked_at)} looked at), {commits} commit{'s' if commits != 1 else ''}"
                + (f"; {failure}" if failure else "")
            ),
            details={**result, "due": [s.session_id for s in plan.to_delete], "ignored": plan.ignored[:50]},
            operation=operation,
        )
    if failure is not None:
        raise failure
    return result


def _start(*, kind: str, volume: str, actor: Actor, task: str, params: dict) -> Operation:
    return operation_create(kind=kind, target_type=TARGET_TYPE, target_id=volume, actor=actor, task=task, params=params)


def _cleanup_params(policy: str, session_ids: Sequence[str]) -> dict[str, Any]:
    chosen = policy_get(policy)
    ids = clean_session_ids(session_ids)
    if chosen.name == "manual" and not ids:
        raise InvalidInput("a manual cleanup needs at least one session id")
    if chosen.name != "manual" and ids:
        raise InvalidInput(f"the {chosen.name} policy chooses its own sessions; name sessions only with manual")
    return {"policy": chosen.name, "session_ids": ids}


def _actor_of(operation: Operation) -> Actor:
    return operation.actor_user or operation.actor_name


def sessions_cleanup_run(*, operation: Operation) -> dict[str, Any]:
    """The work of a cleanup operation (task, CLI and API all land here)."""
    return sessions_cleanup(
        policy=operation.params["policy"],
        session_ids=operation.params.get("session_ids", []),
        actor=_actor_of(operation),
        operation=operation,
    )


def sessions_cleanup_now(*, policy: str, actor: Actor, session_ids: Sequence[str] = ()) -> dict[str, Any]:
    """Run a batch synchronously (API, CLI). Busy when another batch holds the volume."""
    params = _cleanup_params(policy, session_ids)
    operation = _start(
        kind="sessions.cleanup", volume=sessions_backend().name, actor=actor, task=CLEANUP_TASK, params=params
    )
    return operation_run_inline(operation=operation, work=lambda op: sessions_cleanup_run(operation=op)).result


def sessions_cleanup_enqueue(*, policy: str, actor: Actor, session_ids: Sequence[str] = ()) -> Operation:
    """Queue a batch for a worker (dashboard, admin). Busy when another batch holds the volume."""
    params = _cleanup_params(policy, session_ids)
    operation = _start(
        kind="sessions.cleanup", volume=sessions_backend().name, actor=actor, task=CLEANUP_TASK, params=params
    )
    operation_enqueue(operation=operation)
    return operation


# -- the mirror ------------------------------------------------------------------------------


def sessions_sync(*, actor: Actor, operation: Operation | None = None, backend: VolumeBackend | None = None) -> dict:
    """Mirror the volume into SeparationSession rows and sample its size (one streamed scan)."""
    backend = backend or sessions_backend()
    progress = Progress(operation, unit="entries")
    scan = volume_scan(backend=backend, progress=progress)
    progress.flush()
    now = timezone.now()
    _, actor_name = actor_parts(actor)
    # Live rows, plus deleted rows only for ids that are back: deleted history grows forever
    # and must not be loaded on every sync.
    mirror = SeparationSession.objects.filter(volume=scan.volume)
    existing = {
        row.session_id: row for row in mirror.filter(status__in=SeparationSession.LIVE).iterator(chunk_size=2000)
    }
    returned = [sid for sid in scan.sessions if sid not in existing]
    for start in range(0, len(returned), 500):
        for row in mirror.filter(session_id__in=returned[start : start + 500]):
            existing[row.session_id] = row
    to_create, to_update, gone = [], [], []
    for session_id, scan_row in scan.sessions.items():
        row = existing.pop(session_id, None)
        if row is None:
            row = SeparationSession(volume=scan.volume, session_id=session_id, first_seen_at=now)
            to_create.append(row)
        else:
            to_update.append(row)
        _fill(row, scan_row, now)
        if row.status != scan_row.status:
            session_transition(row, scan_row.status)
    for row in existing.values():
        if row.is_live:
            session_transition(
                row, SeparationSession.Status.DELETED, by=actor_name, reason="gone from the volume (not by the panel)"
            )
            gone.append(row)
    with transaction.atomic():
        SeparationSession.objects.bulk_create(to_create, batch_size=500)
        SeparationSession.objects.bulk_update(to_update + gone, MIRROR_FIELDS + DELETION_FIELDS, batch_size=500)
        storage_sample_record(
            domain="sessions", subject=scan.volume, total_bytes=scan.total_bytes, total_files=scan.total_files
        )
    result = {
        "volume": scan.volume,
        "sessions": len(scan.sessions),
        "new": len(to_create),
        "gone": len(gone),
        "total_bytes": scan.total_bytes,
        "total_files": scan.total_files,
        "ignored": scan.ignored[:50],
    }
    if operation is not None:
        operation_log(
            operation,
            f"{result['sessions']} sessions ({result['new']} new, {result['gone']} gone), "
            f"{scan.total_bytes} bytes in {scan.total_files} files on {scan.volume}",
        )
    return result


def sessions_sync_run(*, operation: Operation) -> dict[str, Any]:
    return sessions_sync(actor=_actor_of(operation), operation=operation)


def sessions_sync_now(*, actor: Actor) -> dict[str, Any]:
    operation = _start(kind="sessions.sync", volume=sessions_backend().name, actor=actor, task=SYNC_TASK, params={})
    return operation_run_inline(operation=operation, work=lambda op: sessions_sync_run(operation=op)).result


def sessions_sync_enqueue(*, actor: Actor) -> Operation:
    operation = _start(kind="sessions.sync", volume=sessions_backend().name, actor=actor, task=SYNC_TASK, params={})
    operation_enqueue(operation=operation)
    return operation

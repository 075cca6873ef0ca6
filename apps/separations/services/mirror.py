"""The panel's mirror of the volume: `SeparationSession` rows and the volume's size samples.

A sync streams the volume once and writes the rows in bulk; a cleanup batch marks the rows
of what it removed. Deleted rows stay (who, when, why) so the history survives the bytes.
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.notify import notify
from apps.audit.services import Actor, Progress, actor_parts, operation_log, storage_sample_record
from apps.separations.models import SeparationSession
from apps.separations.services.scan import SessionScan, sessions_backend, volume_scan
from apps.volumes.backends import VolumeBackend
from controlpanel.formatting import humanize_bytes, plural

SYNC_PROGRESS_UNIT = "entries"
SAMPLE_DOMAIN = "sessions"

MIRROR_FIELDS = [
    "input_present",
    "stems_present",
    "total_bytes",
    "file_count",
    "created_at",
    "modified_at",
    "last_seen_at",
    "status",
    "problems",
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
    row.problems = scan.problems


def mirror_deleted(*, volume: str, sessions: list[SessionScan], by: str, reason: str) -> None:
    """Mark what a batch removed as deleted (rows created for sessions never synced)."""
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
            row.transition(SeparationSession.Status.DELETED, by=by, reason=reason)
    SeparationSession.objects.bulk_create(to_create, batch_size=500)
    SeparationSession.objects.bulk_update(to_update, MIRROR_FIELDS + DELETION_FIELDS, batch_size=500)


def sessions_sync(*, actor: Actor, operation: Operation | None = None, backend: VolumeBackend | None = None) -> dict:
    """Mirror the volume into SeparationSession rows and sample its size (one streamed scan)."""
    backend = backend or sessions_backend()
    progress = Progress(operation, unit=SYNC_PROGRESS_UNIT)
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
            row.transition(scan_row.status)
    for row in existing.values():
        if row.is_live:
            row.transition(
                SeparationSession.Status.DELETED, by=actor_name, reason="gone from the volume (not by the panel)"
            )
            gone.append(row)
    with transaction.atomic():
        SeparationSession.objects.bulk_create(to_create, batch_size=500)
        SeparationSession.objects.bulk_update(to_update + gone, MIRROR_FIELDS + DELETION_FIELDS, batch_size=500)
        storage_sample_record(
            domain=SAMPLE_DOMAIN, subject=scan.volume, total_bytes=scan.total_bytes, total_files=scan.total_files
        )
    over_budget_notify(volume=scan.volume, total_bytes=scan.total_bytes, files=scan.total_files)
    result = {
        "volume": scan.volume,
        "sessions": len(scan.sessions),
        "new": len(to_create),
        "gone": len(gone),
        "total_bytes": scan.total_bytes,
        "total_files": scan.total_files,
        "ignored": scan.ignored[:50],
        # Unreadable folders and special files: the sessions stay, their totals a lower bound.
        "problems": scan.problems,
        "problem_count": scan.problem_count,
    }
    if operation is not None:
        operation_log(
            operation,
            f"{result['sessions']} sessions ({result['new']} new, {result['gone']} gone), "
            f"{humanize_bytes(scan.total_bytes)} in {scan.total_files} files on {scan.volume}",
        )
        for line in scan.problems:
            operation_log(operation, f"problem: {line}")
    return result


def over_budget_notify(*, volume: str, total_bytes: int, files: int) -> None:
    """Tell people when a sync finds the volume over SESSIONS_VOLUME_MAX_BYTES: once for as
    long as NOTIFY_REPEAT_MINUTES (notify's own rule), whatever the number of syncs."""
    budget = settings.SESSIONS_VOLUME_MAX_BYTES
    if budget <= 0 or total_bytes <= budget:
        return
    notify(
        event="sessions.over-budget",
        subject=volume,
        title=f"Sessions volume {volume} over budget: {humanize_bytes(total_bytes)}",
        body=f"The sessions volume {volume} holds {humanize_bytes(total_bytes)} in {plural(files, 'file')}, "
        f"over its budget of {humanize_bytes(budget)} (SESSIONS_VOLUME_MAX_BYTES). The sessions page previews "
        "a cleanup of the oldest sessions.",
    )


def sync_sentence(result: dict[str, Any]) -> str:
    """`Mirrored 12 sessions on music-split-jobs-data (2 new, 1 gone); 1.2 GiB in 60 files.`"""
    return (
        f"Mirrored {plural(result.get('sessions', 0), 'session')} on {result.get('volume', '?')} "
        f"({result.get('new', 0)} new, {result.get('gone', 0)} gone); "
        f"{humanize_bytes(result.get('total_bytes'))} in {plural(result.get('total_files', 0), 'file')}."
        + (
            f" {plural(result['problem_count'], 'problem')} (unreadable folders, special files): "
            + "; ".join(result.get("problems", []))[:300]
            if result.get("problem_count")
            else ""
        )
    )

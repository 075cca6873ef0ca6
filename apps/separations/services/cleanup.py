"""One cleanup batch: plan, delete folder by folder, commit once, verify, mirror and audit.

Each batch is an exclusive Operation on the volume (a second batch is refused while one
runs, see `apps/separations/operations.py`), deletes folder by folder, verifies, commits
**once** (only where a commit means something), then marks the mirror rows and writes one
audit event with the commit count, in the same transaction. Nothing outside `sessions/` is
ever removed, and only folders whose names are valid ids.

A session that cannot be read (found by the plan) or removed (a permission error on the way)
is skipped with its reason; the batch goes on with the others and says what it skipped.
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import transaction

from apps.audit.holds import hold_guard
from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, Progress, actor_parts, audit_record, operation_log, storage_sample_record
from apps.separations.services.mirror import SAMPLE_DOMAIN, mirror_deleted
from apps.separations.services.plan import cleanup_plan, policy_get
from apps.separations.services.scan import SESSIONS_DIR, SessionScan, sessions_backend
from apps.volumes.backends import Unreadable, VolumeBackend
from controlpanel.errors import NotFound, PanelError
from controlpanel.formatting import humanize_bytes, plural
from controlpanel.paths import validate_id

logger = logging.getLogger(__name__)

CLEANUP_PROGRESS_UNIT = "sessions"


def _remove_unheld(*, backend: VolumeBackend, session: SessionScan, path: str, on_hold: list[str]) -> bool:
    """Remove one session folder unless it is on hold now (read under the lock a hold's write
    takes, and kept until the folder is gone); False when a hold kept it."""
    with hold_guard((TargetType.SEPARATION_SESSION, session.session_id)) as hold:
        if hold is not None:
            on_hold.append(session.session_id)
            return False
        # Recursive removal unlinks symlinks inside the folder and never follows them; a
        # session folder that is itself a link loses the link only.
        backend.remove(path, recursive=not session.is_symlink)
        return True


def _remove(
    *,
    backend: VolumeBackend,
    sessions: list[SessionScan],
    volume: str,
    operation: Operation | None,
    skipped: list[str],
    on_hold: list[str],
) -> tuple[list[SessionScan], PanelError | None]:
    """Remove each session folder; stop at the first refusal, skip (into `skipped`, with the
    reason) one that cannot be removed, keep (into `on_hold`) one held since the plan. What
    was removed, and why it stopped."""
    progress = Progress(operation, total=len(sessions), unit=CLEANUP_PROGRESS_UNIT)
    removed: list[SessionScan] = []
    for session in sessions:
        # Check: the path is built from a validated id, directly under sessions/ and nowhere else.
        path = f"{SESSIONS_DIR}/{validate_id(session.session_id, kind='session id')}"
        try:
            if not _remove_unheld(backend=backend, session=session, path=path, on_hold=on_hold):
                progress.advance(1)
                if operation is not None:
                    operation_log(operation, f"kept {session.session_id}: on hold")
                continue
        except NotFound:
            # Gone between the plan and now (someone else removed it): not ours to count.
            logger.info("session %s was already gone from %s", session.session_id, volume)
            continue
        except Unreadable as exc:
            # This folder only (permissions): the other sessions are still due.
            skipped.append(f"{session.session_id}: {exc}")
            if operation is not None:
                operation_log(operation, f"skipped {path}: {exc}")
            continue
        except PanelError as exc:
            return removed, exc
        removed.append(session)
        progress.advance(1)
        progress.flush()  # a batch is a handful of sessions: "3 of 4" is never left behind
        if operation is not None:
            operation_log(operation, f"removed {path} ({humanize_bytes(session.total_bytes)})")
    return removed, None


def _commit_and_verify(
    *, backend: VolumeBackend, removed: list[SessionScan], volume: str, failure: PanelError | None
) -> tuple[list[SessionScan], int, PanelError | None]:
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
                failure = PanelError(f"still on {volume} after removal: {', '.join(missed[:5])}")
                removed = [s for s in removed if s.session_id not in still_there]
    return removed, commits, failure


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

    Ask for it with `request`/`run_now(Kind.SESSIONS_CLEANUP, ...)`, which hold the volume's
    exclusive Operation so two batches never race."""
    chosen = policy_get(policy)
    backend = backend or sessions_backend()
    plan = cleanup_plan(backend=backend, policy=chosen, session_ids=session_ids, now=now)
    _, actor_name = actor_parts(actor)
    if operation is not None:
        operation_log(
            operation,
            f"{chosen.description}; looked at {len(plan.looked_at)}, {len(plan.to_delete)} to delete "
            f"({humanize_bytes(plan.total_bytes)}) on {plan.volume}",
        )
    skipped = list(plan.skipped)
    if operation is not None:
        for line in skipped:
            operation_log(operation, f"skipped {line}")
        for session in plan.held:
            operation_log(operation, f"kept {session.session_id}: on hold")
    on_hold = [s.session_id for s in plan.held]
    removed, failure = _remove(
        backend=backend,
        sessions=plan.to_delete,
        volume=plan.volume,
        operation=operation,
        skipped=skipped,
        on_hold=on_hold,
    )
    removed, commits, failure = _commit_and_verify(
        backend=backend, removed=removed, volume=plan.volume, failure=failure
    )

    reclaimed = sum(s.total_bytes for s in removed)
    result = {
        "deleted": [s.session_id for s in removed],
        "bytes_reclaimed": reclaimed,
        "commits": commits,
        "policy": chosen.name,
        "volume": plan.volume,
        "looked_at": len(plan.looked_at),
        "skipped": skipped,
        "on_hold": on_hold,
    }
    reason = f"cleanup policy {chosen.name}" + (f" by {actor_name}" if actor_name else "")
    with transaction.atomic():
        mirror_deleted(volume=plan.volume, sessions=removed, by=actor_name, reason=reason)
        audit_record(
            actor=actor,
            action=AuditAction.SESSIONS_CLEANUP,
            target_type=TargetType.SESSION_VOLUME,
            target_id=plan.volume,
            outcome=AuditEvent.Outcome.FAILED if failure else AuditEvent.Outcome.SUCCEEDED,
            bytes_reclaimed=reclaimed,
            message=(
                f"{chosen.name}: deleted {len(removed)} of {len(plan.to_delete)} due "
                f"({len(plan.looked_at)} looked at), {commits} commit{'s' if commits != 1 else ''}"
                + (f"; skipped {len(skipped)}: {'; '.join(skipped)[:300]}" if skipped else "")
                + (f"; {failure}" if failure else "")
            ),
            details={**result, "due": [s.session_id for s in plan.to_delete], "ignored": plan.ignored[:50]},
            operation=operation,
        )
        _sample_less(volume=plan.volume, removed=removed)
    if failure is not None:
        raise failure
    return result


def _sample_less(*, volume: str, removed: list[SessionScan]) -> None:
    """The gauge and chart move as soon as the bytes go: the last size less what went."""
    last = StorageSample.objects.filter(domain=SAMPLE_DOMAIN, subject=volume).order_by("-sampled_at").first()
    if last is not None and removed:
        files = None if last.total_files is None else max(0, last.total_files - sum(s.file_count for s in removed))
        total = max(0, last.total_bytes - sum(s.total_bytes for s in removed))
        storage_sample_record(domain=SAMPLE_DOMAIN, subject=volume, total_bytes=total, total_files=files)


def cleanup_sentence(result: dict[str, Any]) -> str:
    """`Deleted 4 sessions, 248.0 MiB reclaimed.` (and the commit, where there was one)."""
    deleted = len(result.get("deleted", []))
    skipped = result.get("skipped") or []
    # "Skipped 1 session that could not be read or removed: abc: could not read 1 folder: ..."
    skipped_text = f" Skipped {plural(len(skipped), 'session')} that could not be read or removed: " + (
        "; ".join(skipped)[:300] + "."
    )
    if not deleted:
        return (
            f"Nothing was due: looked at {plural(result.get('looked_at', 0), 'session')}, deleted none."
            if not skipped
            else f"Deleted none (looked at {plural(result.get('looked_at', 0), 'session')})." + skipped_text
        )
    commits = result.get("commits", 0)
    return (
        f"Deleted {plural(deleted, 'session')}, {humanize_bytes(result.get('bytes_reclaimed', 0))} reclaimed"
        + (f", {plural(commits, 'commit')}" if commits else "")
        + "."
        + (skipped_text if skipped else "")
    )

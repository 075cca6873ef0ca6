"""Delete expired mix jobs by TTL, straight from the files (no sync needed first).

Holds the session's lock file, re-reads each job just before deleting it, never follows a
symlink, and writes one audit event per run. The dry run is the same walk without the
unlinks; `mixjobs_cleanup_preview` turns it into the confirmation page's `Preview`.
"""

import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_now
from apps.audit.services import Actor, Progress, actor_parts, audit_record, operation_log
from apps.mixjobs.files import (
    LOCK_NAME,
    STATES,
    JobFile,
    Skipped,
    iter_job_files,
    media_root,
    output_path,
    outputs_root,
    read_index,
    read_job_file,
    session_folders,
    session_lock,
    ttl_for,
)
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import mixjobs_totals_forget
from controlpanel.errors import Busy, InvalidInput
from controlpanel.formatting import humanize_bytes, plural
from controlpanel.paths import validate_id
from controlpanel.preview import Preview, PreviewItem

# The operation's result keeps the first skipped paths, not every one.
RESULT_SKIPPED = 200


@dataclass
class CleanupReport:
    dry_run: bool
    deleted_jobs: list[dict] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    bytes_reclaimed: int = 0
    skipped: list[dict] = field(default_factory=list)
    sessions_seen: int = 0
    actor: Any = None
    file_bytes: dict[str, int] = field(default_factory=dict)
    # Why each file goes, and (dry runs only) every job file kept: what the preview shows.
    why: dict[str, str] = field(default_factory=dict)
    kept: list[PreviewItem] = field(default_factory=list)
    # Resolved parent folders: proving containment costs one resolve per folder, not per file.
    resolved: dict[str, str] = field(default_factory=dict)

    def inside(self, path: Path, root: Path) -> bool:
        top = self._resolve(str(root))
        parent = self._resolve(os.path.dirname(path))
        return parent == top or parent.startswith(top + os.sep)

    def _resolve(self, folder: str) -> str:
        if folder not in self.resolved:
            self.resolved[folder] = os.path.realpath(folder)
        return self.resolved[folder]

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append({"path": str(path), "reason": reason})

    def keep(self, path: Path, size: int | None, why: str) -> None:
        if self.dry_run:
            self.kept.append(PreviewItem(name=_shown_name(path), bytes=size, why=why, path=str(path)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted_jobs": self.deleted_jobs,
            "deleted_files": self.deleted_files,
            "bytes_reclaimed": self.bytes_reclaimed,
            "skipped": self.skipped,
            "sessions_seen": self.sessions_seen,
        }

    def as_result(self, *, itemised: bool = False) -> dict[str, Any]:
        """An operation's result: counts and the first skipped paths, unless the caller (the
        CLI) asked for every deleted job and file."""
        if itemised:
            return self.as_dict()
        return {
            "deleted_jobs": len(self.deleted_jobs),
            "deleted_files": len(self.deleted_files),
            "bytes_reclaimed": self.bytes_reclaimed,
            "skipped": self.skipped[:RESULT_SKIPPED],
        }


def _shown_name(path: Path | str) -> str:
    """A file as people read it: relative to its root (`s1/jobs/j.json`, `s1/final_mix.wav`)."""
    for root in (media_root(), outputs_root()):
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return str(path)


def _unlink_regular(path: Path, *, root: Path, report: CleanupReport, dry_run: bool, why: str = "") -> int:
    """Remove one regular file proven inside `root`; return the bytes it held (0 if skipped)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    if stat.S_ISLNK(st.st_mode):
        report.skip(path, "symlink, not followed")
        return 0
    if not stat.S_ISREG(st.st_mode):
        report.skip(path, "not a regular file")
        return 0
    if st.st_nlink > 1:
        # Another name (maybe outside every root) holds the same bytes: removing this one
        # would free nothing and change a file the panel does not own.
        report.skip(path, f"hard link ({st.st_nlink} names), left alone")
        return 0
    if not report.inside(path, root):
        report.skip(path, f"outside {root}")
        return 0
    if not dry_run:
        try:
            path.unlink()
        except FileNotFoundError:
            return 0
    report.deleted_files.append(str(path))
    report.file_bytes[str(path)] = st.st_size
    report.why[str(path)] = why
    return st.st_size


def _expiry(job: JobFile) -> str:
    expires = job.expires_at
    return f"{expires:%Y-%m-%d %H:%M} UTC" if expires is not None else "never"


def _not_yet(job: JobFile) -> str:
    if ttl_for(job.state) is None:
        return f"{job.state}: still in progress, never expires"
    return f"{job.state}, expires {_expiry(job)}"


def _clean_session(*, session_id: str, jobs_folder: Path, now: datetime, report: CleanupReport) -> None:
    expired: list[JobFile] = []
    remaining = 0
    first_deleted = len(report.deleted_jobs)
    for path in iter_job_files(jobs_folder):
        if isinstance(path, Skipped):
            report.skip(path.path, path.reason)
            remaining += 1
            continue
        # The index matters only for a job about to go: read it for expired jobs alone.
        job = read_job_file(session_id=session_id, path=path, with_index=False, for_mirror=False)
        if not job.problem and job.is_expired(now):
            read_index(job)
        if job.problem:
            report.skip(path, f"problem: {job.problem}")
            remaining += 1
        elif job.is_expired(now):
            expired.append(job)
        else:
            remaining += 1
            if report.dry_run:  # only a preview lists what stays; a real run keeps its pace
                report.keep(path, job.size, _not_yet(job))
    for job in expired:
        # Re-read just before deleting: a job rewritten since the scan is no longer the one we judged.
        again = read_job_file(session_id=session_id, path=job.path, with_index=False, for_mirror=False)
        if again.fingerprint != job.fingerprint or not again.is_expired(now):
            report.skip(job.path, "changed since it was scanned")
            remaining += 1
            continue
        why = f"{job.state} job {job.job_id}, expired {_expiry(job)}"
        # The index goes first and the job file last: a run killed in between leaves the
        # expired job file, so the next run finds the job and finishes it (the other order
        # would leave an index file nothing points at).
        reclaimed = 0
        if job.index_path is not None and job.index_session == session_id:
            reclaimed += _unlink_regular(
                job.index_path, root=media_root(), report=report, dry_run=report.dry_run, why=f"index of the {why}"
            )
        elif job.index_path is not None:
            report.skip(job.index_path, f"index names session {str(job.index_session)[:60]!r}, left alone")
        reclaimed += _unlink_regular(job.path, root=media_root(), report=report, dry_run=report.dry_run, why=why)
        report.bytes_reclaimed += reclaimed
        report.deleted_jobs.append({"session_id": session_id, "job_id": job.job_id, "state": job.state})
    _clean_output(session_id=session_id, remaining=remaining, any_expired=bool(expired), now=now, report=report)
    job_ids = [job["job_id"] for job in report.deleted_jobs[first_deleted:]]
    if job_ids and not report.dry_run:
        # Mirror rows are marked as each session finishes, so a killed run keeps what it did.
        _, by_name = actor_parts(report.actor)
        MixJob.objects.filter(session_id=session_id, job_id__in=job_ids, deleted_at=None).update(
            deleted_at=now, deleted_by=by_name
        )


def _clean_output(*, session_id: str, remaining: int, any_expired: bool, now: datetime, report: CleanupReport) -> None:
    """The output belongs to the session: it goes only with the session's last job. One left
    behind by an earlier run that stopped after the last job went goes now, once it is older
    than any job TTL (nothing fresh is ever an orphan by accident)."""
    path = output_path(session_id)
    if remaining == 0 and any_expired:
        why = "the session's output; none of its jobs remain"
    elif remaining == 0 and _output_outlived_its_jobs(session_id, now):
        why = "the session's output, left without jobs and older than any job TTL"
    else:
        if report.dry_run and os.path.lexists(path):
            reason = f"{plural(remaining, 'job')} of the session remain" if remaining else "younger than any job TTL"
            report.keep(path, None, f"the session's output; {reason}")
        return
    report.bytes_reclaimed += _unlink_regular(path, root=outputs_root(), report=report, dry_run=report.dry_run, why=why)


def _output_outlived_its_jobs(session_id: str, now: datetime) -> bool:
    """A session folder without job files whose output is older than the longest job TTL."""
    try:
        st = os.lstat(output_path(session_id))
    except (FileNotFoundError, NotADirectoryError):
        return False
    longest = max(ttl for ttl in (ttl_for(state) for state in STATES) if ttl is not None)
    return stat.S_ISREG(st.st_mode) and now - datetime.fromtimestamp(st.st_mtime, tz=UTC) >= longest


def mixjobs_cleanup(
    *,
    actor: Actor,
    session_id: str | None = None,
    dry_run: bool = False,
    operation: Operation | None = None,
    audit: bool = True,
) -> CleanupReport:
    """Delete expired complete/error jobs (all sessions, or one) and write one audit event.

    A page's preview passes `dry_run=True, audit=False`: looking must not write anything."""
    if session_id is not None:
        validate_id(session_id, kind="session id")
    now = timezone.now()
    report = CleanupReport(dry_run=dry_run, actor=actor)
    progress = Progress(operation, unit="sessions")
    for item in session_folders(session_id=session_id):
        if isinstance(item, Skipped):
            report.skip(item.path, item.reason)
            continue
        name, jobs_folder = item
        report.sessions_seen += 1
        if dry_run:
            _clean_session(session_id=name, jobs_folder=jobs_folder, now=now, report=report)
        else:
            try:
                with session_lock(jobs_folder):
                    _clean_session(session_id=name, jobs_folder=jobs_folder, now=now, report=report)
            except (Busy, InvalidInput) as exc:
                report.skip(jobs_folder / LOCK_NAME, str(exc))
        progress.advance(1)
    progress.flush()
    if audit or not dry_run:
        _record_cleanup(actor=actor, session_id=session_id, report=report, operation=operation)
    return report


def _record_cleanup(
    *, actor: Actor, session_id: str | None, report: CleanupReport, operation: Operation | None
) -> None:
    deleted = report.deleted_jobs
    message = (
        f"{'would delete' if report.dry_run else 'deleted'} {len(deleted)} job(s), "
        f"{len(report.deleted_files)} file(s), {humanize_bytes(report.bytes_reclaimed)}; "
        f"{len(report.skipped)} skipped"
    )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.MIXJOBS_CLEANUP,
            target_type=TargetType.MIXJOB_SESSION if session_id else TargetType.MIXJOBS,
            target_id=session_id or "all",
            outcome=AuditEvent.Outcome.DRY_RUN if report.dry_run else AuditEvent.Outcome.SUCCEEDED,
            bytes_reclaimed=0 if report.dry_run else report.bytes_reclaimed,
            message=message,
            details={
                "deleted_jobs": len(deleted),
                "deleted_files": len(report.deleted_files),
                "would_reclaim": report.bytes_reclaimed if report.dry_run else 0,
                "skipped": report.skipped[:RESULT_SKIPPED],
            },
            operation=operation,
        )
    mixjobs_totals_forget()
    if operation is not None:
        operation_log(operation, message)


def mixjobs_cleanup_preview(*, session_ids: list[str] | None = None) -> Preview:
    """What a cleanup of these sessions (or of all) would delete and keep. Writes nothing."""
    sessions = [validate_id(session_id, kind="session id") for session_id in session_ids or []]
    reports = [mixjobs_cleanup(actor=None, session_id=s, dry_run=True, audit=False) for s in sessions or [None]]
    delete = [
        PreviewItem(name=_shown_name(path), bytes=report.file_bytes[path], why=report.why[path], path=path)
        for report in reports
        for path in report.deleted_files
    ]
    keep = [item for report in reports for item in report.kept]
    keep += [
        PreviewItem(name=_shown_name(s["path"]), why=s["reason"], path=s["path"])
        for report in reports
        for s in report.skipped
    ]
    jobs = sum(len(report.deleted_jobs) for report in reports)
    if delete:
        summary = (
            f"{plural(jobs, 'expired job')} in {', '.join(sessions) or 'all sessions'}: their JSON and index "
            "files, and a session's final_mix.wav only when none of its jobs remain. "
            "Each file is read again just before it is deleted."
        )
    else:
        summary = "Nothing has expired: there is nothing to delete."
    return Preview(title="Clean up expired mix jobs", summary=summary, delete=delete, keep=keep)


def cleanup_expired_jobs(session_id: str) -> int:
    """For the mixing service: clean one session's expired jobs now; returns how many went.

    Call it before enqueueing new work; it takes the session's lock file, so hold that lock
    yourself while writing job files and the two never meet half-way. It runs as an
    operation (a row, an audit event) like every other cleanup; a bad id raises InvalidInput."""
    operation = run_now(Kind.MIXJOBS_CLEANUP_SESSION, session_id, actor="mixing-service")
    return operation.result["deleted_jobs"]

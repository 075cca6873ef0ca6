"""Delete expired mix jobs by TTL, straight from the files (no sync needed first).

Holds the session's lock file, re-reads each job and its index just before deleting them,
sets each file aside and proves it is the one judged before unlinking it
(`apps.mixjobs.aside`: a writer that skips the lock cannot lose a fresh job), never follows
a symlink, never opens anything but a regular file, and writes one audit event per run.
The dry run is the same walk without the unlinks; `mixjobs_cleanup_preview` turns it into
the confirmation page's `Preview`.
"""

import contextlib
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.holds import ON_HOLD, held_ids, hold_for, hold_guard
from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_now
from apps.audit.services import Actor, Progress, actor_parts, audit_record, operation_log, storage_sample_record
from apps.mixjobs.aside import SetAside, index_aside_path, restore_set_aside, set_aside
from apps.mixjobs.files import (
    LOCK_NAME,
    MAX_INDEX_FILE_BYTES,
    MAX_JOB_FILE_BYTES,
    STATES,
    JobFile,
    Skipped,
    iter_job_files,
    media_root,
    output_path,
    outputs_root,
    read_index,
    read_index_file,
    read_job_file,
    session_folders,
    session_lock,
    ttl_for,
)
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import SAMPLE_DOMAIN, SAMPLE_SUBJECT, mixjobs_totals_forget, session_jobs_expired
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
    # Files a killed earlier run left set aside, and what this run did with each.
    restored: list[str] = field(default_factory=list)
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
            "restored": self.restored,
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


def _size_now(path: Path | str) -> int | None:
    with contextlib.suppress(OSError, ValueError):  # a regular file's bytes for a preview, by lstat
        st = os.lstat(path)
        return st.st_size if stat.S_ISREG(st.st_mode) else None
    return None


def _shown_name(path: Path | str) -> str:
    """A file as people read it: relative to its root (`s1/jobs/j.json`, `s1/final_mix.wav`)."""
    for root in (media_root(), outputs_root()):
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return str(path)


def _removable(path: Path, *, root: Path, report: CleanupReport) -> os.stat_result | None:
    """The lstat of a regular file proven inside `root` with no other name; None (and why,
    in the report) for anything else."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        report.skip(path, "symlink, not followed")
        return None
    if not stat.S_ISREG(st.st_mode):
        report.skip(path, "not a regular file")
        return None
    if st.st_nlink > 1:
        # Another name (maybe outside every root) holds the same bytes: removing this one
        # would free nothing and change a file the panel does not own.
        report.skip(path, f"hard link ({st.st_nlink} names), left alone")
        return None
    if not report.inside(path, root):
        report.skip(path, f"outside {root}")
        return None
    return st


def _claim(
    path: Path,
    *,
    root: Path,
    report: CleanupReport,
    ident: tuple[int, int] | None = None,
    fingerprint: str | None = None,
    limit: int = MAX_JOB_FILE_BYTES,
) -> SetAside | None:
    """Set aside one removable file, proven to be the file judged: `ident` and `fingerprint`
    from its last read, or for a file never read (the output) the identity its lstat shows.
    A dry run moves nothing (`aside` is None); None when the file stays, with why."""
    st = _removable(path, root=root, report=report)
    if st is None:
        return None
    if report.dry_run:
        return SetAside(path=path, aside=None, size=st.st_size)
    claimed = set_aside(path, ident=ident or (st.st_dev, st.st_ino), fingerprint=fingerprint, limit=limit)
    if isinstance(claimed, str):
        report.skip(path, claimed)
        return None
    return claimed


def _record(claimed: SetAside, *, report: CleanupReport, why: str) -> int:
    report.deleted_files.append(str(claimed.path))
    report.file_bytes[str(claimed.path)] = claimed.size
    report.why[str(claimed.path)] = why
    return claimed.size


def _claim_index(
    job: JobFile, *, session_id: str, jobs_folder: Path, report: CleanupReport
) -> tuple[bool, SetAside | None]:
    """The job's index, read again now (under the lock), set aside if it still names this
    session. Returns whether the job may go, and the index set aside: None when the index
    stays (none, unreadable, or rewritten since the scan to name another session; the report
    says why). An index rewritten while it was being set aside keeps its job too."""
    index = read_index_file(job.job_id)
    if index is None:
        return True, None
    if index.problem:
        report.skip(index.path, f"index is {index.problem}; left alone")
        return True, None
    if index.session_id != session_id:
        report.skip(index.path, f"index names session {str(index.session_id)[:60]!r}, left alone")
        return True, None
    st = _removable(index.path, root=media_root(), report=report)
    if st is None:
        return True, None
    if report.dry_run:
        return True, SetAside(path=index.path, aside=None, size=st.st_size)
    claimed = set_aside(
        index.path,
        ident=index.ident,
        fingerprint=index.fingerprint,
        limit=MAX_INDEX_FILE_BYTES,
        aside=index_aside_path(index.path, jobs_folder),
    )
    if isinstance(claimed, str):
        report.skip(index.path, f"index {claimed}")
        report.skip(job.path, "kept with its index, which changed while it was being removed")
        return False, None
    return True, claimed


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
    if not report.dry_run:
        for folder in (jobs_folder, output_path(session_id).parent):
            report.restored += restore_set_aside(folder)
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
        # Re-read just before deleting: a job rewritten since the scan is no longer the one
        # judged, even when it is still expired (same content, not merely "still expired").
        again = read_job_file(session_id=session_id, path=job.path, with_index=False, for_mirror=False)
        if again.fingerprint != job.fingerprint or not again.is_expired(now):
            report.skip(job.path, "changed since it was scanned")
            remaining += 1
            continue
        why = f"{job.state} job {job.job_id}, expired {_expiry(job)}"
        # Both files are set aside, the index first, each proven to be the file just read;
        # then the job is unlinked, then the index. At every moment an index has its job, and
        # a run killed in between leaves files set aside that the next run puts back (or, for
        # an index whose job is gone, removes).
        proceed, index = _claim_index(job, session_id=session_id, jobs_folder=jobs_folder, report=report)
        claimed = (
            _claim(job.path, root=media_root(), report=report, ident=again.ident, fingerprint=again.fingerprint)
            if proceed
            else None
        )
        if claimed is None:
            if index is not None:
                index.put_back()  # the job stays (a writer restarted it): so does its index
            remaining += 1
            continue
        claimed.unlink()
        if index is not None:
            index.unlink()
            report.bytes_reclaimed += _record(index, report=report, why=f"index of the {why}")
        report.bytes_reclaimed += _record(claimed, report=report, why=why)
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
    behind by an earlier run that stopped after the last job went goes now: when the mirror
    knows those jobs, all expired, or once it is older than any job TTL (never one fresh)."""
    path = output_path(session_id)
    if remaining == 0 and any_expired:
        why = "the session's output; none of its jobs remain"
    elif remaining == 0 and (session_jobs_expired(session_id, now) or _output_outlived_its_jobs(session_id, now)):
        why = "the session's output, left without jobs (all of them expired, or older than any job TTL)"
    else:
        if report.dry_run and os.path.lexists(path):
            verb = "remains" if remaining == 1 else "remain"
            reason = f"{plural(remaining, 'job')} of the session {verb}" if remaining else "younger than any job TTL"
            report.keep(path, _size_now(path), f"the session's output; {reason}")
        return
    claimed = _claim(path, root=outputs_root(), report=report)
    if claimed is not None:
        claimed.unlink()  # a dry run's claim only records it
        report.bytes_reclaimed += _record(claimed, report=report, why=why)


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
    held = held_ids(target_type=TargetType.MIXJOB_SESSION)
    for item in session_folders(session_id=session_id):
        if isinstance(item, Skipped):
            report.skip(item.path, item.reason)
            continue
        name, jobs_folder = item
        report.sessions_seen += 1
        if name in held:
            # A person put the session on hold: nothing of it goes, and the report says so.
            report.skip(jobs_folder, ON_HOLD)
            progress.advance(1)
            continue
        if dry_run:
            _clean_session(session_id=name, jobs_folder=jobs_folder, now=now, report=report)
        else:
            try:
                # Read again under the lock a hold's write takes: held since the run began, kept.
                with hold_guard((TargetType.MIXJOB_SESSION, name)) as hold, session_lock(jobs_folder):
                    if hold is not None:
                        report.skip(jobs_folder, ON_HOLD)
                    else:
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
        if not report.dry_run and report.bytes_reclaimed:
            # The header and the overview move as soon as the bytes go: the last size less what went.
            last = StorageSample.objects.filter(domain=SAMPLE_DOMAIN, subject=SAMPLE_SUBJECT).order_by("-sampled_at")
            last = last.first()
            if last is not None:
                total = max(0, last.total_bytes - report.bytes_reclaimed)
                storage_sample_record(domain=SAMPLE_DOMAIN, subject=SAMPLE_SUBJECT, total_bytes=total)
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
    keep = [item for report in reports for item in report.kept] + [
        PreviewItem(name=_shown_name(s["path"]), bytes=_size_now(s["path"]), why=s["reason"], path=s["path"])
        for report in reports
        for s in report.skipped
    ]
    jobs = sum(len(report.deleted_jobs) for report in reports)
    summary = "Nothing has expired: there is nothing to delete."
    if delete:
        summary = (
            f"{plural(jobs, 'expired job')} in {', '.join(sessions) or 'all sessions'}: their JSON and index "
            "files, and a session's final_mix.wav only when none of its jobs remain. "
            "Each file is read again just before it is deleted."
        )
    return Preview(title="Clean up expired mix jobs", summary=summary, delete=delete, keep=keep)


def cleanup_expired_jobs(session_id: str) -> int:
    """For the mixing service: clean one session's expired jobs now; returns how many went.

    Call it before enqueueing new work; it takes the session's lock file, so hold that lock
    yourself while writing job files and the two never meet half-way. It runs as an
    operation (a row, an audit event) like every other cleanup; a bad id raises InvalidInput.
    A session a person put on hold is kept: this routine call deletes nothing there."""
    if hold_for(target_type=TargetType.MIXJOB_SESSION, target_id=session_id) is not None:
        return 0
    operation = run_now(Kind.MIXJOBS_CLEANUP_SESSION, session_id, actor="mixing-service")
    return operation.result["deleted_jobs"]

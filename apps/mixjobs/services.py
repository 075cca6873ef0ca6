"""Mix jobs: read the mixing service's files, mirror them, and expire them by TTL.

Layout written by the mixing service (atomic renames, no cleanup of its own):

    MIX_MEDIA_DIR/<session_id>/jobs/<job_id>.json    the job
    MIX_MEDIA_DIR/jobs_index/<job_id>.json           {"job_id", "session_id"}
    MIX_OUTPUTS_DIR/<session_id>/final_mix.wav       the session's output, shared by its jobs

The files are the truth. Cleanup works on them directly (the mixing service calls
`cleanup_expired_jobs(session_id)` without any sync), holding the session's lock file,
re-reading each job just before deleting it, and never following a symlink.
"""

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.services import (
    Actor,
    Progress,
    actor_parts,
    audit_record,
    operation_create,
    operation_log,
    storage_sample_record,
)
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import mixjobs_totals_forget
from controlpanel.errors import Busy, InvalidInput
from controlpanel.paths import validate_id

INDEX_FOLDER = "jobs_index"
OUTPUT_NAME = "final_mix.wav"
LOCK_NAME = ".lock"
# A job file bigger than this is not a job the mixing service wrote: report it, do not parse it.
MAX_JOB_FILE_BYTES = 16 * 1024 * 1024
# `extra` is free-form and can be large; the mirror keeps small ones only.
MAX_EXTRA_BYTES = 16 * 1024
LOCK_WAIT_SECONDS = 10.0
# Clocks of the mixing service's machines may run a little ahead of ours; more is a problem.
FUTURE_TOLERANCE = timedelta(days=1)
SYNC_BATCH = 1000
STATES = set(MixJob.State.values)
REQUIRED_FIELDS = ("job_id", "session_id", "state", "updated_at")


def media_root() -> Path:
    return Path(settings.MIX_MEDIA_DIR)


def outputs_root() -> Path:
    return Path(settings.MIX_OUTPUTS_DIR)


def ttl_for(state: str) -> timedelta | None:
    if state == MixJob.State.COMPLETE:
        return timedelta(hours=settings.JOB_TTL_HOURS)
    if state == MixJob.State.ERROR:
        return timedelta(hours=settings.FAILED_JOB_TTL_HOURS)
    return None


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 as written by `datetime.utcnow().isoformat()` (naive = UTC); Z and offsets accepted."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# --- reading files ----------------------------------------------------------------------


@dataclass
class JobFile:
    """One job file as found on disk, with whatever could not be trusted in `problem`."""

    session_id: str
    job_id: str
    path: Path
    size: int
    fingerprint: str  # sha256 of the bytes read: a rewrite between scan and delete changes it
    state: str = ""
    progress: int | None = None
    message: str = ""
    error: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extra: dict = field(default_factory=dict)
    problem: str = ""
    index_path: Path | None = None
    index_bytes: int = 0
    index_session: str | None = None

    @property
    def expires_at(self) -> datetime | None:
        ttl = ttl_for(self.state)
        if ttl is None or self.updated_at is None or self.problem:
            return None
        try:
            return self.updated_at + ttl
        except OverflowError:  # year 9999: it never expires
            return None

    def is_expired(self, now: datetime) -> bool:
        expires = self.expires_at
        return expires is not None and now >= expires


def _read_regular_file(path: Path, *, limit: int) -> bytes:
    """Read a regular file without following a symlink at its last component."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput("not a regular file")
        if st.st_size > limit:
            raise InvalidInput(f"{st.st_size} bytes, larger than {limit}")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_job_file(*, session_id: str, path: Path, with_index: bool = True, for_mirror: bool = True) -> JobFile:
    """Parse one job file; never raises for bad content, records a `problem` instead.

    Cleanup passes `for_mirror=False`: it judges state and times, and skips copying the
    free-form fields the mirror keeps."""
    job_id = path.name[: -len(".json")]
    try:
        raw = _read_regular_file(path, limit=MAX_JOB_FILE_BYTES)
    except OSError as exc:
        reason = "symlink, not followed" if exc.errno == errno.ELOOP else f"unreadable: {exc.strerror}"
        return JobFile(session_id=session_id, job_id=job_id, path=path, size=0, fingerprint="", problem=reason)
    except InvalidInput as exc:
        return JobFile(session_id=session_id, job_id=job_id, path=path, size=0, fingerprint="", problem=str(exc))
    job = JobFile(
        session_id=session_id,
        job_id=job_id,
        path=path,
        size=len(raw),
        fingerprint=hashlib.sha256(raw).hexdigest(),
    )
    try:
        content = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        job.problem = "not valid JSON (empty, truncated or corrupt)"
        return job
    except RecursionError:
        job.problem = "JSON nested too deeply"
        return job
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        job.problem = f"JSON value out of range: {str(exc)[:80]}"
        return job
    if not isinstance(content, dict):
        job.problem = f"JSON is a {type(content).__name__}, not an object"
        return job
    missing = [name for name in REQUIRED_FIELDS if content.get(name) in (None, "")]
    if missing:
        job.problem = f"missing {', '.join(missing)}"
    state = content.get("state")
    job.state = state if isinstance(state, str) and state in STATES else ""
    if state and not job.state and not job.problem:
        job.problem = f"unknown state {str(state)[:40]!r}"
    progress = content.get("progress")
    job.progress = int(progress) if isinstance(progress, int | float) and 0 <= progress <= 100 else None
    job.updated_at = parse_time(content.get("updated_at"))
    if content.get("updated_at") and job.updated_at is None and not job.problem:
        job.problem = "updated_at is not an ISO 8601 time"
    if job.updated_at is not None and job.updated_at > timezone.now() + FUTURE_TOLERANCE and not job.problem:
        # A job "updated" in the future would never expire, or expire when nobody expects it.
        job.problem = f"updated_at {job.updated_at.isoformat()} is in the future"
    if for_mirror:
        job.message = str(content.get("message") or "")[:2000]
        job.error = str(content.get("error") or "")[:2000]
        job.created_at = parse_time(content.get("created_at"))
        extra = content.get("extra")
        if isinstance(extra, dict):
            encoded = len(json.dumps(extra, default=str))
            job.extra = extra if encoded <= MAX_EXTRA_BYTES else {"_truncated": True, "_bytes": encoded}
    if not job.problem and content.get("job_id") != job_id:
        job.problem = f"job_id {str(content.get('job_id'))[:60]!r} differs from its file name"
    if not job.problem and content.get("session_id") != session_id:
        job.problem = f"session_id {str(content.get('session_id'))[:60]!r} differs from its folder"
    if with_index:
        _read_index(job)
    return job


def _read_index(job: JobFile) -> None:
    try:
        validate_id(job.job_id, kind="job id")
    except InvalidInput:
        return
    path = media_root() / INDEX_FOLDER / f"{job.job_id}.json"
    try:
        raw = _read_regular_file(path, limit=1024 * 1024)
    except FileNotFoundError:
        return
    except (OSError, InvalidInput):
        job.index_path = path
        job.index_session = None
        return
    job.index_path = path
    job.index_bytes = len(raw)
    try:
        content = json.loads(raw)
        job.index_session = content.get("session_id") if isinstance(content, dict) else None
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        job.index_session = None
    if job.index_session is not None and not isinstance(job.index_session, str):
        job.index_session = None
    if job.index_session != job.session_id and not job.problem:
        job.problem = f"index points at session {str(job.index_session)[:60]!r}"


@dataclass
class Skipped:
    path: str
    reason: str


def session_folders(*, session_id: str | None = None) -> Iterator[tuple[str, Path] | Skipped]:
    """Session folders under MIX_MEDIA_DIR whose jobs/ folder is safe to read."""
    root = media_root()
    if session_id is not None:
        names = [validate_id(session_id, kind="session id")]
    else:
        try:
            names = sorted(entry.name for entry in os.scandir(root) if entry.name != INDEX_FOLDER)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            yield Skipped(str(root), "MIX_MEDIA_DIR is not a folder")
            return
    for name in names:
        folder = root / name
        try:
            validate_id(name, kind="session id")
        except InvalidInput:
            yield Skipped(str(folder), "folder name is not a valid session id")
            continue
        try:
            folder_stat = os.lstat(folder)
            jobs_stat = os.lstat(folder / "jobs")
        except FileNotFoundError:
            if session_id is not None and not folder.exists():
                yield Skipped(str(folder), "no such session")
            continue
        except NotADirectoryError:
            yield Skipped(_printable(str(folder)), "not a folder")
            continue
        if stat.S_ISLNK(folder_stat.st_mode) or stat.S_ISLNK(jobs_stat.st_mode):
            yield Skipped(str(folder), "symlink, not followed")
            continue
        if not stat.S_ISDIR(jobs_stat.st_mode):
            yield Skipped(str(folder / "jobs"), "not a folder")
            continue
        yield name, folder / "jobs"


def iter_job_files(jobs_folder: Path) -> Iterator[Path | Skipped]:
    """Job files of a session; a name that is not a valid job id is a Skipped (never a row:
    the id would be whatever bytes the name holds)."""
    with os.scandir(jobs_folder) as entries:
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                validate_id(entry.name[: -len(".json")], kind="job id")
            except InvalidInput:
                yield Skipped(_printable(entry.path), "file name is not a valid job id")
                continue
            yield Path(entry.path)


def _printable(path: str) -> str:
    """A path from the disk made safe to store and show (undecodable bytes escaped)."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def output_path(session_id: str) -> Path:
    return outputs_root() / session_id / OUTPUT_NAME


def output_file(session_id: str) -> tuple[Path, int]:
    """The session's final_mix.wav and its size (0 when absent or not a regular file)."""
    path = output_path(session_id)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # a file where the session's folder should be
        return path, 0
    return path, st.st_size if stat.S_ISREG(st.st_mode) else 0


# --- sync ---------------------------------------------------------------------------------

SYNC_FIELDS = [
    "state",
    "progress",
    "message",
    "error",
    "created_at",
    "updated_at",
    "extra",
    "job_path",
    "index_path",
    "output_path",
    "job_bytes",
    "index_bytes",
    "output_bytes",
    "expires_at",
    "problem",
    "last_seen_at",
    "seen_by_sync",
    "vanished_at",
]


def _row(job: JobFile, *, output: tuple[Path, int], now: datetime, token: str) -> MixJob:
    return MixJob(
        seen_by_sync=token,
        session_id=job.session_id,
        job_id=job.job_id[:128],
        state=job.state,
        progress=job.progress,
        message=job.message,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        extra=job.extra,
        job_path=str(job.path)[:600],
        index_path=str(job.index_path or "")[:600],
        output_path=str(output[0]) if output[1] else "",
        job_bytes=job.size,
        index_bytes=job.index_bytes,
        output_bytes=output[1],
        expires_at=job.expires_at,
        problem=job.problem[:300],
        first_seen_at=now,
        last_seen_at=now,
        vanished_at=None,
    )


def _upsert(rows: list[MixJob]) -> None:
    """One INSERT … ON CONFLICT DO UPDATE, executed for the whole batch in one call.

    bulk_create would split a batch into many statements on SQLite (999 parameters per
    statement, ~40 rows of this model); executemany sends one statement with a row of
    parameters per job on SQLite and PostgreSQL alike."""
    table = MixJob._meta.db_table
    quote = connection.ops.quote_name
    columns = [f for f in MixJob._meta.concrete_fields if not f.primary_key]
    updates = ", ".join(f"{quote(f.column)} = excluded.{quote(f.column)}" for f in columns if f.name in SYNC_FIELDS)
    # Only model metadata is interpolated (quoted table and column names); values are parameters.
    names = ", ".join(quote(f.column) for f in columns)
    placeholders = ", ".join(["%s"] * len(columns))
    key = f"{quote('session_id')}, {quote('job_id')}"
    sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({placeholders}) ON CONFLICT ({key}) DO UPDATE SET {updates}"  # noqa: S608
    params = [[field.get_db_prep_save(getattr(row, field.attname), connection) for field in columns] for row in rows]
    # One transaction per batch: in autocommit SQLite would commit (and sync) every row.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)


def mixjobs_sync(*, actor: Actor, operation: Operation | None = None) -> dict[str, Any]:
    """Mirror every job file into MixJob rows in bulk and mark the ones that vanished."""
    started = timezone.now()
    token = uuid.uuid4().hex
    progress = Progress(operation, unit="jobs")
    seen = problems = total_bytes = 0
    skipped: list[Skipped] = []
    batch: list[MixJob] = []
    for item in session_folders():
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        session_id, jobs_folder = item
        output = output_file(session_id)
        total_bytes += output[1]
        for path in iter_job_files(jobs_folder):
            if isinstance(path, Skipped):
                skipped.append(path)
                continue
            job = read_job_file(session_id=session_id, path=path)
            if len(job.job_id) > 128:
                skipped.append(Skipped(str(path), "job id longer than 128 characters"))
                continue
            batch.append(_row(job, output=output, now=started, token=token))
            seen += 1
            problems += bool(job.problem)
            total_bytes += job.size + job.index_bytes
            if len(batch) >= SYNC_BATCH:
                _upsert(batch)
                batch = []
                progress.advance(SYNC_BATCH)
    if batch:
        _upsert(batch)
    progress.done = seen
    progress.flush()
    vanished = (
        MixJob.objects.filter(vanished_at__isnull=True, deleted_at__isnull=True)
        .exclude(seen_by_sync=token)
        .update(vanished_at=started)
    )
    storage_sample_record(domain="mixjobs", subject="all", total_bytes=total_bytes, total_files=seen)
    mixjobs_totals_forget()
    if operation is not None:
        operation_log(operation, f"{seen} jobs ({problems} with problems), {vanished} vanished, {total_bytes} bytes")
    return {
        "jobs": seen,
        "problems": problems,
        "vanished": vanished,
        "bytes": total_bytes,
        "skipped": [vars(s) for s in skipped],
    }


# --- cleanup ------------------------------------------------------------------------------


@contextmanager
def session_lock(jobs_folder: Path, *, wait: float = LOCK_WAIT_SECONDS):
    """Hold `<session>/jobs/.lock` exclusively; the mixing service may take the same lock."""
    path = jobs_folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:  # a symlink (ELOOP), a folder (EISDIR), no permission…
        raise InvalidInput(f"{path} cannot be used as a lock: {exc.strerror}; session left alone") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"{path} is held by another process; try again later") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted_jobs": self.deleted_jobs,
            "deleted_files": self.deleted_files,
            "bytes_reclaimed": self.bytes_reclaimed,
            "skipped": self.skipped,
            "sessions_seen": self.sessions_seen,
        }


def _unlink_regular(path: Path, *, root: Path, report: CleanupReport, dry_run: bool) -> int:
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
    return st.st_size


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
            _read_index(job)
        if job.problem:
            report.skip(path, f"problem: {job.problem}")
            remaining += 1
        elif job.is_expired(now):
            expired.append(job)
        else:
            remaining += 1
    for job in expired:
        # Re-read just before deleting: a job rewritten since the scan is no longer the one we judged.
        again = read_job_file(session_id=session_id, path=job.path, with_index=False, for_mirror=False)
        if again.fingerprint != job.fingerprint or not again.is_expired(now):
            report.skip(job.path, "changed since it was scanned")
            remaining += 1
            continue
        # The index goes first and the job file last: a run killed in between leaves the
        # expired job file, so the next run finds the job and finishes it (the other order
        # would leave an index file nothing points at).
        reclaimed = 0
        if job.index_path is not None and job.index_session == session_id:
            reclaimed += _unlink_regular(job.index_path, root=media_root(), report=report, dry_run=report.dry_run)
        elif job.index_path is not None:
            report.skip(job.index_path, f"index names session {str(job.index_session)[:60]!r}, left alone")
        reclaimed += _unlink_regular(job.path, root=media_root(), report=report, dry_run=report.dry_run)
        report.bytes_reclaimed += reclaimed
        report.deleted_jobs.append({"session_id": session_id, "job_id": job.job_id, "state": job.state})
    if remaining == 0 and (expired or _output_outlived_its_jobs(session_id, now)):
        # The output belongs to the session: it goes only with the session's last job. One
        # left behind by an earlier run that stopped after the last job went goes now, once
        # it is older than any job TTL (nothing fresh is ever an orphan by accident).
        report.bytes_reclaimed += _unlink_regular(
            output_path(session_id), root=outputs_root(), report=report, dry_run=report.dry_run
        )
    job_ids = [job["job_id"] for job in report.deleted_jobs[first_deleted:]]
    if job_ids and not report.dry_run:
        # Mirror rows are marked as each session finishes, so a killed run keeps what it did.
        _, by_name = actor_parts(report.actor)
        MixJob.objects.filter(session_id=session_id, job_id__in=job_ids, deleted_at=None).update(
            deleted_at=now, deleted_by=by_name
        )


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
        _record_cleanup(actor=actor, session_id=session_id, report=report, operation=operation, now=now)
    return report


def _record_cleanup(
    *, actor: Actor, session_id: str | None, report: CleanupReport, operation: Operation | None, now: datetime
) -> None:
    deleted = report.deleted_jobs
    message = (
        f"{'would delete' if report.dry_run else 'deleted'} {len(deleted)} job(s), "
        f"{len(report.deleted_files)} file(s), {report.bytes_reclaimed} bytes; {len(report.skipped)} skipped"
    )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="mixjobs.cleanup",
            target_type="mixjob-session" if session_id else "mixjobs",
            target_id=session_id or "all",
            outcome=AuditEvent.Outcome.DRY_RUN if report.dry_run else AuditEvent.Outcome.SUCCEEDED,
            bytes_reclaimed=0 if report.dry_run else report.bytes_reclaimed,
            message=message,
            details={
                "deleted_jobs": len(deleted),
                "deleted_files": len(report.deleted_files),
                "would_reclaim": report.bytes_reclaimed if report.dry_run else 0,
                "skipped": report.skipped[:200],
            },
            operation=operation,
        )
    mixjobs_totals_forget()
    if operation is not None:
        operation_log(operation, message)


def cleanup_expired_jobs(session_id: str) -> int:
    """For the mixing service: clean one session's expired jobs now; returns how many went.

    Call it before enqueueing new work; it takes the session's lock file, so hold that lock
    yourself while writing job files and the two never meet half-way."""
    return len(mixjobs_cleanup(actor="mixing-service", session_id=session_id).deleted_jobs)


# --- operations ---------------------------------------------------------------------------

CLEANUP_TASK = "apps.mixjobs.tasks.mixjobs_cleanup_task"
SYNC_TASK = "apps.mixjobs.tasks.mixjobs_sync_task"


def mixjobs_cleanup_start(*, actor: Actor, session_id: str | None = None) -> Operation:
    """Write the intent of a cleanup; the caller enqueues it or runs it inline."""
    if session_id is not None:
        validate_id(session_id, kind="session id")
    return operation_create(
        kind="mixjobs.cleanup",
        target_type="mixjob-session" if session_id else "mixjobs",
        target_id=session_id or "all",
        actor=actor,
        task=CLEANUP_TASK,
        params={"session_id": session_id},
    )


def mixjobs_cleanup_report(operation: Operation) -> CleanupReport:
    actor = operation.actor_user or operation.actor_name
    return mixjobs_cleanup(actor=actor, session_id=operation.params.get("session_id"), operation=operation)


def mixjobs_cleanup_run(*, operation: Operation) -> dict[str, Any]:
    """The operation's result keeps counts and the first skipped paths, not every deleted file."""
    report = mixjobs_cleanup_report(operation)
    return {
        "deleted_jobs": len(report.deleted_jobs),
        "deleted_files": len(report.deleted_files),
        "bytes_reclaimed": report.bytes_reclaimed,
        "skipped": report.skipped[:200],
    }


def mixjobs_sync_start(*, actor: Actor) -> Operation:
    return operation_create(kind="mixjobs.sync", target_type="mixjobs", target_id="sync", actor=actor, task=SYNC_TASK)


def mixjobs_sync_run(*, operation: Operation) -> dict[str, Any]:
    return mixjobs_sync(actor=operation.actor_user or operation.actor_name, operation=operation)

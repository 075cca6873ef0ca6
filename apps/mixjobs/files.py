"""The mixing service's files: where they are, how to read one safely, and its lock.

Layout written by the mixing service (atomic renames, no cleanup of its own):

    MIX_MEDIA_DIR/<session_id>/jobs/<job_id>.json    the job
    MIX_MEDIA_DIR/jobs_index/<job_id>.json           {"job_id", "session_id"}
    MIX_OUTPUTS_DIR/<session_id>/final_mix.wav       the session's output, shared by its jobs

Readers meet partial, corrupt, huge or hostile files: nothing here raises for bad content,
it records a `problem` or yields a `Skipped`, and nothing follows a symlink. Sync and
cleanup (`apps.mixjobs.services`) read through this module only.
"""

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.mixjobs.models import MixJob
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
        read_index(job)
    return job


def read_index(job: JobFile) -> None:
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
            yield Skipped(printable(str(folder)), "not a folder")
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
                yield Skipped(printable(entry.path), "file name is not a valid job id")
                continue
            yield Path(entry.path)


def printable(path: str) -> str:
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

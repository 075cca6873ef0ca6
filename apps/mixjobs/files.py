"""The mixing service's files: where they are, how to read one safely, and its lock.

Layout written by the mixing service (atomic renames, no cleanup of its own):

    MIX_MEDIA_DIR/<session_id>/jobs/<job_id>.json    the job
    MIX_MEDIA_DIR/jobs_index/<job_id>.json           {"job_id", "session_id"}
    MIX_OUTPUTS_DIR/<session_id>/final_mix.wav       the session's output, shared by its jobs

Readers meet partial, corrupt, huge or hostile files: nothing here raises for bad content,
it records a `problem` or yields a `Skipped`, and nothing follows a symlink. Nothing here can
block either: only regular files are opened (a FIFO, socket, device or folder named `x.json`
is a problem with its reason, found by `lstat` before any `open`). Sync and cleanup
(`apps.mixjobs.services`) read through this module only.
"""

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.mixjobs.models import MixJob
from controlpanel.errors import Busy, InvalidInput
from controlpanel.formatting import humanize_bytes
from controlpanel.paths import validate_id

INDEX_FOLDER = "jobs_index"
OUTPUT_NAME = "final_mix.wav"
LOCK_NAME = ".lock"
# A job file bigger than this is not a job the mixing service wrote: report it, do not parse it.
MAX_JOB_FILE_BYTES = 16 * 1024 * 1024
# An index holds two ids; anything near this size is not one.
MAX_INDEX_FILE_BYTES = 1024 * 1024
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


def session_hold_places(session_id: str) -> list[tuple[str, str, str]]:
    """Where a held mix-job session lives (`apps.audit.holds.HOLD_PLACES`): its two folders."""
    what = f"mix-job session {session_id}"
    return [(f"local://{root}", session_id, what) for root in (media_root(), outputs_root())]


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
    # The (st_dev, st_ino) of the file that was read: cleanup deletes only that very file.
    ident: tuple[int, int] | None = None
    index_path: Path | None = None
    index_bytes: int = 0
    index_session: str | None = None
    # Why the index could not be read (FIFO, too large…); the job itself may still be fine.
    index_problem: str = ""

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


class Unreadable(Exception):
    """A file the panel will not or cannot read, with the reason for people and the bytes it
    holds on disk (an over-large file still counts in the bytes held; a FIFO holds none)."""

    def __init__(self, reason: str, *, size: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class FileRead:
    raw: bytes
    ident: tuple[int, int]  # (st_dev, st_ino)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


FILE_TYPES = [
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISLNK, "symlink"),
]


def file_type(mode: int) -> str:
    return next((name for test, name in FILE_TYPES if test(mode)), "special file")


def _too_large(size: int, limit: int) -> str:
    return f"{humanize_bytes(size)}, larger than the {humanize_bytes(limit)} limit; not read"


def read_regular_file(path: Path, *, limit: int) -> FileRead:
    """Read a regular file; never blocks and never follows a symlink at its last component.

    `lstat` first, so a FIFO (whose `open` waits for a writer for good), a socket, a device
    or a folder is never opened; then `open` with O_NONBLOCK|O_NOFOLLOW and `fstat`, so a
    FIFO swapped in between the two is not waited on either. A file that is not there
    raises FileNotFoundError; anything else the panel will not read raises `Unreadable`."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:  # e.g. jobs_index is a file (ENOTDIR)
        raise Unreadable(f"unreadable: {exc.strerror}") from None
    if stat.S_ISLNK(before.st_mode):
        raise Unreadable("symlink, not followed")
    if not stat.S_ISREG(before.st_mode):
        raise Unreadable(f"{file_type(before.st_mode)}, not a regular file")
    if before.st_size > limit:
        raise Unreadable(_too_large(before.st_size, limit), size=before.st_size)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = "symlink, not followed" if exc.errno == errno.ELOOP else f"unreadable: {exc.strerror}"
        raise Unreadable(reason, size=before.st_size) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the lstat and the open
            raise Unreadable(f"{file_type(st.st_mode)}, not a regular file")
        chunks, read = [], 0
        # Read at most one byte past the limit: a file growing while it is read is refused too.
        while read <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - read))):
            chunks.append(chunk)
            read += len(chunk)
        if read > limit:
            size = max(read, st.st_size)
            raise Unreadable(_too_large(size, limit), size=size)
        return FileRead(raw=b"".join(chunks), ident=(st.st_dev, st.st_ino))
    finally:
        os.close(fd)


def read_job_file(*, session_id: str, path: Path, with_index: bool = True, for_mirror: bool = True) -> JobFile:
    """Parse one job file; never raises for bad content, records a `problem` instead.

    Cleanup passes `for_mirror=False`: it judges state and times, and skips copying the
    free-form fields the mirror keeps."""
    job_id = path.name[: -len(".json")]
    try:
        found = read_regular_file(path, limit=MAX_JOB_FILE_BYTES)
    except (FileNotFoundError, Unreadable) as exc:
        # Gone since its folder was listed, or a file that is not read (FIFO, too large…):
        # an over-large file still counts its bytes.
        size, problem = (exc.size, exc.reason) if isinstance(exc, Unreadable) else (0, "vanished while being read")
        return JobFile(session_id=session_id, job_id=job_id, path=path, size=size, fingerprint="", problem=problem)
    raw = found.raw
    job = JobFile(
        session_id=session_id,
        job_id=job_id,
        path=path,
        size=len(raw),
        fingerprint=found.fingerprint,
        ident=found.ident,
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


@dataclass
class IndexFile:
    """`jobs_index/<job>.json` as found now: the session it names, or why it cannot be read."""

    path: Path
    size: int = 0
    session_id: str | None = None
    problem: str = ""
    ident: tuple[int, int] | None = None
    fingerprint: str = ""


def read_index_file(job_id: str) -> IndexFile | None:
    """The job's index, or None when there is none (or the id cannot name a file)."""
    try:
        validate_id(job_id, kind="job id")
    except InvalidInput:
        return None
    path = media_root() / INDEX_FOLDER / f"{job_id}.json"
    try:
        found = read_regular_file(path, limit=MAX_INDEX_FILE_BYTES)
    except FileNotFoundError:
        return None
    except Unreadable as exc:
        return IndexFile(path=path, size=exc.size, problem=exc.reason)
    index = IndexFile(path=path, size=len(found.raw), ident=found.ident, fingerprint=found.fingerprint)
    try:
        content = json.loads(found.raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return index
    session = content.get("session_id") if isinstance(content, dict) else None
    index.session_id = session if isinstance(session, str) else None
    return index


def read_index(job: JobFile) -> None:
    index = read_index_file(job.job_id)
    if index is None:
        return
    job.index_path = index.path
    job.index_bytes = index.size
    job.index_session = index.session_id
    if index.problem:
        # Not the job's problem: cleanup re-reads the index under the lock before touching it.
        job.index_problem = index.problem
        return
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
    try:
        entries = os.scandir(jobs_folder)
    except OSError as exc:  # removed or made unreadable since it was found
        yield Skipped(printable(str(jobs_folder)), f"unreadable: {exc.strerror}")
        return
    with entries:
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
    with suppress(FileNotFoundError):
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):  # a device is never opened at all
            raise InvalidInput(f"{path} cannot be used as a lock: a {file_type(mode)}; session left alone")
    try:
        # O_NONBLOCK: a FIFO put in place of the lock file must not hold the cleanup in open().
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:  # a symlink (ELOOP), a folder (EISDIR), no permission…
        raise InvalidInput(f"{path} cannot be used as a lock: {exc.strerror}; session left alone") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidInput(f"{path} cannot be used as a lock: a {file_type(mode)}; session left alone")
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

"""Reading the sessions volume: one streamed pass over it, or one session folder.

The volume (a Modal Volume or a local folder, `settings.SESSIONS_VOLUME_URL`) holds

    sessions/<session_id>/input.wav
    sessions/<session_id>/output/{drums,bass,vocals,other}.flac

Only folders whose names are valid ids count as sessions; anything else under `sessions/`
is reported and never touched.

Nothing here opens a file, so a FIFO or a device cannot block a scan: special files are
counted apart and reported. A folder that cannot be read is a problem of its session (which
a cleanup then skips, with the reason) or, for the volume root or `sessions/` itself, a
one-line refusal: a scan that cannot see the sessions must not report them gone.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings

from apps.audit.services import Progress
from apps.separations.models import STEMS, SeparationSession
from apps.volumes.backends import Unreadable, VolumeBackend, backend_for_url
from controlpanel.errors import InvalidInput, NotFound, Unreachable
from controlpanel.formatting import plural
from controlpanel.paths import validate_id

SESSIONS_DIR = "sessions"
# Problems kept by name (the count is exact); a session keeps its own, up to this many too.
PROBLEM_SAMPLES = 50
STEM_FILES = {f"output/{stem}.flac": stem for stem in STEMS}


def sessions_backend() -> VolumeBackend:
    return backend_for_url(settings.SESSIONS_VOLUME_URL)


def session_hold_places(session_id: str) -> list[tuple[str, str, str]]:
    """Where a held session lives, for a folder removal on the same volume
    (`apps.audit.holds.HOLD_PLACES`); an id no session can have lives nowhere."""
    try:
        validate_id(session_id, kind="session id")
    except InvalidInput:
        return []
    return [(settings.SESSIONS_VOLUME_URL, f"{SESSIONS_DIR}/{session_id}", f"session {session_id}")]


def sessions_volume_name() -> str:
    """The volume's name: what the sessions operations hold and the mirror rows belong to."""
    return sessions_backend().name


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
    # Folders inside the session that could not be read ("output: Permission denied"): its
    # totals are a lower bound and a cleanup skips it with this reason.
    unreadable: list[str] = field(default_factory=list)
    # FIFOs, sockets, devices ("output/x.flac: FIFO"): never opened, not counted as files;
    # removing the session unlinks them.
    special: list[str] = field(default_factory=list)

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

    @property
    def problems(self) -> str:
        """One line for the mirror and the pages, "" when there is none."""
        parts = []
        if self.unreadable:
            parts.append(f"could not read {plural(len(self.unreadable), 'folder')}: {', '.join(self.unreadable)}")
        if self.special:
            parts.append(f"{plural(len(self.special), 'special file')} (never opened): {', '.join(self.special)}")
        return "; ".join(parts)[:300]

    def add(self, relative: str, entry) -> None:
        """Count one entry found below the session folder (`relative` to it)."""
        if entry.unreadable:
            if len(self.unreadable) < PROBLEM_SAMPLES:
                self.unreadable.append(f"{relative or '.'} ({entry.unreadable})")
            return
        self.touch(entry.mtime)
        if entry.special:
            if len(self.special) < PROBLEM_SAMPLES:
                self.special.append(f"{relative} ({entry.special})")
            return
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
    # Unreadable folders and special files anywhere ("sessions/a/output: Permission denied"),
    # the first PROBLEM_SAMPLES of `problem_count`.
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, path: str, reason: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEM_SAMPLES:
            self.problems.append(f"{path or '/'}: {reason}")


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
        if entry.path in {"", SESSIONS_DIR} and entry.unreadable:
            raise Unreadable(
                f"{entry.path or 'the root'} of sessions volume {backend.name} cannot be read "
                f"({entry.unreadable}); nothing was changed"
            )
        if entry.unreadable:
            scan.problem(entry.path, f"could not be read ({entry.unreadable})")
        elif entry.special:
            scan.problem(entry.path, f"{entry.special}, never opened")
        elif not entry.is_dir and not entry.is_symlink:
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
        if len(parts) == 2 and not entry.unreadable:
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

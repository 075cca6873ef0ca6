"""The backend interface: what every volume backend offers, the entries it streams, the
path rule every backend applies, and the errors it raises (from `controlpanel.errors`, plus
`Unreadable` and `VolumeChanged`).

A walk never blocks and never gives up on the first bad folder: special files (FIFO, socket,
device) are entries with `special` set and are never opened; a folder that cannot be listed
is an entry with `unreadable` set (the reason), after which the walk goes on. A root that
disappears or is replaced during a walk ends it with `VolumeChanged`."""

import posixpath
from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple, Protocol

from controlpanel.errors import InvalidInput, NotFound, PanelError, Unreachable

__all__ = [
    "Entry",
    "InvalidInput",
    "NotFound",
    "PanelError",
    "Unreachable",
    "Unreadable",
    "VolumeBackend",
    "VolumeChanged",
    "clean_path",
]


class Unreadable(PanelError):
    """One path the panel may not read or change (permissions, an I/O error): that path is
    skipped with this reason and the rest of the work goes on."""


class VolumeChanged(PanelError):
    """The volume's root disappeared or was replaced while it was being walked: what was
    read describes no volume, so nothing may be stored from it."""


class Entry(NamedTuple):
    """One entry of a walk. A named tuple, not a frozen dataclass: a walk makes one per file
    (100,000s), and a frozen dataclass's __init__ sets each field through object.__setattr__."""

    path: str  # relative to the volume root, e.g. "sessions/abc/input.wav"
    is_dir: bool
    size: int
    mtime: datetime | None
    is_symlink: bool = False
    # Names the file has (st_nlink): more than one means bytes shared with another path,
    # maybe outside the volume; removing this name frees nothing and changes that file.
    links: int = 1
    # Not a regular file, folder or symlink ("FIFO", "socket", "character device"...): never
    # opened (a FIFO would block the reader for good), counted apart, reported as a problem.
    special: str = ""
    # Set on a folder whose contents could not be listed (the reason, e.g. "Permission
    # denied"). The folder was yielded before as a plain entry; this one only marks it, so
    # totals below it are a lower bound.
    unreadable: str = ""

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class VolumeBackend(Protocol):
    url: str
    name: str
    # True when `commit()` persists changes (inside a Modal container with the volume mounted).
    commit_is_meaningful: bool

    def check(self) -> None:
        """Raise Unreachable/NotFound with a clear message when the volume cannot be used."""

    def iter_entries(self, path: str = "", *, recursive: bool = True) -> Iterator[Entry]:
        """Entries below `path` (not `path` itself), streamed; folders before their contents.
        A folder that cannot be listed comes again with `unreadable` set; VolumeChanged when
        the root went away or was replaced during the walk."""

    def stat(self, path: str) -> Entry | None:
        """The entry at `path`, or None when nothing is there."""

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, a symlink (never its target) or, with `recursive`, a folder."""

    def commit(self) -> bool:
        """Persist removals where that means something; return whether a commit was made."""


def clean_path(path: str) -> str:
    """Normalise a volume-relative path, refusing anything that could leave the root."""
    if not isinstance(path, str) or "\x00" in path:
        raise InvalidInput(f"path {path!r} is not valid")
    stripped = path.strip("/")
    if not stripped:
        return ""
    parts = stripped.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise InvalidInput(f"path {path!r} is not valid: no empty, '.' or '..' parts")
    return "/".join(parts)

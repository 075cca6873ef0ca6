"""The backend interface: what every volume backend offers, the entries it streams, the
path rule every backend applies, and the errors it raises (from `controlpanel.errors`)."""

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from controlpanel.errors import InvalidInput, NotFound, PanelError, Unreachable

__all__ = ["Entry", "InvalidInput", "NotFound", "PanelError", "Unreachable", "VolumeBackend", "clean_path"]


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the volume root, e.g. "sessions/abc/input.wav"
    is_dir: bool
    size: int
    mtime: datetime | None
    is_symlink: bool = False
    # Names the file has (st_nlink): more than one means bytes shared with another path,
    # maybe outside the volume; removing this name frees nothing and changes that file.
    links: int = 1

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
        """Entries below `path` (not `path` itself), streamed; folders before their contents."""

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

"""Volume backends: one small interface over a folder and a Modal Volume.

    backend = backend_for_url("local:///srv/volumes/music-split-jobs-data")
    for entry in backend.iter_entries("sessions"):   # streams, never a full list
        ...
    backend.remove("sessions/abc", recursive=True)
    backend.commit()                                  # True only where a commit means something

Paths are POSIX, relative to the volume root, without a leading slash; `..`, NUL and
absolute paths are refused before any call is made. A symlink is reported as one
(`is_symlink`) and never followed; removing it removes the link only.
"""

import os
import posixpath
import shutil
import stat as stat_module
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlparse

from controlpanel.errors import InvalidInput, NotFound, Unreachable
from controlpanel.paths import resolve_inside


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


class LocalBackend:
    """A folder on this machine. Commit is a no-op: the filesystem persists at once."""

    commit_is_meaningful = False

    def __init__(self, root: Path, *, url: str = "", name: str = ""):
        self.root = Path(root)
        self.url = url or f"local://{self.root}"
        self.name = name or self.root.name

    def check(self) -> None:
        if not self.root.is_dir():
            raise NotFound(f"volume folder {self.root} does not exist")

    def _local(self, path: str) -> Path:
        relative = clean_path(path)
        if not relative:
            return self.root.resolve()
        # Resolve the parent only: the last part may itself be a symlink we must not follow.
        head, tail = posixpath.split(relative)
        parent = resolve_inside(self.root, head) if head else self.root.resolve()
        return parent / tail

    def _entry(self, relative: str, st: os.stat_result) -> Entry:
        is_link = stat_module.S_ISLNK(st.st_mode)
        return Entry(
            path=relative,
            is_dir=stat_module.S_ISDIR(st.st_mode),
            size=0 if stat_module.S_ISDIR(st.st_mode) else st.st_size,
            mtime=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            is_symlink=is_link,
            links=st.st_nlink if stat_module.S_ISREG(st.st_mode) else 1,
        )

    def iter_entries(self, path: str = "", *, recursive: bool = True) -> Iterator[Entry]:
        self.check()
        start = self._local(path)
        if start.is_symlink() or not start.is_dir():
            return
        prefix = clean_path(path)
        stack = [(start, prefix)]
        while stack:
            folder, relative = stack.pop()
            try:
                with os.scandir(folder) as it:
                    for item in it:
                        child = f"{relative}/{item.name}" if relative else item.name
                        try:
                            st = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed while we walked
                        entry = self._entry(child, st)
                        yield entry
                        if recursive and entry.is_dir and not entry.is_symlink:
                            stack.append((Path(item.path), child))
            except FileNotFoundError:
                continue

    def stat(self, path: str) -> Entry | None:
        self.check()
        try:
            return self._entry(clean_path(path), os.lstat(self._local(path)))
        except FileNotFoundError:
            return None

    def remove(self, path: str, *, recursive: bool = False) -> None:
        relative = clean_path(path)
        if not relative:
            raise InvalidInput("refusing to remove the volume root")
        target = self._local(relative)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise NotFound(f"{relative} does not exist on {self.name}") from None
        if stat_module.S_ISDIR(st.st_mode):
            if not recursive:
                raise InvalidInput(f"{relative} is a folder; remove it recursively")
            # rmtree unlinks symlinks inside the tree; it never follows them.
            shutil.rmtree(target)
        else:
            target.unlink()

    def commit(self) -> bool:
        return False


def backend_for_url(url: str) -> VolumeBackend:
    """`local:///path` or `modal://<volume>?environment=<env>`."""
    parsed = urlparse(url or "")
    if parsed.scheme == "local":
        path = unquote(parsed.netloc + parsed.path)
        # A NUL would only fail later, inside an inspection, as an unexpected ValueError.
        if "\x00" in path:
            raise InvalidInput(f"volume URL {url!r}: the path contains a NUL character")
        if not path.startswith("/"):
            raise InvalidInput(f"volume URL {url!r}: local:// needs an absolute path, e.g. local:///srv/volume")
        return LocalBackend(Path(path), url=url)
    if parsed.scheme == "modal":
        if not parsed.netloc:
            raise InvalidInput(f"volume URL {url!r}: modal:// needs a volume name, e.g. modal://my-volume")
        environment = parse_qs(parsed.query).get("environment", [None])[0]
        from apps.volumes.modal_backend import ModalBackend

        return ModalBackend(parsed.netloc, environment=environment, url=url)
    raise InvalidInput(f"volume URL {url!r} is not supported: use local:///path or modal://volume")


__all__ = ["Entry", "LocalBackend", "VolumeBackend", "backend_for_url", "clean_path", "Unreachable"]

"""A folder on this machine as a volume (`local:///srv/volumes/<name>`)."""

import os
import posixpath
import shutil
import stat as stat_module
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from controlpanel.errors import InvalidInput, NotFound
from controlpanel.paths import resolve_inside

from .base import Entry, Unreadable, VolumeChanged, clean_path

S_ISREG = stat_module.S_ISREG
fromtimestamp = datetime.fromtimestamp


def special_kind(mode: int) -> str:
    """What a non-regular, non-folder, non-symlink entry is; "" for those three."""
    if stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode) or stat_module.S_ISLNK(mode):
        return ""
    if stat_module.S_ISFIFO(mode):
        return "FIFO"
    if stat_module.S_ISSOCK(mode):
        return "socket"
    if stat_module.S_ISCHR(mode):
        return "character device"
    if stat_module.S_ISBLK(mode):
        return "block device"
    return "special file"


def os_reason(exc: OSError) -> str:
    """`Permission denied`, `Input/output error`: the OS's words without the path or errno."""
    return exc.strerror or type(exc).__name__


class LocalBackend:
    """A folder on this machine. Commit is a no-op: the filesystem persists at once.

    Walks stat entries and list folders; they never open a file, so a FIFO or a device in
    the tree cannot block them."""

    commit_is_meaningful = False

    def __init__(self, root: Path, *, url: str = "", name: str = ""):
        self.root = Path(root)
        self.url = url or f"local://{self.root}"
        self.name = name or self.root.name

    def check(self) -> None:
        try:
            is_dir = stat_module.S_ISDIR(os.stat(self.root).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            is_dir = False
        except OSError as exc:
            raise Unreadable(f"volume folder {self.root} cannot be read: {os_reason(exc)}") from None
        if not is_dir:
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
        mode = st.st_mode
        special = special_kind(mode)
        return Entry(
            path=relative,
            is_dir=stat_module.S_ISDIR(mode),
            # A device's or FIFO's st_size says nothing about bytes held on this volume.
            size=0 if stat_module.S_ISDIR(mode) or special else st.st_size,
            mtime=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            is_symlink=stat_module.S_ISLNK(mode),
            links=st.st_nlink if stat_module.S_ISREG(mode) else 1,
            special=special,
        )

    def _root_identity(self) -> tuple[int, int]:
        st = os.stat(self.root)
        return st.st_dev, st.st_ino

    def _same_root(self, identity: tuple[int, int]) -> None:
        """Raise VolumeChanged unless the root is still the folder the walk started in."""
        try:
            now = self._root_identity()
        except OSError:
            raise VolumeChanged(f"volume folder {self.root} disappeared during the walk (moved or deleted)") from None
        if now != identity:
            raise VolumeChanged(f"volume folder {self.root} was replaced during the walk (another folder is there now)")

    def iter_entries(self, path: str = "", *, recursive: bool = True) -> Iterator[Entry]:
        self.check()
        root = self._root_identity()
        start = self._local(path)
        if start.is_symlink() or not start.is_dir():
            self._same_root(root)  # the root itself gone is no empty volume
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
                            # Removed while we walked, or read through a root that moved away
                            # (maybe back a moment later): check the root now, before it returns.
                            self._same_root(root)
                            continue
                        if S_ISREG(st.st_mode):
                            # Most entries are plain files: built here, without the general path.
                            yield Entry(child, False, st.st_size, fromtimestamp(st.st_mtime, UTC), False, st.st_nlink)
                            continue
                        entry = self._entry(child, st)
                        yield entry
                        if recursive and entry.is_dir and not entry.is_symlink:
                            stack.append((Path(item.path), child))
            except FileNotFoundError:
                # A folder removed while we walked is fine; the root moving away is not.
                self._same_root(root)
                continue
            except OSError as exc:
                # Permissions, an I/O error: this folder is unread, the walk goes on.
                yield Entry(path=relative, is_dir=True, size=0, mtime=None, unreadable=os_reason(exc))
        # Moved away and back, or swapped for a copy: what was read may not be this volume.
        self._same_root(root)

    def stat(self, path: str) -> Entry | None:
        self.check()
        relative = clean_path(path)
        try:
            return self._entry(relative, os.lstat(self._local(path)))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Unreadable(f"{relative or '/'} on {self.name} cannot be read: {os_reason(exc)}") from None

    def remove(self, path: str, *, recursive: bool = False) -> None:
        relative = clean_path(path)
        if not relative:
            raise InvalidInput("refusing to remove the volume root")
        target = self._local(relative)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise NotFound(f"{relative} does not exist on {self.name}") from None
        except OSError as exc:
            raise Unreadable(f"{relative} on {self.name} cannot be read: {os_reason(exc)}") from None
        if stat_module.S_ISDIR(st.st_mode) and not recursive:
            raise InvalidInput(f"{relative} is a folder; remove it recursively")
        try:
            if stat_module.S_ISDIR(st.st_mode):
                # rmtree unlinks symlinks inside the tree; it never follows them. FIFOs and
                # devices are unlinked, never opened.
                shutil.rmtree(target)
            else:
                target.unlink()
        except OSError as exc:
            if not os.path.lexists(target):
                raise NotFound(f"{relative} does not exist on {self.name}") from None
            raise Unreadable(f"{relative} on {self.name} could not be removed: {os_reason(exc)}") from None

    def commit(self) -> bool:
        return False

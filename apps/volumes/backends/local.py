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

from .base import Entry, clean_path


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

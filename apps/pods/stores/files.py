"""`file://PATH`: one tar per volume in a folder per snapshot, written under a `.partial`
name and renamed when complete. A full disk is a `StoreFull` naming the volume and the bytes
written; free space comes from statvfs, so a stop that cannot fit is refused up front."""

import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from apps.pods.stores.base import CHUNK_SIZE, ObjectWriter, SnapshotStore, StoreError, store_full
from controlpanel.errors import Unreachable
from controlpanel.paths import resolve_inside

logger = logging.getLogger(__name__)

NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


class _FileWriter(ObjectWriter):
    def __init__(self, store: "FileStore", key: str, path: Path):
        self.store, self.key = store, key
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.partial, "wb")  # noqa: SIM115 - closed in close()/abort()

    def _no_room(self, exc: OSError) -> None:
        if exc.errno in NO_ROOM:
            raise store_full(self.store.url, self.key, self.written) from exc
        raise StoreError(f"snapshot store {self.store.url} could not write {self.key}: {exc}") from exc

    def write(self, chunk: bytes) -> None:
        try:
            self.handle.write(chunk)
        except OSError as exc:
            self._no_room(exc)
        self.written += len(chunk)

    def close(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        except OSError as exc:
            self._no_room(exc)
        # Rename last: a reader never sees half an object under the real name.
        os.replace(self.partial, self.path)
        self.stored_bytes = self.written

    def abort(self) -> None:
        try:
            self.handle.close()
        except OSError:  # a full disk fails the close's flush too; the file goes anyway
            pass
        self.partial.unlink(missing_ok=True)


class FileStore(SnapshotStore):
    def __init__(self, url: str, root: Path):
        self.url = url
        self.root = root

    def _path(self, key: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return resolve_inside(self.root, *key.split("/"))

    def writer(self, key: str) -> ObjectWriter:
        try:
            return _FileWriter(self, key, self._path(key))
        except OSError as exc:
            if exc.errno in NO_ROOM:
                raise store_full(self.url, key, 0) from exc
            raise Unreachable(f"snapshot store {self.url} cannot be written: {exc}") from exc

    def free_bytes(self) -> int | None:
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            usage = os.statvfs(folder)
        except OSError:
            return None
        return usage.f_bavail * usage.f_frsize

    def read(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK_SIZE):
                    yield chunk
        except FileNotFoundError:
            raise StoreError(f"{self.url}/{key} is missing") from None

    ranged = True

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                handle.seek(start)
                left = length
                while left > 0:
                    chunk = handle.read(min(CHUNK_SIZE, left))
                    if not chunk:
                        raise StoreError(f"{self.url}/{key} ends before byte {start + length}")
                    left -= len(chunk)
                    yield chunk
        except FileNotFoundError:
            raise StoreError(f"{self.url}/{key} is missing") from None

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def delete_prefix(self, prefix: str, *, reclaim: bool = True) -> int:
        """Remove the folder's files and folders; returns the bytes freed. Symlinks are
        removed, never followed; a file with a second name (a hard link, maybe from outside
        the store) is left where it is: removing this name would free nothing and change
        a file the store does not own."""
        folder = self._path(prefix)
        if not folder.exists():
            return 0
        removed, kept = 0, []
        for parent, folders, files in os.walk(folder, topdown=False):
            for name in files:
                path = os.path.join(parent, name)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    kept.append(path)
                    continue
                os.unlink(path)
                removed += st.st_size if stat.S_ISREG(st.st_mode) else 0
            for name in folders:
                path = os.path.join(parent, name)
                if os.path.islink(path):
                    os.unlink(path)
                elif not os.listdir(path):
                    os.rmdir(path)
        if not os.listdir(folder):
            os.rmdir(folder)
            # The pod's own folder goes with its last snapshot: no empty `<pod>/` left behind.
            parent, root = folder.parent, self.root.resolve()
            if parent != root and root in parent.parents and not os.listdir(parent):
                os.rmdir(parent)
        if kept:
            logger.warning("left %d hard-linked files in %s/%s: %s", len(kept), self.url, prefix, kept[:5])
        return removed

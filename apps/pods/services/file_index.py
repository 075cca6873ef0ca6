"""One snapshot's regular files, as the files page and the `pods files` command browse them:
read out of the manifest's per-file lists and kept compact, so a pod of a million files does
not take a web worker's memory.

- **Kept as arrays**, not as an object per file: the paths, sorted, in one string (a name never
  holds NUL: `plain_relative`), and beside them arrays of the sizes, times, offsets, volumes
  and sha256 digests: about 100 bytes a file beyond its path, against 380 for a row object
  each. A `FileRow` is made only for the files a request returns.
- **Read entry by entry**: the manifest's text is walked with the JSON decoder one file entry
  at a time, never held as objects whole; what a process holds while it builds an index is
  the manifest's text, its paths and the arrays.
"""

import json
import posixpath
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from apps.pods.models import VOLUME_MOUNTS
from apps.pods.stores.tarlist import file_entry

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
VOLUMES = list(VOLUME_MOUNTS)
NO_NUMBER = -(2**63)  # an mtime or offset the list does not give


class ManifestShape(ValueError):
    """The manifest is JSON, but its file lists are not in a shape known here."""


class NoFileLists(ValueError):
    """The manifest lists no files (a snapshot from before file lists)."""


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str  # in the pod: /workspace/proj/a.txt
    volume: str
    size: int
    sha256: str
    mtime: int | None
    offset: int | None

    @property
    def tar_path(self) -> str:
        """In the volume's tar, which holds its mount folder itself: workspace/proj/a.txt,
        local/bin/x for /usr/local/bin/x."""
        above = posixpath.dirname(VOLUME_MOUNTS[self.volume]).rstrip("/")
        return self.path[len(above) + 1 :]


@dataclass
class Entry:
    """One row of a listing: a folder (its files' total size, newest mtime, count) or a file."""

    path: str
    type: str  # "folder" or "file"
    size: int
    mtime: int | None
    files: int = 1

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def as_dict(self) -> dict:
        return {"path": self.path, "type": self.type, "size": self.size, "mtime": self.mtime}


def plain_relative(name: object) -> bool:
    """`a/b.txt`: relative, every part a real name (not empty, `.` or `..`), no NUL."""
    return (
        isinstance(name, str)
        and bool(name)
        and "\x00" not in name
        and all(part not in {"", ".", ".."} for part in name.split("/"))
    )


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _row(volume: str, mount: str, above: str, entry) -> FileRow | None:
    """A list's entry as a row, or None when no tar of this volume could hold it: a name that
    is not plain, lies in another volume, or numbers that are not sizes and offsets."""
    try:
        tar_path, size, sha256, mtime, offset = file_entry(entry)
    except (TypeError, ValueError):
        return None
    numbers = _count(size) and (offset is None or _count(offset)) and (mtime is None or isinstance(mtime, int))
    if not (numbers and isinstance(sha256, str) and plain_relative(tar_path)):
        return None
    if not (mtime is None or NO_NUMBER < mtime < 2**63) or size >= 2**63 or (offset or 0) >= 2**63:
        return None  # numbers no file has, and no array here holds
    if len(sha256) != 64 or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    path = posixpath.join(above, tar_path)
    return FileRow(path, volume, size, sha256, mtime, offset) if path.startswith(mount + "/") else None


class _Paths:
    """The sorted paths as a sequence (for `bisect`), each cut out of the joined string."""

    def __init__(self, index: "FileIndex"):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, at: int) -> str:
        return self.index.path(at)


class FileIndex:
    """Every regular file of one snapshot, sorted by pod path."""

    def __init__(self, rows: Iterator[FileRow | None]):
        """`rows`: a row per list entry, None for one that is left out (`unsafe`)."""
        paths: list[str] = []
        sizes, mtimes, offsets, volumes, digests = array("q"), array("q"), array("q"), array("b"), bytearray()
        self.unsafe = 0
        for row in rows:
            if row is None:
                self.unsafe += 1
                continue
            paths.append(row.path)
            sizes.append(row.size)
            mtimes.append(NO_NUMBER if row.mtime is None else row.mtime)
            offsets.append(NO_NUMBER if row.offset is None else row.offset)
            volumes.append(VOLUMES.index(row.volume))
            digests += bytes.fromhex(row.sha256)
        order = sorted(range(len(paths)), key=paths.__getitem__)
        self._joined = "\0".join(paths[at] for at in order) + "\0"
        del paths
        self._starts = array("q", [0])
        for end in (match.end() for match in re.finditer("\0", self._joined)):
            self._starts.append(end)
        self._sizes = array("q", (sizes[at] for at in order))
        self._mtimes = array("q", (mtimes[at] for at in order))
        self._offsets = array("q", (offsets[at] for at in order))
        self._volumes = array("b", (volumes[at] for at in order))
        self._digests = b"".join(digests[at * 32 : at * 32 + 32] for at in order)
        self.paths = _Paths(self)

    def __len__(self) -> int:
        return len(self._sizes)

    def path(self, at: int) -> str:
        return self._joined[self._starts[at] : self._starts[at + 1] - 1]

    def size(self, at: int) -> int:
        return self._sizes[at]

    def mtime(self, at: int) -> int | None:
        return None if self._mtimes[at] == NO_NUMBER else self._mtimes[at]

    def row(self, at: int) -> FileRow:
        offset = self._offsets[at]
        return FileRow(
            self.path(at),
            VOLUMES[self._volumes[at]],
            self._sizes[at],
            self._digests[at * 32 : at * 32 + 32].hex(),
            self.mtime(at),
            None if offset == NO_NUMBER else offset,
        )

    def span(self, path: str) -> range:
        """Where the files below folder `path` are (`/` for every file)."""
        prefix = "/" if path == "/" else path + "/"
        at = bisect_left(self.paths, prefix)
        end = at
        while end < len(self) and self.path(end).startswith(prefix):
            end += 1
        return range(at, end)

    def entries(self, path: str, query: str = "") -> list["Entry"]:
        """The folders and files right inside `path`; with a query, every folder and file below
        it whose name holds the query (any case). Folders first, then files, by name."""
        prefix = "/" if path == "/" else path + "/"
        folders: dict[str, Entry] = {}
        files: list[Entry] = []
        needle = query.strip().lower()
        for at in self.span(path):
            found, size, mtime = self.path(at), self.size(at), self.mtime(at)
            parts = found[len(prefix) :].split("/")
            folder_names = parts[:-1] if needle else parts[:1] if len(parts) > 1 else []
            for depth, name in enumerate(folder_names):
                if needle and needle not in name.lower():
                    continue
                folder = prefix + "/".join(parts[: depth + 1])
                entry = folders.get(folder)
                if entry is None:
                    folders[folder] = Entry(folder, "folder", size, mtime, 1)
                else:
                    entry.size += size
                    entry.files += 1
                    entry.mtime = max(entry.mtime or 0, mtime or 0) or None
            if (len(parts) == 1 and not needle) or (needle and needle in parts[-1].lower()):
                files.append(Entry(found, "file", size, mtime))
        return sorted(folders.values(), key=lambda e: e.path) + sorted(files, key=lambda e: e.path)

    def under(self, path: str) -> list[FileRow]:
        return [self.row(at) for at in self.span(path)]

    def file(self, path: str) -> FileRow | None:
        """The file at exactly this pod path, if the snapshot lists one (the last of a path
        listed twice, as unpacking the tar would leave it)."""
        at = bisect_right(self.paths, path) - 1
        return self.row(at) if at >= 0 and self.path(at) == path else None


def manifest_rows(text: str) -> Iterator[FileRow | None]:
    """Each entry of the per-file lists of a manifest's JSON text as a row (None for one left
    out), decoded one entry at a time. ValueError when the text is not JSON as `json.loads`
    reads it, ManifestShape when its lists are not in a known shape or a name is given twice
    in one object (which one counts would be a guess), NoFileLists when it has none."""
    at = _space(text, 0)
    if text[at : at + 1] != "{":
        json.loads(text)  # not JSON: its own ValueError; JSON, but not an object: no lists
        raise NoFileLists("the manifest is not an object")
    listed, keys, at, more = False, set(), *_opened(text, at, "}")
    while more:
        key, at = _name(text, at, keys)
        if key == "files" and text[at : at + 1] == "{":
            listed = text[_space(text, at + 1) : _space(text, at + 1) + 1] != "}"
            at = yield from _volumes(text, at)
        else:
            value, at = _DECODER.raw_decode(text, at)
            if key == "files" and value:
                raise ManifestShape("its files are not listed by volume")
        at, more = _next(text, at, "}")
    if _space(text, at) != len(text):
        raise ValueError(f"text after the manifest at {at}")
    if not listed:
        raise NoFileLists("the manifest lists no files")


def _volumes(text: str, at: int):
    """The rows of `"files": {volume: [entry, …], …}` from its `{`; where it ends."""
    names, at, more = set(), *_opened(text, at, "}")
    while more:
        volume, at = _name(text, at, names)
        mount = VOLUME_MOUNTS.get(volume)
        if mount is None or text[at : at + 1] != "[":
            _, at = _DECODER.raw_decode(text, at)  # another volume, or not a list: left out
        else:
            above = posixpath.dirname(mount)  # /usr for /usr/local; the tar's root is `local/`
            at, listing = _opened(text, at, "]")
            while listing:
                entry, at = _DECODER.raw_decode(text, at)
                yield _row(volume, mount, above, entry)
                at, listing = _next(text, at, "]")
        at, more = _next(text, at, "}")
    return at


def _opened(text: str, at: int, closing: str) -> tuple[int, bool]:
    """Past the `{` or `[` at `at`: where the first member is, and whether there is one."""
    at = _space(text, at + 1)
    return (at + 1, False) if text[at : at + 1] == closing else (at, True)


def _next(text: str, at: int, closing: str) -> tuple[int, bool]:
    """After a member: past its comma (another must follow) or past the closing bracket."""
    at = _space(text, at)
    mark = text[at : at + 1]
    if mark == ",":
        return _space(text, at + 1), True
    if mark == closing:
        return at + 1, False
    raise ValueError(f"expected ',' or {closing!r} at {at}")


def _name(text: str, at: int, seen: set) -> tuple[str, int]:
    """An object member's name, never one given before in the object; where its value is."""
    if text[at : at + 1] != '"':
        raise ValueError(f"expected a name in double quotes at {at}")
    name, at = _DECODER.raw_decode(text, at)
    if name in seen:
        raise ManifestShape(f"the manifest gives {name!r} twice in one object")
    seen.add(name)
    at = _space(text, at)
    if text[at : at + 1] != ":":
        raise ValueError(f"expected ':' at {at}")
    return name, _space(text, at + 1)


def _space(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()

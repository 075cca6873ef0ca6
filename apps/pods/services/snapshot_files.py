"""Any file back: a complete snapshot's regular files, browsed at a pod path and read one by
one, from the per-file lists its manifest holds (`stores.tarlist`: path, size, sha256, mtime
and where the file's data begins in its volume's tar).

- The manifest is read from the store once and its files kept, per process, as a compact
  index (`file_index`) for the last few snapshots looked at: a complete snapshot never
  changes, and whether it is still complete (not deleted) is asked of the database on every
  call.
- One file is read as a range of its volume's object: a seek in `file://`, a range GET in
  `s3://`. A deduplicating store can only dump a volume's whole tar from its start: it is
  read up to the file and let go of there.
- What is read is hashed on the way and must match the list's sha256; the last chunk is held
  back until it does, so a damaged copy never arrives whole.
- Folders are implied by the files' paths: empty folders, links and special files are not in
  the lists (they are in the volume's tar, and come back with a whole restore).
- A name in a list is the pod's data (a pod names its files as it likes, and the list comes
  from the store): only a plain relative path (no `.`, `..`, empty part, leading `/` or NUL,
  as a real file's name always is) is listed, so no download or restore names a place
  outside the path asked for; any other is counted (`FileIndex.unsafe`) and left out.
"""

import hashlib
import json
import posixpath
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from apps.pods.models import VOLUME_MOUNTS, Snapshot
from apps.pods.services.file_index import (  # noqa: F401 - FileRow, Entry and plain_relative are used from here
    Entry,
    FileIndex,
    FileRow,
    ManifestShape,
    NoFileLists,
    manifest_rows,
    plain_relative,
)
from apps.pods.services.state import pod_get
from apps.pods.snapshots import DedupStore, SnapshotStore, StoreError, store_from_url
from apps.pods.stores.tarlist import BLOCK, TarFileList
from controlpanel.errors import InvalidInput, NotFound
from controlpanel.formatting import first_line, humanize_bytes

# Snapshots whose file index a process keeps (each: every file's path and numbers, about 100
# bytes a file beyond its path): at most this many, and beyond the one in use at most KEPT_ROWS
# files in all.
KEPT_INDEXES = 4
KEPT_ROWS = 1_000_000
MOUNTS = ", ".join(VOLUME_MOUNTS.values())


def path_normalise(path: str | None) -> str:
    """An absolute pod path without `.`/`..` or a trailing slash, inside the eight volumes
    (or above them: `/`, `/usr`); otherwise one sentence."""
    # Not stripped: a pod's file may be named "notes " and must not be read as "notes".
    text = path or "/"
    if "\x00" in text or len(text) > 4096:
        raise InvalidInput("a path may not hold a NUL character or be longer than 4,096 characters")
    parts = [part for part in text.split("/") if part]
    if any(part in {".", ".."} for part in parts):
        raise InvalidInput(f"path {text[:200]!r} may not contain '.' or '..': give the path from / in the pod")
    clean = "/" + "/".join(parts)
    inside = any(clean == mount or clean.startswith(mount + "/") for mount in VOLUME_MOUNTS.values())
    above = any(mount.startswith(clean.rstrip("/") + "/") for mount in VOLUME_MOUNTS.values())
    if not inside and not above:
        raise InvalidInput(f"path {shown(clean)} is outside the pod's eight volumes ({MOUNTS})")
    return clean


def shown(path: str, limit: int = 200) -> str:
    """A path as a one-line sentence shows it: a control character (a newline in a name) as
    its escape, and at most `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in path[: limit + 1])
    return text[:limit] + ("…" if len(path) > limit else "")


def mount_of(path: str) -> str | None:
    """The mount a pod path lies in, or None (`/`, `/usr`)."""
    for mount in VOLUME_MOUNTS.values():
        if path == mount or path.startswith(mount + "/"):
            return mount
    return None


def mtime_utc(seconds: int | None) -> datetime | None:
    """A list's mtime as a UTC time; None when there is none or no calendar holds it (a pod
    can set a file's time to the year 30,000)."""
    try:
        return datetime.fromtimestamp(seconds, UTC) if seconds else None
    except (OverflowError, ValueError, OSError):
        return None


_indexes: OrderedDict[tuple[int, str, str], FileIndex] = OrderedDict()
_indexes_lock = threading.Lock()


def snapshot_for_files(*, pod_id: str, number: int | str) -> Snapshot:
    """Snapshot `number` of the pod, complete; otherwise one sentence."""
    pod = pod_get(pod_id=pod_id)
    # ASCII digits only: "²" passes isdigit() and fails int(), "１" reads as another number.
    if not re.fullmatch(r"[0-9]{1,18}", str(number)):
        raise InvalidInput(f"snapshot {str(number)[:40]!r} is not a snapshot number")
    snapshot = Snapshot.objects.select_related("pod").filter(pk=int(number)).first()
    if snapshot is None:
        raise NotFound(f"snapshot #{number} does not exist")
    if snapshot.pod_id != pod.pk:
        raise NotFound(f"snapshot #{number} is not a snapshot of pod {pod.pod_id}")
    if snapshot.status != Snapshot.Status.COMPLETE:
        raise InvalidInput(
            f"snapshot #{number} of pod {pod.pod_id} is {snapshot.status}: only a complete snapshot's files can be read"
        )
    return snapshot


def file_index(snapshot: Snapshot) -> FileIndex:
    """The snapshot's files, from its manifest in the store (read once per process)."""
    key = (snapshot.pk, snapshot.store_url, str(snapshot.finished_at))
    with _indexes_lock:
        if key in _indexes:
            _indexes.move_to_end(key)
            return _indexes[key]
    store = store_from_url(snapshot.store_url)
    try:
        # Decoded as json.loads decodes bytes, and let go of: the index is made from the text.
        text = _text(store.get_small(f"{snapshot.prefix}/manifest.json"))
        index = FileIndex(manifest_rows(text))
        del text
    except NoFileLists:
        raise InvalidInput(
            f"snapshot #{snapshot.pk} was taken before snapshots listed their files: its files cannot be "
            "browsed one by one (start the pod from it to get them back)"
        ) from None
    except ManifestShape:
        raise StoreError(
            f"snapshot #{snapshot.pk}'s manifest in the store lists its files in a shape not known here"
        ) from None
    except (ValueError, RecursionError, OverflowError) as exc:  # not JSON, not UTF-8, nested too deep
        raise StoreError(f"snapshot #{snapshot.pk}'s manifest in the store cannot be read: {first_line(exc)}") from None
    with _indexes_lock:
        _indexes[key] = index
        _indexes.move_to_end(key)  # another thread may have made it meanwhile: this one is the newest
        while len(_indexes) > 1 and (
            len(_indexes) > KEPT_INDEXES or sum(len(kept) for kept in _indexes.values()) - len(index) > KEPT_ROWS
        ):
            _indexes.popitem(last=False)
    return index


def _text(raw: bytes) -> str:
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def snapshot_entries(*, pod_id: str, number: int | str, path: str = "/", query: str = "") -> list[Entry]:
    """What is at `path` in the snapshot (see `FileIndex.entries`)."""
    snapshot = snapshot_for_files(pod_id=pod_id, number=number)
    path = path_normalise(path)
    index = file_index(snapshot)
    row = index.file(path)
    if row is not None:
        return [Entry(row.path, "file", row.size, row.mtime)]
    if path != "/" and not index.span(path):
        raise NotFound(not_in_snapshot(snapshot, path))
    return index.entries(path, query)


def not_in_snapshot(snapshot: Snapshot, path: str) -> str:
    return (
        f"{shown(path)} is not in snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id} "
        "(it lists regular files: empty folders, links and special files are not in it)"
    )


@dataclass(frozen=True)
class Selection:
    """What a path names in a snapshot: one file, or a folder's files."""

    snapshot: Snapshot
    path: str
    rows: list[FileRow]
    is_folder: bool

    @property
    def bytes(self) -> int:
        return sum(row.size for row in self.rows)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) or f"snapshot-{self.snapshot.pk}"


def snapshot_select(*, pod_id: str, number: int | str, path: str) -> Selection:
    snapshot = snapshot_for_files(pod_id=pod_id, number=number)
    path = path_normalise(path)
    index = file_index(snapshot)
    row = index.file(path)
    if row is not None:
        return Selection(snapshot, path, [row], False)
    rows = index.under(path)
    if not rows:
        raise NotFound(not_in_snapshot(snapshot, path))
    return Selection(snapshot, path, rows, True)


# --- reading bytes -----------------------------------------------------------------------


def _located(store: SnapshotStore, key: str, row: FileRow) -> int:
    """Where an old list's file (no offset recorded) begins: found by walking its volume's tar."""
    walk = TarFileList(hash_files=False)
    stream = store.read(key)
    try:
        for chunk in stream:
            walk.feed(chunk)
            for entry in walk.files:
                if entry[0] == row.tar_path:
                    return entry[4]
            walk.files.clear()
    finally:
        stream.close()
    raise StoreError(f"{shown(row.path)} is not in {store.url}/{key}")


def _verified(chunks: Iterable[bytes], row: FileRow, snapshot: Snapshot) -> Iterator[bytes]:
    """The chunks, hashed on the way; the last one only once size and sha256 match the list,
    and never a byte past the listed size (a tar built around it stays what it says)."""
    digest, count, held = hashlib.sha256(), 0, None
    for chunk in chunks:
        digest.update(chunk)
        count += len(chunk)
        if count > row.size:
            raise StoreError(
                f"{shown(row.path)} in snapshot #{snapshot.pk} reads back longer than the "
                f"{humanize_bytes(row.size)} the snapshot lists: the store's copy is damaged, nothing past it was used"
            )
        if held is not None:
            yield held
        held = chunk
    if count != row.size or digest.hexdigest() != row.sha256:
        raise StoreError(
            f"{shown(row.path)} in snapshot #{snapshot.pk} reads back as {humanize_bytes(count)} with sha256 "
            f"{digest.hexdigest()[:12]}…, but the snapshot lists {humanize_bytes(row.size)} with sha256 "
            f"{row.sha256[:12]}…: the store's copy is damaged, nothing of it was used"
        )
    if held is not None:
        yield held


def _store_for(snapshot: Snapshot) -> SnapshotStore:
    store = store_from_url(snapshot.store_url)
    store.remember(snapshot.manifest)
    return store


def _key(snapshot: Snapshot, row: FileRow) -> str:
    entry = (snapshot.manifest or {}).get(row.volume)
    if not entry or not entry.get("key"):
        raise StoreError(f"snapshot #{snapshot.pk} has no object for volume {row.volume}")
    return entry["key"]


def file_read(selection: Selection, row: FileRow | None = None) -> Iterator[bytes]:
    """One file's bytes, checked against the list's sha256 as they pass."""
    row = row or selection.rows[0]
    store = _store_for(selection.snapshot)
    key = _key(selection.snapshot, row)
    if isinstance(store, DedupStore) and key in store.folders:  # kept as a folder: the file alone
        return _verified(store.read_file(key, row.tar_path), row, selection.snapshot)
    offset = row.offset if row.offset is not None else _located(store, key, row)
    return _verified(store.read_range(key, offset, row.size), row, selection.snapshot)


def _rows_read(selection: Selection) -> Iterator[tuple[FileRow, Iterator[bytes]]]:
    """Each file of the selection with its (checked) bytes, in the order its volume holds them:
    a store that reads ranges reads each on its own; a deduplicating one streams each volume
    once, from its start to its last selected file."""
    store = _store_for(selection.snapshot)
    by_volume: dict[str, list[FileRow]] = {}
    for row in selection.rows:
        by_volume.setdefault(row.volume, []).append(row)
    for volume_rows in by_volume.values():
        # A few files of a volume kept as a folder: each alone (a restic process each).
        alone = isinstance(store, DedupStore) and _key(selection.snapshot, volume_rows[0]) in store.folders
        if store.ranged or any(row.offset is None for row in volume_rows) or (alone and len(volume_rows) <= 4):
            for row in volume_rows:
                yield row, file_read(selection, row)
            continue
        volume_rows.sort(key=lambda row: row.offset)
        stream = store.read(_key(selection.snapshot, volume_rows[0]))
        try:
            yield from _cut(stream, volume_rows, selection.snapshot)
        finally:
            stream.close()


def _cut(stream: Iterator[bytes], rows: list[FileRow], snapshot: Snapshot) -> Iterator[tuple[FileRow, Iterator]]:
    """Cut each row's bytes (sorted by offset) out of one pass over the volume's tar; each
    row's bytes are read to their end before the next row's."""
    buffer = bytearray()
    at = 0  # the stream position of buffer[0]

    def fill(row: FileRow) -> None:
        chunk = next(stream, None)
        if chunk is None:
            raise StoreError(f"the volume's archive ends before {shown(row.path)} does")
        buffer.extend(chunk)

    def take(row: FileRow) -> Iterator[bytes]:
        nonlocal at
        while at + len(buffer) < row.offset:  # what lies before the file goes unread by anyone
            at += len(buffer)
            buffer.clear()
            fill(row)
        del buffer[: row.offset - at]
        at, left = row.offset, row.size
        while left:
            if not buffer:
                fill(row)
            piece = bytes(buffer[:left])
            del buffer[: len(piece)]
            at += len(piece)
            left -= len(piece)
            yield piece

    for row in rows:
        yield row, _verified(take(row), row, snapshot)


def folder_tar(selection: Selection) -> Iterator[bytes]:
    """The selection as a tar stream (made here, one file at a time, never whole in memory):
    a file as itself, a folder's files under a folder named after it, with sizes and mtimes."""
    base = selection.path.rstrip("/") + "/"
    for row, chunks in _rows_read(selection):
        name = f"{selection.name}/{row.path[len(base) :]}" if selection.is_folder else selection.name
        yield from _member(name, row, chunks)
    yield bytes(2 * BLOCK)


def _member(name: str, row: FileRow, chunks: Iterator[bytes]) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = row.size, 0o644, row.mtime or 0
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    yield from chunks
    if row.size % BLOCK:
        yield bytes(BLOCK - row.size % BLOCK)

"""What a stop into a deduplicating store does not redo for a volume that has not changed
since the pod's last snapshot, and what it always does.

- **Nothing written.** Each volume's stream is recorded as the digests of its consecutive
  blocks (`blocks`: 8 MiB each for the first 1,000, doubling every 1,000 like S3 parts). A
  volume that the pod's last snapshot in the store (its `reference`) holds is first read only
  to compare: block by block against the reference's digests, as it streams, writing nothing.
  If every block matches and the stream ends at the same size, the new manifest points at the
  object already stored (`reused`): no restic process, no new chunk. At the first block that
  differs (or a stream longer than the old one) the comparison stops and the volume is read
  again from its start into a restic backup, as any changed volume is.
- **Everything read back.** Reuse saves the write, never the read-back: before any volume is
  removed, the stop reads back every object the new snapshot points at, reused ones and those
  written as chunks the store already held (`new_chunks == 0`) included, and matches its size
  and sha256. A digest recorded when an object was written proves nothing about the object
  now: a pack that decayed since would otherwise be the only copy left once the volumes go.
  A copy that does not read back fails the stop with every volume kept (see
  `snapshotting._readback_failure`).

Both record `same_as: <reference>` in the manifest (what the log tells). While any complete
snapshot of the store has failed its last re-read there is no reference, and every volume is
written. A purge keeps the objects a later snapshot still points at (`purge_keys`).
"""

import gc
import hashlib

from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot
from apps.pods.snapshots import part_size
from apps.pods.stores.base import SnapshotStore
from apps.pods.stores.dedup import DedupStore
from apps.pods.stores.tarlist import TarFileList
from controlpanel.errors import PanelError
from controlpanel.threads import started

# The first block's size; it doubles every BLOCKS_PER_STEP blocks (a 1 TiB volume: ~8,000).
BLOCK_SIZE = 8 * 1024 * 1024
BLOCKS_PER_STEP = 1000
# A block's digest: the first 128 bits of its sha256 (what it takes to pass one off as another
# is a second preimage, 2^128 work), as hex.
DIGEST_CHARS = 32


class Blocks:
    """The digests of a stream's consecutive blocks, as it is fed."""

    def __init__(self):
        self.digests: list[str] = []
        self._hash = hashlib.sha256()
        self._left = part_size(1, first=BLOCK_SIZE, per_step=BLOCKS_PER_STEP)
        self._fed = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            take = view[: self._left]
            self._hash.update(take)
            self._fed = True
            self._left -= len(take)
            view = view[len(take) :]
            if not self._left:
                self.digests.append(self._hash.hexdigest()[:DIGEST_CHARS])
                self._hash, self._fed = hashlib.sha256(), False
                self._left = part_size(len(self.digests) + 1, first=BLOCK_SIZE, per_step=BLOCKS_PER_STEP)

    def finish(self) -> list[str]:
        if self._fed:
            self.digests.append(self._hash.hexdigest()[:DIGEST_CHARS])
            self._hash, self._fed = hashlib.sha256(), False
        return self.digests


# A tar ends with two 512-byte blocks of zeros; a stream cut short (a daemon killed while
# sending it) ends without them, and must not be stored as if it held the whole volume.
TAR_END = bytes(1024)


def volume_compare(*, engine: DockerEngine, container: str, mount_path: str, earlier: dict, counter, cancel):
    """Read one volume only to compare it, block by block, with `earlier` (the reference's
    entry, see `unchanged`): its manifest entry when every block matched, None at the first
    difference (the stream is let go at once)."""
    blocks, files, count, tail, checked = Blocks(), TarFileList(), 0, b"", 0
    read_whole = False
    chunks = iter(engine.archive_read(container=container, path=mount_path))
    try:
        for chunk in chunks:
            if cancel.is_set():
                raise PanelError("stopped: another volume of this snapshot failed")
            count += len(chunk)
            counter.add(len(chunk))
            if count > earlier["bytes"]:
                return None
            files.feed(chunk)
            blocks.feed(chunk)
            while checked < len(blocks.digests):  # each new block, once
                if checked >= len(earlier["blocks"]) or blocks.digests[checked] != earlier["blocks"][checked]:
                    return None
                checked += 1
            tail = (tail + chunk[-len(TAR_END) :])[-len(TAR_END) :]
        read_whole = True
    finally:
        if hasattr(chunks, "close"):
            chunks.close()  # lets the engine's stream go: the volume is read again from its start
        if not read_whole:
            # The daemon holds the container until the half-read response's socket closes,
            # and the next read of it waits for that. A reference cycle would keep the
            # response until the collector next runs (in a large process, many seconds).
            gc.collect()
    archive_complete(mount_path, count, tail, ended=files.ended)
    if count != earlier["bytes"] or blocks.finish() != earlier["blocks"]:
        return None
    entry = {
        "mount_path": mount_path,
        "bytes": count,
        "sha256": earlier["sha256"],  # every block of the same bytes matched
        "files": len(files.files),
        "key": earlier["key"],
        "etag": earlier.get("etag"),
        "stored_bytes": 0,
        "reused": True,
        "blocks": earlier["blocks"],
        "file_list": files.files,
    }
    if earlier.get("store_id"):
        entry["store_id"] = earlier["store_id"]
    return entry


class ArchiveCut(PanelError):
    """An archive that came out of Docker without its end: never stored as the whole volume."""


def archive_complete(mount_path: str, count: int, tail: bytes, *, ended: bool = True) -> None:
    """`ended`: the walk of its headers met the end-of-archive marker where a header belongs. The
    tail alone is not enough: an archive cut inside a file of zeros (a running pod's file
    shrinking while Docker reads it) ends in 1,024 zero bytes too."""
    if count % 512 or tail != TAR_END or not ended:
        raise ArchiveCut(
            f"the archive of {mount_path} ended early, after {count} bytes (no end-of-archive marker): "
            "Docker stopped sending it; nothing was removed"
        )


def reference_for(*, pod: Pod, store: SnapshotStore) -> Snapshot | None:
    """The pod's last complete snapshot in this deduplicating store, to compare its volumes
    with. None when any complete snapshot in the store failed its last re-read: chunks are
    shared, so then every volume is written."""
    if not isinstance(store, DedupStore):
        return None
    complete = Snapshot.objects.filter(status=Snapshot.Status.COMPLETE, store_url=store.url)
    if complete.exclude(verify_error="").exists():
        return None
    return complete.filter(pod=pod).order_by("-finished_at", "-id").first()


class Reusable:
    """The reference's volumes: each may be reused by a volume that streams the same bytes,
    if its object is in the store. That is asked once (one listing), on a thread of its own
    while the container stops and the first volumes stream."""

    def __init__(self, *, store: SnapshotStore, reference: Snapshot | None):
        self.entries: dict[str, dict] = {}
        if reference is not None and isinstance(store, DedupStore):
            self.entries = {
                name: entry
                for name, entry in (reference.manifest or {}).items()
                if isinstance(entry, dict) and entry.get("key") and entry.get("sha256") and entry.get("blocks")
            }
        self._listing = None
        if self.entries:
            keys = [entry["key"] for entry in self.entries.values()]
            self._listing = started(store.keys_present, keys, name="reusable")

    def get(self, name: str) -> dict | None:
        return self.entries.get(name)

    def present(self, key: str) -> bool:
        """The object is in the store now (a store that cannot list fails the stop: it says why)."""
        return self._listing is not None and key in self._listing.result()


def same_as_reference(manifest: dict, reference: Snapshot | None) -> None:
    """Mark each volume whose stream is, byte for byte, one `reference` holds: kept as its
    object (`reused`), or written and found by restic as chunks it already held
    (`new_chunks == 0`). Only a label for the log: every object is read back all the same."""
    if reference is None:
        return
    for name, entry in manifest.items():
        earlier = (reference.manifest or {}).get(name) or {}
        if entry.get("reused") or (
            entry.get("new_chunks") == 0
            and earlier.get("bytes") == entry["bytes"]
            and earlier.get("sha256") == entry["sha256"]
        ):
            entry["same_as"] = reference.pk


def purge_keys(snapshot: Snapshot) -> tuple[set[str], set[str]]:
    """(keep, also) for purging `snapshot`: its objects a live snapshot of the pod still points
    at stay; the older objects it pointed at that nothing else needs go with it."""
    others = (
        Snapshot.objects.filter(pod_id=snapshot.pod_id, store_url=snapshot.store_url)
        .exclude(status=Snapshot.Status.DELETED)
        .exclude(pk=snapshot.pk)
        .values_list("manifest", flat=True)
    )
    needed = set().union(*(manifest_keys(manifest) for manifest in others))
    return needed, manifest_keys(snapshot.manifest) - needed


def manifest_keys(manifest: dict | None) -> set[str]:
    """The store keys a snapshot's manifest points at (its own objects, or older ones it reuses)."""
    return {e["key"] for e in (manifest or {}).values() if isinstance(e, dict) and e.get("key")}

"""What a stop into a deduplicating store does not redo for a volume that has not changed
since the pod's last snapshot.

- **Nothing written.** A volume whose last snapshot is in the store (its `reference`) is
  first spooled to a local file while it streams and is hashed. If it ends with the same size
  and sha256, the new manifest points at the object already stored (`reused`): no restic
  process, no new chunk, and nothing to read back. If it differs (it grows past the old size,
  ends with another sha256, outgrows `SNAPSHOT_SPOOL_BYTES`, or the local disk is full), the
  spooled bytes and the rest go to a restic backup as usual.
- **Nothing read back twice.** A volume that was written but whose bytes equal the
  reference's, and of which restic stored no new chunk, is the same chunks the reference
  read back and checked when it was taken (restic names a chunk by the SHA-256 of its content
  and cuts the same bytes the same way in one repository): it is not read back again.

Either records `verified_as: <reference>` in the manifest. What can decay in between is the
scheduled re-read's job: while any complete snapshot of the store has failed its last re-read,
there is no reference, and every volume is written and read back. A purge keeps the objects
a later snapshot still points at (`purge_keys`).
"""

import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from apps.pods.models import Pod, Snapshot
from apps.pods.stores.base import CHUNK_SIZE, ObjectWriter, SnapshotStore
from apps.pods.stores.dedup import DedupStore


def reference_for(*, pod: Pod, store: SnapshotStore) -> Snapshot | None:
    """The pod's last complete snapshot in this deduplicating store, whose volumes were read
    back from the store when it was taken. None when any complete snapshot in the store failed
    its last re-read: chunks are shared, so then every volume is written and read back."""
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
        if reference is not None and settings.SNAPSHOT_SPOOL_BYTES > 0 and isinstance(store, DedupStore):
            self.entries = {
                name: entry
                for name, entry in (reference.manifest or {}).items()
                if isinstance(entry, dict) and entry.get("key") and entry.get("sha256")
            }
        self._listing = None
        if self.entries:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reusable")
            self._listing = pool.submit(store.keys_present, [entry["key"] for entry in self.entries.values()])
            pool.shutdown(wait=False)

    def get(self, name: str) -> dict | None:
        return self.entries.get(name)

    def present(self, key: str) -> bool:
        """The object is in the store now (a store that cannot list fails the stop: it says why)."""
        return self._listing is not None and key in self._listing.result()


def verified_by_reference(manifest: dict, reference: Snapshot | None) -> None:
    """Mark each written volume whose stream is, byte for byte, one `reference` already read
    back, and of which restic found every chunk in the store (`new_chunks == 0`)."""
    if reference is None:
        return
    for name, entry in manifest.items():
        earlier = (reference.manifest or {}).get(name) or {}
        if (
            entry.get("new_chunks") == 0
            and earlier.get("bytes") == entry["bytes"]
            and earlier.get("sha256") == entry["sha256"]
        ):
            entry["verified_as"] = reference.pk


class Sink:
    """Where one volume's bytes go: a local spool while they may equal `earlier` (the
    reference's entry for the volume), else the store's writer."""

    def __init__(self, *, take_writer, key: str, earlier: dict | None, present: Callable[[str], bool]):
        self.take_writer, self.key, self.earlier, self.present = take_writer, key, earlier, present
        self.writer: ObjectWriter | None = None
        self.spool = None
        self.spooled = 0
        if earlier is not None:
            self.limit = min(settings.SNAPSHOT_SPOOL_BYTES, int(earlier["bytes"]))
            try:
                folder = Path(settings.VAR_DIR) / "spool"
                folder.mkdir(parents=True, exist_ok=True)
                self.spool = tempfile.TemporaryFile(dir=folder, prefix="volume-")  # noqa: SIM115 - closed below
            except OSError:
                self.spool = None  # no local room: straight to the store
        if self.spool is None:
            self.writer = take_writer(key)

    def write(self, chunk: bytes) -> None:
        if self.spool is not None:
            if self.spooled + len(chunk) <= self.limit:
                try:
                    self.spool.write(chunk)
                    self.spooled += len(chunk)
                    return
                except OSError:
                    pass  # the local disk is full: the store takes it from here
            self._to_writer()
        self.writer.write(chunk)

    def _to_writer(self) -> None:
        """The volume changed (or cannot be spooled): the store gets what was spooled, then the rest."""
        spool, self.spool = self.spool, None
        self.writer = self.take_writer(self.key)
        try:
            spool.seek(0)
            remaining = self.spooled
            while remaining:
                piece = spool.read(min(CHUNK_SIZE, remaining))
                if not piece:
                    raise OSError(f"the local spool of {self.key} lost bytes")
                self.writer.write(piece)
                remaining -= len(piece)
        finally:
            spool.close()

    def close(self, *, count: int, sha256: str) -> dict:
        """Finish the volume; returns what the manifest entry takes from where it went."""
        if self.spool is not None:
            same = count == self.earlier["bytes"] and sha256 == self.earlier["sha256"]
            if same and self.present(self.earlier["key"]):
                self.spool.close()
                self.spool = None
                kept = {"key": self.earlier["key"], "etag": self.earlier.get("etag"), "stored_bytes": 0, "reused": True}
                if self.earlier.get("store_id"):
                    kept["store_id"] = self.earlier["store_id"]
                return kept
            self._to_writer()
        self.writer.close()
        entry = {"key": self.key, "etag": self.writer.expected_etag, "stored_bytes": self.writer.stored_bytes}
        if self.writer.store_id:
            entry["store_id"] = self.writer.store_id
        if self.writer.new_chunks is not None:
            entry["new_chunks"] = self.writer.new_chunks
        return entry

    def abort(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.writer is not None:
            self.writer.abort()


def purge_keys(snapshot: Snapshot) -> tuple[set[str], set[str]]:
    """(keep, also) for purging `snapshot`: its objects a live snapshot of the pod still points
    at stay; the older objects it pointed at that nothing else needs go with it."""
    others = (
        Snapshot.objects.filter(pod_id=snapshot.pod_id, store_url=snapshot.store_url)
        .exclude(status=Snapshot.Status.DELETED)
        .exclude(pk=snapshot.pk)
        .values_list("manifest", flat=True)
    )

    def keys(manifest) -> set[str]:
        return {e["key"] for e in (manifest or {}).values() if isinstance(e, dict) and e.get("key")}

    needed = set().union(*(keys(manifest) for manifest in others))
    return needed, keys(snapshot.manifest) - needed

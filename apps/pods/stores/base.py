"""What every snapshot store promises: write a stream, read it back as a stream, prove an
object holds exactly what was sent, delete a snapshot's keys, and say (when it can) how much
room it has left, so a stop that cannot fit is refused before the container is stopped."""

import hashlib
from collections.abc import Iterator

from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes

CHUNK_SIZE = 1024 * 1024


class StoreError(PanelError):
    """The store refused, lost an object, or answered with other bytes than were sent."""


class StoreFull(StoreError):
    """The store has no room for the snapshot: an expected refusal (operation `failed`)."""


def volume_of(key: str) -> str:
    """`pod/12/home.tar` → `home`: what a person calls the object that did not fit."""
    return key.rsplit("/", 1)[-1].removesuffix(".tar")


def store_full(url: str, key: str, written: int) -> StoreFull:
    return StoreFull(
        f"snapshot store {url} is full: volume {volume_of(key)} stopped after {humanize_bytes(written)} "
        "written; the pod's volumes are kept. Make room in the store (or point SNAPSHOT_STORE_URL at a "
        "bigger one) and stop the pod again"
    )


class ObjectWriter:
    """Write one object as a stream. `close()` makes it visible; `abort()` leaves nothing.
    After `close()`, `expected_etag` may say what the store's own checksum must read,
    `stored_bytes` how many bytes the object added to the store, and `store_id` the
    store's own name for it (a restic snapshot id), and `new_chunks` how many of its chunks
    were not in a deduplicating store before (None: the store does not deduplicate)."""

    expected_etag: str | None = None
    stored_bytes: int | None = None
    store_id: str | None = None
    new_chunks: int | None = None

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class SnapshotStore:
    url: str
    # A writer takes a while to start (a process deriving a key): make the next one early.
    slow_writer_start = False

    def writer(self, key: str) -> ObjectWriter:
        raise NotImplementedError

    def read(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError

    # Reads a byte range of an object without the bytes before it (a seek, an S3 range GET).
    ranged = False

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        """`length` bytes of the object from byte `start`. A store that can only stream an
        object from its beginning (restic dumps a volume's whole tar) reads up to them, and
        lets go of the rest (its reader stops)."""
        if length <= 0:
            return
        stream = self.read(key)
        at, left = 0, length
        try:
            for chunk in stream:
                end = at + len(chunk)
                if end > start:
                    piece = chunk[max(0, start - at) :][:left]
                    left -= len(piece)
                    yield piece
                    if not left:
                        break  # the rest of the object is never read
                at = end
        finally:
            stream.close()
        if left > 0:
            raise StoreError(f"{self.url}/{key} ends before byte {start + length}")

    def remember(self, manifest: dict) -> None:
        """Learn the store's own names of a snapshot's objects (`store_id` in its manifest), so
        reading them needs no lookup first."""

    def size(self, key: str) -> int | None:
        raise NotImplementedError

    def free_bytes(self) -> int | None:
        """Room left in the store, or None when it cannot tell (S3)."""
        return None

    def preflight(self, *, needed_bytes: int | None, what: str) -> None:
        """Refuse, before anything is touched, a write of `needed_bytes` (the last measured
        sizes) that cannot fit. A store that cannot tell its free space lets it through:
        a full store then fails the write with `StoreFull` and nothing is removed."""
        free = self.free_bytes()
        if needed_bytes is not None and free is not None and needed_bytes > free:
            raise StoreFull(
                f"snapshot store {self.url} has {humanize_bytes(free)} free; {what} needs about "
                f"{humanize_bytes(needed_bytes)} (its last measured size), so it was refused before "
                "anything was stopped. Make room in the store or point SNAPSHOT_STORE_URL at a bigger one"
            )

    def put_small(self, key: str, body: bytes, writer: ObjectWriter | None = None) -> int | None:
        """Write a small object (through `writer` when one was made ahead for it); returns the
        bytes it added to the store."""
        writer = writer or self.writer(key)
        try:
            writer.write(body)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return writer.stored_bytes

    def get_small(self, key: str) -> bytes:
        return b"".join(self.read(key))

    def verify(self, key: str, *, expected_bytes: int, expected_sha256: str, expected_etag: str | None = None) -> None:
        """Read the object back and compare size and sha256; raise StoreError on any difference."""
        digest = hashlib.sha256()
        count = 0
        for chunk in self.read(key):
            digest.update(chunk)
            count += len(chunk)
        if count != expected_bytes or digest.hexdigest() != expected_sha256:
            raise StoreError(
                f"{self.url}/{key} holds {count} bytes (sha256 {digest.hexdigest()[:12]}…), "
                f"expected {expected_bytes} bytes (sha256 {expected_sha256[:12]}…)"
            )

    def delete_prefix(self, prefix: str, *, reclaim: bool = True) -> int:
        """Delete every object under `prefix/`; returns the bytes removed. `reclaim=False`
        lets a deduplicating store leave the reclaiming of shared chunks for later."""
        raise NotImplementedError

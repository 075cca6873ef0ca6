"""Snapshot stores: where volume tars go. `file://` (default), `s3://bucket/prefix`, and the
deduplicated `dedup+file:///path` and `dedup+s3://bucket/prefix` (restic; `stores.dedup`).

A store writes a stream (never a whole volume in memory or in a temp copy), reads it back
as a stream, proves an object holds exactly what was sent, and deletes a snapshot's keys.
The interface is `stores.base`, the file store `stores.files`; S3 lives here.

S3 part sizes grow with the stream, so one volume can reach S3's 5 TiB object limit within
its 10,000 parts while memory stays bounded by PARTS_IN_FLIGHT × the current part size:

    parts     1–1,000: 8 MiB   (the first 7.8 GiB of a volume; memory ≤ 32 MiB)
    parts 1,001–2,000: 16 MiB  (to 23 GiB;  ≤ 64 MiB)
    parts 2,001–3,000: 32 MiB  (to 55 GiB;  ≤ 128 MiB)
    …doubling every 1,000 parts…
    parts 9,001–10,000: 4 GiB  (to 8 TiB;   ≤ 16 GiB, only past 4 TiB into one volume)

`part_size(n)` is the schedule; the largest part stays under S3's 5 GiB.
"""

import base64
import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings

from apps.pods.stores.base import CHUNK_SIZE, ObjectWriter, SnapshotStore, StoreError, StoreFull
from apps.pods.stores.dedup import DedupStore
from apps.pods.stores.files import FileStore
from controlpanel.errors import InvalidInput, PanelError, Unreachable
from controlpanel.s3 import s3_client, s3_error

__all__ = [
    "CHUNK_SIZE",
    "DedupStore",
    "FileStore",
    "ObjectWriter",
    "S3Store",
    "SnapshotStore",
    "StoreError",
    "StoreFull",
    "part_size",
    "store_from_url",
]

# S3's rules: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 of them,
# objects up to 5 TiB.
S3_MAX_PARTS = 10_000
S3_MAX_PART_SIZE = 5 * 1024**3
S3_MAX_OBJECT_SIZE = 5 * 1024**4
# The first part's size (tests lower it to S3's 5 MiB); it doubles every PARTS_PER_STEP parts.
PART_SIZE = 8 * 1024 * 1024
PARTS_PER_STEP = 1000
PARTS_IN_FLIGHT = 4


def part_size(number: int, *, first: int | None = None, per_step: int | None = None) -> int:
    """The size of part `number` (1-based) of a multipart upload."""
    first = first or PART_SIZE
    per_step = per_step or PARTS_PER_STEP
    return min(S3_MAX_PART_SIZE, first << ((number - 1) // per_step))


# --- s3:// -----------------------------------------------------------------------------


def _store_error(store: "S3Store", key: str, exc: Exception) -> PanelError:
    """S3's failure, told as the snapshot store's: out of reach stays Unreachable; any
    refusal (a missing bucket included) is a StoreError naming the store and the key."""
    error = s3_error(exc, where=f"snapshot store {store.url}", what=key)
    return error if isinstance(error, Unreachable) else StoreError(error.message)


class _S3Writer(ObjectWriter):
    """Multipart upload fed chunk by chunk. Parts go up on a background thread while the
    caller keeps reading the next one; at most PARTS_IN_FLIGHT parts are held in memory,
    each of `part_size(n)` bytes."""

    def __init__(self, store: "S3Store", key: str):
        self.store = store
        self.key = key
        self.full_key = store.full_key(key)
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.futures: list[Future] = []
        self.pool: ThreadPoolExecutor | None = None
        # Shared by every writer of this store: parts in memory stay bounded however many
        # volumes stream at once.
        self.slots = store.part_slots
        # What the store's ETag must be if it holds exactly the bytes sent (see S3Store.verify).
        self.expected_etag: str | None = None
        self.sent = 0

    def _upload_part(self, number: int, body: bytes) -> dict:
        try:
            # Hashed here, on the upload thread (hashlib releases the GIL): the reading
            # thread only reads and computes the sha256.
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            # Content-MD5: the store checks the part as it arrives (BadDigest otherwise), and
            # the header, being signed, binds the body to the request's signature.
            answer = self.store.client.upload_part(
                Bucket=self.store.bucket,
                Key=self.full_key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=base64.b64encode(md5).decode(),
            )
            return {"PartNumber": number, "ETag": answer["ETag"], "md5": md5}
        finally:
            self.slots.release()

    def _send_part(self, body: bytes) -> None:
        client = self.store.client
        if self.upload_id is None:
            self.upload_id = client.create_multipart_upload(Bucket=self.store.bucket, Key=self.full_key)["UploadId"]
            self.pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        self.slots.acquire()
        try:
            for done in [f for f in self.futures if f.done()]:
                done.result()  # an earlier part failed: stop feeding this upload
        except BaseException:
            # No part takes this slot: without the release, the store's other writers would
            # run with one slot fewer, and with every slot lost, wait forever.
            self.slots.release()
            raise
        self.futures.append(self.pool.submit(self._upload_part, len(self.futures) + 1, body))

    def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        try:
            while len(self.buffer) >= (size := part_size(len(self.futures) + 1)):
                if len(self.futures) >= S3_MAX_PARTS - 1:
                    raise StoreError(f"{self.store.url}/{self.key} would pass S3's {S3_MAX_PARTS} parts")
                body = bytes(memoryview(self.buffer)[:size])
                del self.buffer[:size]
                self._send_part(body)
                self.sent += size
        except Exception as exc:
            raise _store_error(self.store, self.key, exc) from exc

    def close(self) -> None:
        client = self.store.client
        try:
            if self.upload_id is None:
                # Smaller than one part: a single PUT.
                body = bytes(self.buffer)
                md5 = hashlib.md5(body, usedforsecurity=False)
                client.put_object(
                    Bucket=self.store.bucket,
                    Key=self.full_key,
                    Body=body,
                    ContentMD5=base64.b64encode(md5.digest()).decode(),
                )
                self.expected_etag = md5.hexdigest()
                self.stored_bytes = len(body)
                return
            if self.buffer:
                self.sent += len(self.buffer)
                self._send_part(bytes(self.buffer))
                self.buffer.clear()
            parts = [future.result() for future in self.futures]
            client.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=self.full_key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]},
            )
            combined = hashlib.md5(b"".join(p["md5"] for p in parts), usedforsecurity=False).hexdigest()
            self.expected_etag = f"{combined}-{len(parts)}"
            self.stored_bytes = self.sent
        except Exception as exc:
            raise _store_error(self.store, self.key, exc) from exc
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.buffer.clear()
        if self.pool is not None:
            for future in self.futures:
                future.cancel()
            self.pool.shutdown(wait=True)
        if self.upload_id is None:
            return
        try:
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.full_key, UploadId=self.upload_id
            )
        except Exception:  # noqa: S110 - the store is failing: purging the failed snapshot aborts it later
            pass


class S3Store(SnapshotStore):
    def __init__(self, url: str, bucket: str, prefix: str):
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_slots = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def client(self):
        # One client per store, shared by the streaming threads (boto3 clients are thread-safe).
        with self._client_lock:
            if self._client is None:
                self._client = s3_client(max_pool_connections=PARTS_IN_FLIGHT + 2)
        return self._client

    def verify(self, key: str, *, expected_bytes: int, expected_sha256: str, expected_etag: str | None = None) -> None:
        """The store's own checksum of what it holds (the ETag: MD5 of a single PUT, or the
        MD5 of the part MD5s of a multipart upload) must equal what we computed over the very
        bytes we hashed with sha256 and sent. A store whose ETags are not MD5-based (some
        encryption modes) gets a full read-back and sha256 comparison instead."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as exc:
            raise _store_error(self, key, exc) from exc
        if head["ContentLength"] != expected_bytes:
            raise StoreError(f"{self.url}/{key} holds {head['ContentLength']} bytes, expected {expected_bytes}")
        etag = head.get("ETag", "").strip('"')
        if expected_etag and etag == expected_etag:
            return
        if expected_etag and _md5_shaped(etag):
            raise StoreError(f"{self.url}/{key} checksum {etag} differs from the {expected_etag} that was sent")
        super().verify(key, expected_bytes=expected_bytes, expected_sha256=expected_sha256)

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self, key)

    def read(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))["Body"]
            yield from body.iter_chunks(CHUNK_SIZE)
        except Exception as exc:
            raise _store_error(self, key, exc) from exc

    ranged = True

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        """One range GET (`Range: bytes=start-end`): only those bytes leave the store."""
        if length <= 0:
            return
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.full_key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            got = 0
            for chunk in answer["Body"].iter_chunks(CHUNK_SIZE):
                got += len(chunk)
                yield chunk
        except Exception as exc:
            raise _store_error(self, key, exc) from exc
        if got != length:
            raise StoreError(f"{self.url}/{key} answered {got} bytes for a range of {length} from byte {start}")

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise _store_error(self, key, exc) from exc
        except Exception as exc:
            raise _store_error(self, key, exc) from exc

    def delete_prefix(self, prefix: str, *, reclaim: bool = True) -> int:
        """Also aborts unfinished multipart uploads under the prefix: a snapshot that failed
        while the store was failing could not abort its own (the abort failed too, or the
        store started an upload whose id never reached us), and S3 keeps, and bills, their
        parts until someone does."""
        removed = 0
        try:
            uploads = self.client.get_paginator("list_multipart_uploads")
            for page in uploads.paginate(Bucket=self.bucket, Prefix=self.full_key(prefix) + "/"):
                for upload in page.get("Uploads") or []:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.full_key(prefix) + "/"):
                objects = page.get("Contents") or []
                if not objects:
                    continue
                removed += sum(obj["Size"] for obj in objects)
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": obj["Key"]} for obj in objects], "Quiet": True}
                )
        except Exception as exc:
            raise _store_error(self, prefix, exc) from exc
        return removed


def _md5_shaped(etag: str) -> bool:
    head, _, parts = etag.partition("-")
    return len(head) == 32 and all(c in "0123456789abcdef" for c in head) and (not parts or parts.isdigit())


def store_from_url(url: str | None = None) -> SnapshotStore:
    url = url or settings.SNAPSHOT_STORE_URL
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = parsed.netloc + parsed.path
        root = Path(path)
        if not root.is_absolute():
            root = Path(settings.BASE_DIR) / root
        return FileStore(url, root)
    if parsed.scheme == "dedup+file":
        path = Path(parsed.netloc + parsed.path)
        return DedupStore(url, path=path if path.is_absolute() else Path(settings.BASE_DIR) / path)
    if parsed.scheme == "dedup+s3":
        if not parsed.netloc:
            raise InvalidInput(f"snapshot store {url!r} names no bucket: use dedup+s3://bucket/prefix")
        return DedupStore(url, bucket=parsed.netloc, prefix=parsed.path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInput(f"snapshot store {url!r} names no bucket: use s3://bucket/prefix")
        return S3Store(url, parsed.netloc, parsed.path)
    raise InvalidInput(
        f"snapshot store {url!r} is not supported: "
        "use file://PATH, s3://bucket/prefix, dedup+file://PATH or dedup+s3://bucket/prefix"
    )

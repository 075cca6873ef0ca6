"""Snapshot stores: where volume tars go. `file://` (default) and `s3://bucket/prefix`.

A store writes a stream (never a whole volume in memory or in a temp copy), reads it back
as a stream, proves an object holds exactly what was sent, and deletes a snapshot's keys.
"""

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings

from controlpanel.errors import InvalidInput, PanelError, Unreachable
from controlpanel.paths import resolve_inside
from controlpanel.s3 import s3_client, s3_error

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
# S3 parts: at least 5 MiB except the last; 8 MiB keeps memory flat and requests few.
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4


class StoreError(PanelError):
    """The store refused, lost an object, or answered with other bytes than were sent."""


class ObjectWriter:
    """Write one object as a stream. `close()` makes it visible; `abort()` leaves nothing.
    After `close()`, `expected_etag` may say what the store's own checksum must read."""

    expected_etag: str | None = None

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class SnapshotStore:
    url: str

    def writer(self, key: str) -> ObjectWriter:
        raise NotImplementedError

    def read(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        raise NotImplementedError

    def put_small(self, key: str, body: bytes) -> None:
        writer = self.writer(key)
        try:
            writer.write(body)
            writer.close()
        except BaseException:
            writer.abort()
            raise

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

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix/`; returns the bytes removed."""
        raise NotImplementedError


# --- file:// ---------------------------------------------------------------------------


class _FileWriter(ObjectWriter):
    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.partial, "wb")  # noqa: SIM115 - closed in close()/abort()

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        # Rename last: a reader never sees half an object under the real name.
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.handle.close()
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
            return _FileWriter(self._path(key))
        except OSError as exc:
            raise Unreachable(f"snapshot store {self.url} cannot be written: {exc}") from exc

    def read(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK_SIZE):
                    yield chunk
        except FileNotFoundError:
            raise StoreError(f"{self.url}/{key} is missing") from None

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def delete_prefix(self, prefix: str) -> int:
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
        if kept:
            logger.warning("left %d hard-linked files in %s/%s: %s", len(kept), self.url, prefix, kept[:5])
        return removed


# --- s3:// -----------------------------------------------------------------------------


def _store_error(store: "S3Store", key: str, exc: Exception) -> PanelError:
    """S3's failure, told as the snapshot store's: out of reach stays Unreachable; any
    refusal (a missing bucket included) is a StoreError naming the store and the key."""
    error = s3_error(exc, where=f"snapshot store {store.url}", what=key)
    return error if isinstance(error, Unreachable) else StoreError(error.message)


class _S3Writer(ObjectWriter):
    """Multipart upload fed chunk by chunk. Parts go up on a background thread while the
    caller keeps reading the next one; at most PARTS_IN_FLIGHT parts are held in memory."""

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

    def _upload_part(self, number: int, body: bytes) -> dict:
        try:
            # Hashed here, on the upload thread (hashlib releases the GIL): the reading
            # thread only reads and computes the sha256.
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            answer = self.store.client.upload_part(
                Bucket=self.store.bucket, Key=self.full_key, UploadId=self.upload_id, PartNumber=number, Body=body
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
            while len(self.buffer) >= PART_SIZE:
                body = bytes(memoryview(self.buffer)[:PART_SIZE])
                del self.buffer[:PART_SIZE]
                self._send_part(body)
        except Exception as exc:
            raise _store_error(self.store, self.key, exc) from exc

    def close(self) -> None:
        client = self.store.client
        try:
            if self.upload_id is None:
                # Smaller than one part: a single PUT.
                body = bytes(self.buffer)
                client.put_object(Bucket=self.store.bucket, Key=self.full_key, Body=body)
                self.expected_etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
                return
            if self.buffer:
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

    def delete_prefix(self, prefix: str) -> int:
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
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInput(f"snapshot store {url!r} names no bucket: use s3://bucket/prefix")
        return S3Store(url, parsed.netloc, parsed.path)
    raise InvalidInput(f"snapshot store {url!r} is not supported: use file://PATH or s3://bucket/prefix")

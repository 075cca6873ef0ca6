"""A restic 0.14 repository read here, without restic: its index, snapshot and tree files, and
any blob out of its packs, each checked as restic checks it (restic's design document,
"Repository Format"):

- a file of `index/` or `snapshots/` is named by the sha256 of its stored bytes, and a blob
  by the sha256 of its plain text: both are checked against their names;
- everything is sealed with the repository's keys (the working key opens them: `restic_working`)
  and opens only with its Poly1305-AES tag intact (`restic_crypto.open_sealed`);
- in a version 2 repository a file's plain text may begin with the byte 2 and be zstd-compressed,
  and a blob the index gives an `uncompressed_length` is.

Why: `restic dump`, restic 0.14's only way to read one snapshot's chunks, decrypts them one
after another on one core; here the chunks of one pack are read by one thread, and the packs
spread over every core (hashlib and the ciphers leave the GIL). Whatever this module cannot
read or does not understand raises `Unread`, and the caller asks restic instead: nothing here
is ever the last word on damage, only a faster way to a proof.
"""

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from apps.pods.stores import restic_crypto, restic_raw, restic_working
from controlpanel.s3 import s3_client

# Bounds on what a reader holds (its worker's peak RSS must stay under 200 MiB): past any of
# them, restic reads instead. An index file restic fills holds 150,000 blobs (about 20 MiB of
# JSON); each tree or chunk located here weighs about 330 bytes.
MOST_FILE_BYTES = 32 * 1024**2  # an index or snapshot file, stored or decompressed
MOST_BLOB_BYTES = 64 * 1024**2  # restic's chunker cuts at 8 MiB; a tree blob may be larger
MOST_TREES = 150_000  # trees in the whole repository, every pod's
MOST_TREE_CACHE_BYTES = 32 * 1024**2  # trees read and kept for the next folder that has them
SEALED_EXTRA = restic_crypto.NONCE_BYTES + 16  # nonce and tag around every sealed text


class Unread(Exception):
    """The repository could not be read or checked here; restic is asked instead."""


@dataclass(frozen=True, slots=True)
class Blob:
    """Where one blob is: its pack, where in it, how long there, and how long its plain text."""

    pack: str
    offset: int
    length: int
    plain_length: int
    compressed: bool


class Repository:
    """One restic repository, opened with the panel's working key."""

    def __init__(self, store, keys: restic_crypto.Keys, version: int):
        self.store, self.keys, self.version = store, keys, version
        self._client = s3_client() if store.path is None else None  # one, shared by the threads
        self._trees: dict[str, Blob] | None = None
        self._tree_packs: dict[str, list[str]] = {}  # pack → the trees in it
        self._data: dict[str, Blob] = {}
        self._tree_texts: OrderedDict[str, bytes] = OrderedDict()  # the last trees read, by bytes
        self._tree_bytes = 0
        self.ask: Callable[[], None] = lambda: None  # called between files and trees: may raise
        self.index_read: set[str] = set()  # the index files the locations came from

    @classmethod
    def opened(cls, store) -> "Repository":
        work = restic_working.working(store)
        if work is None:
            raise Unread("the panel has no working key for it")
        try:
            body = json.loads(restic_raw.file_bytes(store, f"keys/{work.key_id}", most=64 * 1024) or b"")
            keys = restic_crypto.master_keys(restic_crypto.key_file_open(body, work.password))
            config = json.loads(_opened(restic_raw.file_bytes(store, "config", most=64 * 1024) or b"", keys))
        except (ValueError, KeyError, TypeError) as exc:
            raise Unread(f"its key or config does not open here ({exc})") from exc
        version = config.get("version")
        if version not in (1, 2):
            raise Unread(f"repository version {version!r} is not one restic 0.14 writes")
        return cls(store, keys, version)

    # --- files -----------------------------------------------------------------------------

    def _file(self, folder: str, name: str) -> dict:
        """An index or snapshot file's JSON, its name and tag checked."""
        if not _hex_id(name):
            raise Unread(f"{folder}/{name!r} is not named as restic names its files")
        stored = restic_raw.file_bytes(self.store, f"{folder}/{name}", most=MOST_FILE_BYTES)
        if stored is None:
            raise Unread(f"{folder}/{name[:8]} is not there, or too large to read here")
        if hashlib.sha256(stored).hexdigest() != name:
            raise Unread(f"{folder}/{name[:8]} does not hash to its name")
        return json.loads(self._plain(_opened(stored, self.keys), what=f"{folder}/{name[:8]}"))

    def _plain(self, text: bytes, *, what: str) -> bytes:
        if text[:1] in (b"{", b"["):
            return text
        if self.version >= 2 and text[:1] == b"\x02":
            return _decompressed(text[1:], most=MOST_FILE_BYTES, what=what)
        raise Unread(f"{what} is in a format restic 0.14 does not write")

    def unchanged_since_read(self) -> None:
        """Unread when another restic may be moving chunks, now or since the index was read:
        an exclusive lock (a prune's) is there, or an index file read is gone (a prune
        replaces the index files before it deletes the packs it emptied, so a chunk read in an
        old pack may now be read by a restore from a new one nobody read). This reader takes
        no lock of its own: it asks before it reads and again once it has read everything."""
        for name in restic_raw.names(self.store, "locks"):
            if not _hex_id(name):
                continue
            stored = restic_raw.file_bytes(self.store, f"locks/{name}", most=64 * 1024)
            if stored is None:
                continue  # gone meanwhile: a restic that ended
            try:
                held = json.loads(self._plain(_opened(stored, self.keys), what=f"lock {name[:8]}"))
            except (Unread, ValueError):
                held = {"exclusive": True}  # not read here: as if exclusive, restic judges it
            if not isinstance(held, dict) or held.get("exclusive") is not False:
                raise Unread(f"an exclusive lock holds the repository (lock {name[:8]}, a prune's?)")
        if not self.index_read <= set(restic_raw.names(self.store, "index")):
            raise Unread("the repository's index changed while it was read (a prune?)")

    def snapshot(self, restic_id: str) -> dict:
        """A snapshot file, by its full id or a prefix only one file has."""
        found = [name for name in restic_raw.names(self.store, "snapshots") if name.startswith(restic_id)]
        if len(found) != 1:
            raise Unread(f"restic snapshot {restic_id[:8]} is not one file of the repository")
        return self._file("snapshots", found[0])

    def _scan(self, wanted, *, most: int | None = None) -> dict[str, Blob]:
        """The blobs of the index files that `wanted(blob)` keeps: each blob's first place in
        them (restic reads any copy). Only those are held: a large repository's index would
        weigh more than its reader may; Unread past `most` of them."""
        found: dict[str, Blob] = {}
        for name in restic_raw.names(self.store, "index"):
            self.index_read.add(name)
            self.ask()
            for pack in self._file("index", name).get("packs") or []:
                for blob in pack.get("blobs") or []:
                    if blob.get("id") not in found and wanted(blob):
                        found[blob["id"]] = _blob_at(pack["id"], blob)
            if most is not None and len(found) > most:
                raise Unread(f"more than {most:,} trees in the repository")
        return found

    def located(self, blob_ids=None) -> dict[str, Blob]:
        """Where each of these data blobs is (every data blob of the repository for None). A data
        blob only: restic reads a file's content as data, and a file whose bytes are a tree's
        text (an empty folder's `{"nodes":[]}`) has a tree blob of the same id beside it."""
        if blob_ids is None:
            self._data = self._scan(lambda blob: blob.get("type") == "data")
            return dict(self._data)
        missing = set(blob_ids) - set(self._data)
        if missing:
            self._data.update(self._scan(lambda blob: blob.get("type") == "data" and blob.get("id") in missing))
        return {blob_id: self._where(blob_id) for blob_id in blob_ids}

    # --- blobs -----------------------------------------------------------------------------

    def tree(self, tree_id: str) -> list[dict]:
        """A tree blob's nodes, read and checked; the last ones read are kept (every empty
        folder is the same tree). From S3, every tree of its pack comes in the same GET
        (restic packs trees together): one request per pack, not one per folder."""
        self.ask()
        if self._trees is None:
            self._trees = self._scan(lambda blob: blob.get("type") == "tree", most=MOST_TREES)
            for other, at in self._trees.items():
                self._tree_packs.setdefault(at.pack, []).append(other)
        plain = self._tree_texts.get(tree_id)
        if plain is None:
            where = self._trees.get(tree_id)
            if where is None:
                raise Unread(f"tree {tree_id[:8]} is in no index file")
            together = self._tree_packs[where.pack] if self._client is not None else [tree_id]
            order = sorted(together, key=lambda other: self._trees[other].offset)
            places = self._stored(where.pack, [self._trees[other] for other in order])
            for other, (at, stored) in zip(order, places, strict=True):
                try:
                    text = self._checked(where.pack, other, at, stored)
                except Unread:
                    if other == tree_id:
                        raise
                    continue  # another pod's tree, damaged or not: not this proof's to judge
                self._keep_tree(other, text)
                plain = text if other == tree_id else plain
        if tree_id in self._tree_texts:
            self._tree_texts.move_to_end(tree_id)
        return json.loads(plain).get("nodes") or []

    def _keep_tree(self, tree_id: str, text: bytes) -> None:
        if tree_id in self._tree_texts or len(text) > MOST_TREE_CACHE_BYTES:
            return
        self._tree_texts[tree_id] = text
        self._tree_bytes += len(text)
        while self._tree_bytes > MOST_TREE_CACHE_BYTES:
            _, gone = self._tree_texts.popitem(last=False)
            self._tree_bytes -= len(gone)

    def _where(self, blob_id: str) -> Blob:
        where = self._data.get(blob_id)
        if where is None:
            raise Unread(f"blob {blob_id[:8]} is in no index file")
        return where

    def read_pack(self, pack: str, wanted: list[tuple[str, Blob]]):
        """(blob id, plain text) of each wanted blob of one pack, in the pack's order, each checked:
        its tag, its length and the sha256 of its plain text against its id."""
        wanted = sorted(wanted, key=lambda item: item[1].offset)
        for blob_id, (where, stored) in zip(
            [blob_id for blob_id, _ in wanted], self._stored(pack, [where for _, where in wanted]), strict=True
        ):
            yield blob_id, self._checked(pack, blob_id, where, stored)

    def _checked(self, pack: str, blob_id: str, where: Blob, stored: bytes) -> bytes:
        """A blob's plain text once its tag, its length and its sha256 against its id are right."""
        try:
            text = restic_crypto.open_sealed(stored, self.keys)
        except ValueError as exc:
            raise Unread(f"blob {blob_id[:8]} in pack {pack[:8]} does not open: {exc}") from exc
        if where.compressed:
            text = _decompressed(text, most=where.plain_length, what=f"blob {blob_id[:8]}")
        if len(text) != where.plain_length or hashlib.sha256(text).hexdigest() != blob_id:
            raise Unread(f"blob {blob_id[:8]} in pack {pack[:8]} does not hash to its id")
        return text

    def _stored(self, pack: str, places: list[Blob]):
        """(place, stored bytes) of each place in one pack file, local or in S3."""
        name = f"data/{pack[:2]}/{pack}"
        if not _hex_id(pack):
            raise Unread(f"pack {pack!r} is not named as restic names its files")
        if self.store.path is not None:
            try:
                fd = os.open(self.store.path / name, os.O_RDONLY)
            except OSError as exc:
                raise Unread(f"pack {pack[:8]} does not open: {exc.strerror}") from exc
            try:
                for where in places:
                    stored = os.pread(fd, where.length, where.offset)
                    if len(stored) != where.length:
                        raise Unread(f"pack {pack[:8]} ends before blob at {where.offset}")
                    yield where, stored
            finally:
                os.close(fd)
            return
        # One ranged GET from the first wanted blob to the end of the last (a pack is a few MiB).
        first, end = places[0].offset, max(where.offset + where.length for where in places)
        key = f"{self.store.prefix}/{name}" if self.store.prefix else name
        try:
            body = self._client.get_object(Bucket=self.store.bucket, Key=key, Range=f"bytes={first}-{end - 1}")
            span = body["Body"].read()
        except Exception as exc:  # any S3 failure: restic reads it instead, in its own words
            raise Unread(f"pack {pack[:8]} does not read from S3: {exc}") from exc
        if len(span) != end - first:
            raise Unread(f"pack {pack[:8]} ends before its last wanted blob")
        for where in places:
            yield where, span[where.offset - first : where.offset - first + where.length]


def blobs_read(repository: Repository, blob_ids, *, threads: int | None = None):
    """Read and check every named data blob, packs spread over `threads` (every core); yields
    the plain bytes of each pack's blobs as that pack is done, in no particular order."""
    by_pack: dict[str, list[tuple[str, Blob]]] = {}
    for blob_id, where in repository.located(blob_ids).items():
        by_pack.setdefault(where.pack, []).append((blob_id, where))

    def one(pack: str) -> int:
        return sum(len(text) for _, text in repository.read_pack(pack, by_pack[pack]))

    with ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 2)) as pool:
        futures = [pool.submit(one, pack) for pack in by_pack]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _blob_at(pack: str, blob: dict) -> Blob:
    length, plain = int(blob["length"]), blob.get("uncompressed_length")
    if not 0 < length <= MOST_BLOB_BYTES + SEALED_EXTRA:
        raise Unread(f"blob {str(blob.get('id'))[:8]} is listed with {length} bytes")
    return Blob(
        pack=pack,
        offset=int(blob["offset"]),
        length=length,
        plain_length=int(plain) if plain is not None else length - SEALED_EXTRA,
        compressed=plain is not None,
    )


def _opened(stored: bytes, keys: restic_crypto.Keys) -> bytes:
    try:
        return restic_crypto.open_sealed(stored, keys)
    except ValueError as exc:
        raise Unread(f"a file does not open with the repository's key: {exc}") from exc


def _decompressed(data: bytes, *, most: int, what: str) -> bytes:
    """One zstd frame, as restic writes it, and nothing after it (restic refuses more), of at
    most `most` bytes (a frame that states its size is not held to `max_output_size`)."""
    try:
        if zstandard.frame_content_size(data) > most:
            raise Unread(f"{what} says it holds more than {most:,} bytes")
        plain = zstandard.ZstdDecompressor().decompress(data, max_output_size=most, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise Unread(f"{what} does not decompress: {exc}") from exc
    if len(plain) > most:
        raise Unread(f"{what} holds more than {most:,} bytes")
    return plain


def _hex_id(name: str) -> bool:
    try:
        return len(name) == 64 and len(bytes.fromhex(name)) == 32
    except ValueError:
        return False

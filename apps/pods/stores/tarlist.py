"""Every regular file in a tar stream, with its size and sha256, worked out from the chunks as
they pass (fed by the snapshot while it streams a volume, and by a restore drill reading its
volumes back): no second read, and never more than one header block buffered.

Docker's archives are Go's `archive/tar`: ustar headers (with the `prefix` field), PAX `x`
records for long or non-ASCII names and sizes, and GNU `L` long names; all three are read.
Links, folders and special files carry no data: only regular files are listed, each as
`[path, size, sha256, mtime, offset]`: its modification time (seconds since the epoch, from
the header or a PAX `mtime`) and where its data begins in the stream, so one file can later be
read out of a stored volume without reading the rest (`snapshot_files`). Lists written before
mtime and offset were recorded hold `[path, size, sha256]`: readers take both (`file_entry`).

The same walk finds where a tar's end-of-archive marker begins, so a restore can send several
volumes' tars as one stream (`joined`): one unpacking by the engine instead of one each."""

import hashlib
from collections.abc import Iterable, Iterator

from apps.pods.stores.base import StoreError

BLOCK = 512
REGULAR = {b"0", b"\0", b"7"}
PAX, PAX_GLOBAL, GNU_LONG_NAME, GNU_LONG_LINK = b"x", b"g", b"L", b"K"


class TarFileList:
    def __init__(self, *, hash_files: bool = True):
        self.hash_files = hash_files
        self.files: list[list] = []  # [path, size, sha256, mtime, offset]; sha256 "" when not hashing
        self.consumed = 0  # bytes fed so far
        self.end_at: int | None = None  # where the end-of-archive marker begins
        self._buffer = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0  # zero bytes after them, up to the next block
        self._member: tuple[bytes, str, int, int, int] | None = None  # (type, path, size, mtime, offset)
        self._digest = None
        self._meta = bytearray()  # the data of a PAX or GNU long-name member
        self._next_path: str | None = None
        self._next_size: int | None = None
        self._next_mtime: int | None = None
        self.ended = False
        self._unread = 0  # bytes of the current chunk after the header being read

    @property
    def members_end(self) -> int:
        """Bytes fed that certainly belong to members, not to the end marker: all of them but a
        header block still being read (it may be the first block of the marker)."""
        return self.end_at if self.end_at is not None else self.consumed - len(self._buffer)

    def feed(self, chunk: bytes) -> None:
        self.consumed += len(chunk)
        if self.ended and not self.hash_files:
            return  # past the end there is nothing more to find
        view = memoryview(chunk)
        while view:
            if self._remaining:
                take = view[: self._remaining]
                self._data(take)
                self._remaining -= len(take)
                view = view[len(take) :]
                if not self._remaining:
                    self._member_end()
                continue
            if self._padding:
                skip = min(self._padding, len(view))
                self._padding -= skip
                view = view[skip:]
                continue
            need = BLOCK - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) == BLOCK:
                header, self._buffer = bytes(self._buffer), bytearray()
                self._unread = len(view)
                self._header(header)

    def _header(self, header: bytes) -> None:
        if self.ended or header == bytes(BLOCK):
            if not self.ended:
                self.end_at = self.consumed - BLOCK - self._unread
            self.ended = True
            return
        kind = header[156:157]
        name = header[0:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        path = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
        size = _number(header[124:136])
        mtime = _number(header[136:148])
        if kind in REGULAR:
            path = self._next_path if self._next_path is not None else path
            size = self._next_size if self._next_size is not None else size
            mtime = self._next_mtime if self._next_mtime is not None else mtime
            self._next_path = self._next_size = self._next_mtime = None
            self._digest = hashlib.sha256() if self.hash_files else None
        elif kind not in {PAX, PAX_GLOBAL, GNU_LONG_NAME, GNU_LONG_LINK}:
            self._next_path = self._next_size = self._next_mtime = None
            size = 0 if kind in {b"1", b"2", b"3", b"4", b"5", b"6"} else size
        # The member's data begins right after this header block.
        self._member = (kind, path, size, mtime, self.consumed - self._unread)
        self._meta = bytearray()
        self._remaining = size
        self._padding = -size % BLOCK
        if not size:
            self._member_end()

    def _data(self, data: memoryview) -> None:
        kind = self._member[0]
        if kind in REGULAR:
            if self._digest is not None:
                self._digest.update(data)
        elif kind in {PAX, GNU_LONG_NAME}:
            self._meta += data

    def _member_end(self) -> None:
        kind, path, size, mtime, offset = self._member
        if kind in REGULAR:
            sha256 = self._digest.hexdigest() if self._digest is not None else ""
            self.files.append([path.removesuffix("/"), size, sha256, mtime, offset])
            self._digest = None
        elif kind == GNU_LONG_NAME:
            self._next_path = bytes(self._meta).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == PAX:
            records = _pax(bytes(self._meta))
            if "path" in records:
                self._next_path = records["path"]
            if "size" in records and records["size"].isdigit():
                self._next_size = int(records["size"])
            if "mtime" in records:
                try:
                    self._next_mtime = int(float(records["mtime"]))
                except ValueError:
                    pass
        self._member = None


def joined(tars: Iterable[Iterable[bytes]], *, names: list[str]) -> Iterator[bytes]:
    """Several tars as one stream, for one unpacking: each but the last is cut where its
    end-of-archive marker begins (found by walking its headers, never by trusting that the
    last 1,024 bytes are the marker: a writer may pad it further). A tar that never ends is
    an error before any byte of it past its last member is sent."""
    tars = list(tars)
    for number, chunks in enumerate(tars):
        if number == len(tars) - 1:
            yield from chunks
            return
        walk, sent, held = TarFileList(hash_files=False), 0, bytearray()
        for chunk in chunks:
            walk.feed(chunk)
            upto = walk.members_end - sent  # bytes of held + chunk that may go now
            if not held and upto >= len(chunk):
                yield chunk  # the common case: a chunk of file data, sent as it is
                sent += len(chunk)
                continue
            held += chunk
            if upto > 0:
                yield bytes(held[:upto])
                del held[:upto]
                sent += upto
            if walk.ended:
                held.clear()  # the marker and any padding; the rest is still read (and hashed)
        if not walk.ended:
            raise StoreError(f"the archive of {names[number]} ends without an end-of-archive marker")


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256, for sizes past 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[str, str]:
    """`<length> <key>=<value>\\n` records."""
    records, at = {}, 0
    while at < len(data):
        space = data.find(b" ", at)
        if space < 0:
            break
        length = int(data[at:space])
        key, _, value = data[space + 1 : at + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        at += length
    return records


def file_entry(entry: list) -> tuple[str, int, str, int | None, int | None]:
    """(path, size, sha256, mtime, offset) of a file list's entry, old (`[path, size, sha256]`,
    mtime and offset None) or new."""
    path, size, sha256, *rest = entry
    mtime, offset = (rest + [None, None])[:2]
    return path, size, sha256, mtime, offset


def file_differences(expected: list[list], found: list[list], *, shown: int = 3) -> list[str]:
    """What differs between two file lists (old or new entries), one short line each (the first
    `shown`). Only size and sha256 count: the same bytes restored elsewhere lie elsewhere."""
    want = {entry[0]: (entry[1], entry[2]) for entry in expected}
    have = {entry[0]: (entry[1], entry[2]) for entry in found}
    lines = [f"{path} missing" for path in sorted(want.keys() - have.keys())]
    lines += [f"{path} not in the snapshot" for path in sorted(have.keys() - want.keys())]
    for path in sorted(want.keys() & have.keys()):
        if want[path] != have[path]:
            lines.append(
                f"{path}: {have[path][0]} bytes sha256 {have[path][1][:12]}…, "
                f"expected {want[path][0]} bytes {want[path][1][:12]}…"
            )
    return lines[:shown] + ([f"and {len(lines) - shown} more"] if len(lines) > shown else [])

"""A copy whose restic snapshot holds its parent's very files: what its manifest records is then
the parent's (sizes, sha256 and file lists), told without restic's `dump`.

- **A backup** (`unchanged_since`) with its parent's tree removes nothing: nothing is read now;
  the verify schedule reads it back later ("not yet proven").
- **A stop** (`proven_reading`) removes the volumes, so every byte its snapshot relies on is
  read back in this operation, but not through `restic dump`, which restic 0.14 decrypts on one
  core. Here (`stores.restic_read`):
  1. both snapshots' trees are read and compared: every name, type, mode, owner, size,
     modification time, link target, extended attribute and chunk list must be the same.
     Only what a start changes and `restic dump` leaves out of its tar (Go's tar writer drops
     access and change times unless told a format; inode and device are never written) may
     differ. Then the new snapshot's dump is byte for byte the parent's, and so are its
     sha256, its size and every file's offset, size and sha256;
  2. every chunk those files are made of is read out of its pack on every core, its tag
     checked and its plain text hashed against its id, and each file's chunks add up to its
     size.
  Anything this cannot read, does not understand or finds different leaves the proof to
  `restic dump` as before, with a line in the operation's log saying why.
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

from apps.pods.models import Snapshot
from apps.pods.services.beside import folder_name
from apps.pods.services.manifest_ahead import NearingEnd
from apps.pods.services.state import _log
from apps.pods.stores.restic_read import Repository, Unread, blobs_read
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes
from controlpanel.threads import started

logger = logging.getLogger(__name__)

# What a start changes in a restored file and `restic dump` never writes into its tar.
NOT_DUMPED = frozenset({"inode", "device_id", "ctime", "atime"})
# Past this many chunks or files the proof's own lists would weigh more than its worker may
# (a peak RSS under 200 MiB): restic reads instead.
MOST_CHUNKS = 100_000
MOST_FILES = 100_000
# How long the parent's manifest (its file lists) is waited for once the chunks are read.
MANIFEST_WAIT_SECONDS = 120


def restic_id_of(manifest: dict) -> str:
    """The restic snapshot that holds a folder snapshot's eight volumes."""
    return next(iter(manifest.values()))["store_id"]


def unchanged_since(*, store, parent: Snapshot, restic_id: str, volumes, written: Future) -> dict[str, dict] | None:
    """A backup whose restic snapshot has its parent's tree holds the very same folders (restic's
    trees are content-addressed: the same tree id is the same names, metadata and chunks): the
    parent's entries and file lists describe it byte for byte, and nothing needs reading now.
    None when anything differs. `written`: the parent's manifest, read while restic backed up."""
    parent_id = restic_id_of(parent.manifest)
    listed = store.run("snapshots", "--json", restic_id, parent_id, doing="comparing with the parent")
    trees = {found["id"]: found.get("tree") for found in json.loads(listed or "[]")}
    ours = [tree for restic, tree in trees.items() if restic.startswith(restic_id)]
    theirs = [tree for restic, tree in trees.items() if restic.startswith(parent_id)]
    if not ours or not theirs or ours[0] != theirs[0]:
        return None  # the parent's manifest is not needed, whether it read or not
    return parent_reading(parent=parent, volumes=volumes, written=written)


def parent_reading(*, parent: Snapshot, volumes, written: Future | None) -> dict[str, dict] | None:
    """The parent's entries with the file lists of its manifest in the store (`written`), for
    a copy holding the very same folders; None when that manifest gives no lists."""
    if written is None:
        return None
    try:
        lists = json.loads(written.result()).get("files") or {}
        if set(lists) != {volume.name for volume in volumes}:
            return None
    except Exception as exc:  # it does not read, or not as a manifest: the copy is read back instead
        logger.info("snapshot #%s's manifest gave no file lists (%s): the copy is read back", parent.pk, exc)
        return None
    keep = ("bytes", "files", "sha256", "archive_bytes")
    return {
        volume.name: {**{k: parent.manifest[volume.name][k] for k in keep}, "file_list": lists[volume.name]}
        for volume in volumes
    }


def proven_reading(
    *,
    store,
    parent: Snapshot,
    restic_id: str,
    volumes,
    progress,
    superseded: Callable[[], str | None],
    operation,
    nearing: Callable[[], None] | None,
    ask_every: float,
) -> dict[str, dict] | None:
    """A stop's reading of a restic snapshot with its parent's very files, every chunk read back
    here (module docstring); None when that is not proven, and `restic dump` reads it instead."""
    started_at, count, asked = time.monotonic(), 0, [time.monotonic()]

    def ask() -> None:
        if time.monotonic() - asked[0] >= ask_every:
            asked[0] = time.monotonic()
            if why := superseded():
                raise PanelError(why)

    try:
        repository = Repository.opened(store)
        repository.ask = ask
        repository.unchanged_since_read()  # no prune now: its lock makes restic's dump wait instead
        walked = _same_files(repository, restic_id, restic_id_of(parent.manifest))
        # The parent's file lists (one restic) while the chunks are read.
        written = started(store.get_small, f"{parent.prefix}/manifest.json", name="parent-manifest")
        expected = sum(where.plain_length for where in repository.located(walked.chunks).values())
        pace = NearingEnd(nearing, expected=expected, begun=time.monotonic())  # the chunks' read alone
        for got in blobs_read(repository, walked.chunks):
            count += got
            progress.advance(got)
            pace.read(count)
            ask()
        pace.ended()  # at the latest now: the manifest is written next
        waited = time.monotonic()
        while not wait([written], timeout=ask_every).done:
            ask()
            if time.monotonic() - waited > MANIFEST_WAIT_SECONDS:
                raise Unread(f"snapshot #{parent.pk}'s manifest did not read within {MANIFEST_WAIT_SECONDS} s")
        read = parent_reading(parent=parent, volumes=volumes, written=written)
        if read is None:
            raise Unread(f"snapshot #{parent.pk}'s file lists did not read")
        walked.lists_match(read, volumes)
        repository.unchanged_since_read()  # and none since: what was read is what a restore reads
    except PanelError:
        raise  # superseded: the copy is not wanted any more
    except Exception as exc:  # Unread, or anything else not understood here: restic reads it
        progress.advance(-count)  # restic's dump counts them again
        why = str(exc) if isinstance(exc, Unread) else f"{type(exc).__name__}: {exc}"
        _log(operation, f"the copy is read back with restic's dump instead: {why}"[:500])
        return None
    seconds = time.monotonic() - started_at
    _log(
        operation,
        f"the same files as snapshot #{parent.pk} (names, sizes, times, owners and chunks): its "
        f"{len(walked.chunks)} chunks ({humanize_bytes(count)}) read back and checked in {seconds:.1f} s; "
        f"the file lists are #{parent.pk}'s, each file's path and size checked against the trees",
    )
    return read


@dataclass
class _Walked:
    """What the walk of the new snapshot's trees found: its chunks, and for each top folder
    the sha256 of its regular files' paths and sizes in the order of restic's tar, their
    number and bytes."""

    chunks: set[str] = field(default_factory=set)
    folders: dict[str, list] = field(default_factory=dict)  # folder → [sha256, files, bytes]

    def file_seen(self, path: str, size: int) -> None:
        listed = self.folders.setdefault(path.split("/", 1)[0], [hashlib.sha256(), 0, 0])
        listed[0].update(_listed(path, size))
        listed[1] += 1
        listed[2] += size

    def lists_match(self, read: dict[str, dict], volumes) -> None:
        """Unread unless the parent's file lists and counts are what the trees hold."""
        folders = {folder_name(volume): volume.name for volume in volumes}
        if not set(self.folders) <= set(folders):
            raise Unread("the snapshot holds files outside the pod's eight folders")
        for folder, name in folders.items():
            entry, digest = read[name], hashlib.sha256()
            for listed in entry["file_list"]:
                if len(listed) < 5:  # a list from before times and offsets: one dump brings them
                    raise Unread(f"the parent's list of {folder} has no times and offsets")
                digest.update(_listed(listed[0], int(listed[1])))
            seen = self.folders.get(folder) or [hashlib.sha256(), 0, 0]
            if (digest.digest(), len(entry["file_list"]), entry["files"]) != (seen[0].digest(), seen[1], seen[1]) or (
                entry["bytes"] != seen[2]
            ):
                raise Unread(f"the parent's list of {folder} differs from the trees")


_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}


def _unquoted(name: str) -> str:
    """A node's name as its file is named: restic 0.14 keeps each name quoted as Go quotes a
    string (`back\\slash`, `q\\"uote`, `nb\\u00a0sp`, `bad\\xfename`), and its tar holds the
    bytes themselves, read as the tar lists read them (UTF-8, other bytes kept as surrogates)."""
    out, i = bytearray(), 0
    while i < len(name):
        char = name[i]
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        kind = name[i + 1 : i + 2]
        if kind in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[kind])
            i += 2
        elif kind == "x":
            out.append(int(name[i + 2 : i + 4], 16))
            i += 4
        elif kind in ("u", "U"):
            digits = 4 if kind == "u" else 8
            out += chr(int(name[i + 2 : i + 2 + digits], 16)).encode("utf-8")
            i += 2 + digits
        elif kind and kind in "01234567":
            out.append(int(name[i + 1 : i + 4], 8))
            i += 4
        else:
            raise Unread(f"a name restic keeps as {name!r} is not one it writes")
    return out.decode("utf-8", "surrogateescape")


def _listed(path: str, size: int) -> bytes:
    return f"{path}\0{size}\n".encode("utf-8", "surrogateescape")


def _same_files(repository: Repository, restic_id: str, parent_id: str) -> _Walked:
    """The new snapshot's trees walked in the order of restic's tar beside the parent's: Unread
    at the first difference in what `restic dump` writes, or when a file's chunks do not add up
    to its size."""
    walked, files = _Walked(), []
    roots = (repository.snapshot(restic_id)["tree"], repository.snapshot(parent_id)["tree"])
    stack = [_pairs(repository, *roots, "")]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        mine, its, where = step
        if mine.get("type") == "dir":
            stack.append(_pairs(repository, mine["subtree"], its["subtree"], where))
        elif mine.get("type") == "file":
            content, size = mine.get("content") or [], int(mine.get("size") or 0)
            files.append((where, content, size))
            walked.chunks.update(content)
            walked.file_seen(_unquoted(where[1:]), size)
            if len(walked.chunks) > MOST_CHUNKS or len(files) > MOST_FILES:
                raise Unread(f"more than {MOST_CHUNKS:,} chunks or {MOST_FILES:,} files")
    located = repository.located(walked.chunks)
    for where, content, size in files:
        if sum(located[chunk].plain_length for chunk in content) != size:
            raise Unread(f"the chunks of {where!r} do not add up to its size")
    return walked


def _pairs(repository: Repository, ours_id: str, theirs_id: str, path: str):
    """Each node of a tree of ours beside the parent's node of the same name, once what
    `restic dump` writes of the two is the same."""
    ours = repository.tree(ours_id)
    theirs = ours if theirs_id == ours_id else repository.tree(theirs_id)
    if [node.get("name") for node in ours] != [node.get("name") for node in theirs]:
        raise Unread(f"the names in {path or '/'} differ from the parent's")
    for mine, its in zip(ours, theirs, strict=True):
        where = f"{path}/{mine.get('name')}"
        if _dumped(mine) != _dumped(its):
            raise Unread(f"{where!r} differs from the parent's")
        yield mine, its, where


def _dumped(node: dict) -> dict:
    """What `restic dump` writes of a node into its tar (and its chunks), without its subtree."""
    return {key: value for key, value in node.items() if key not in NOT_DUMPED and key != "subtree"}

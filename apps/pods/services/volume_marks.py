"""Whether a pod's volumes changed since its last folder snapshot, told from this machine by
their files' metadata alone: no helper container, no restic process, no byte read.

restic with a parent skips a file whose size, times and inode did not change; the panel asks
the same question one step earlier. Each volume's *mark* is a digest of every entry under its
folder (path, type and mode, inode, links, size, owner, modification and change times, the
folder's own device and inode), taken just before restic backs the folders up and kept in the
snapshot's manifest. A later copy whose eight marks are the parent's holds the very files the
parent's restic snapshot holds, so it points at that restic snapshot (its objects reused, as
the stream engine reuses an unchanged volume's object) instead of making another. A stop
still reads every byte back before a volume goes; a backup removes nothing and is proven by
the verify schedule, as any backup is.

Why the mark is safe to trust:
- **Change time.** Writing a file, changing its mode, owner, links or extended attributes,
  renaming it or setting its times all set its change time to the kernel's clock, which a
  pod cannot set. A file written after its mark was taken differs from it.
- **Taken before restic reads.** A write between the mark and restic's read is in the restic
  snapshot but not in the mark: the next copy sees a difference and runs restic. Never the
  other way round.
- **Settled files only.** A file system keeps times at its own grain (a second on ext4 with
  small inodes, two on FAT): a write in the same tick as the mark would not move them. A
  volume any of whose change times is within QUIET_SECONDS of the mark (or later) gets no
  mark, and its next copy runs restic.
- **Chunks still indexed.** A copy records a few of the repository's index files it saw
  (`index_witness`); the next may reuse it only while they are all there. A prune or a
  rebuilt index (a lost pack) rewrites every index file it keeps in restic 0.14-0.16; with
  another restic nothing is reused.
- **Not purged meanwhile.** A copy that reuses its parent has no restic snapshot of its own
  until its manifest is recorded: it decides under the pod's deletion lock, where the parent
  must still be complete and its restic snapshot there (`parent_kept`), and retention, under
  the same lock, leaves a pod's snapshots alone while a copy of the pod is under way.

Only where the folders are this machine's: a Docker host on a local socket whose volume uses
the `local` driver without options (a plain folder, not a mount made while a container uses
it). Anything else (another host, a folder the panel may not read, a folder vanishing or
swapped mid-walk, more than MOST_ENTRIES entries, MOST_DEPTH levels or MOST_SECONDS) gives no
marks, and restic compares as before.

The same walk counts a volume's bytes as `du -sb` does (`folder_sizes`): a pod just started
or provisioned is measured from here, without the size helper's container.
"""

import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
import time

from apps.audit.holds import hold_guard
from apps.audit.names import TargetType
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import VOLUME_MOUNTS, Pod, PodVolume, Snapshot
from apps.pods.services.state import _log
from apps.pods.stores import restic_raw
from controlpanel.errors import PanelError

logger = logging.getLogger(__name__)

# A time this close to the mark (or after it) may share the mark's tick: not trusted.
QUIET_SECONDS = 2.0
# Beyond this many entries in the eight volumes the walk costs more than restic's own look.
MOST_ENTRIES = 200_000
# A size is listed from here only for smaller pods: past this, busybox's du in the size helper
# walks faster than Python does (its container costs about what 50,000 entries take here).
MOST_SIZE_ENTRIES = 50_000
MOST_DEPTH = 256
# The walk runs inside a backup's pause: past this, restic compares instead.
MOST_SECONDS = 5.0
# How many of the repository's index files a copy records (`index_witness`).
WITNESSES = 4
_restic_seen: dict[str, bool] = {}


class Unmarkable(Exception):
    """The volumes cannot be marked from here; the sentence says why."""


# Each folder is opened from its parent's open folder by name, never through a link: a pod
# that swaps a folder for a link while it is listed makes the open fail, not the walk wander
# off its volume. Only the folders on the way down are open at once (at most MOST_DEPTH).
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Walk:
    """The eight volumes' walk: one digest per folder, one budget of entries and time."""

    def __init__(self, *, since_ns: int, deadline: float, most_entries: int | None = None, marking: bool = True):
        self.since_ns, self.deadline, self.entries = since_ns, deadline, 0
        self.most_entries = MOST_ENTRIES if most_entries is None else most_entries
        self.marking = marking  # not marking: only the bytes are counted
        # `times_untrusted`: regular files changed since this time whose modification time does
        # not say so, and whether the file system keeps change times finer than a second.
        self.changed_since_ns: int | None = None
        self.behind: list[str] = []
        self.files, self.fine = 0, False
        self.bytes, self._linked = 0, set()  # the last folder's, as `du -sb` counts them

    def mark(self, root: str) -> str | None:
        """One volume folder's mark, or None when a change time in it is not yet settled."""
        root_fd = os.open(root, FOLDER_FLAGS)
        stack: list[tuple[tuple[bytes, ...], int, list]] = [((), root_fd, [])]
        try:
            top = os.fstat(root_fd)
            self.digest = hashlib.sha256(f"{top.st_dev} {top.st_ino} {top.st_mode} {top.st_uid} {top.st_gid}".encode())
            self.digest.update(f" {top.st_mtime_ns} {top.st_ctime_ns}\n".encode())
            self.newest = top.st_ctime_ns
            self.bytes, self._linked = top.st_size, set()
            stack[0] = ((), root_fd, self._listed(root_fd, ()))
            while stack:
                parts, fd, below = stack[-1]
                if not below:
                    stack.pop()
                    os.close(fd)
                    continue
                name, expected = below.pop()
                if len(stack) > MOST_DEPTH:
                    raise Unmarkable(f"folders nested deeper than {MOST_DEPTH}")
                child = os.open(name, FOLDER_FLAGS, dir_fd=fd)
                try:
                    found = os.fstat(child)
                    if (found.st_dev, found.st_ino) != expected:
                        raise Unmarkable(f"{b'/'.join((*parts, name)).decode(errors='replace')} changed while listed")
                    listed = self._listed(child, (*parts, name))
                except BaseException:
                    os.close(child)
                    raise
                stack.append(((*parts, name), child, listed))
        finally:
            for _parts, fd, _below in stack:
                os.close(fd)
        return self.digest.hexdigest() if self.newest < self.since_ns else None

    def _listed(self, fd: int, parts: tuple[bytes, ...]) -> list[tuple[bytes, tuple[int, int]]]:
        """Digest the folder's entries in name order; its sub-folders, last first."""
        entries = []
        with os.scandir(fd) as listing:
            for entry in listing:
                self.entries += 1
                if self.entries > self.most_entries:
                    raise Unmarkable(f"more than {self.most_entries:,} files")
                entries.append(entry)
        if time.monotonic() > self.deadline:
            raise Unmarkable(f"listing them took over {MOST_SECONDS:g} s")
        below = []
        for entry in sorted(entries, key=lambda entry: entry.name):
            found = entry.stat(follow_symlinks=False)  # the link itself, never its target
            name = os.fsencode(entry.name)  # names as bytes, whatever their encoding
            fields = (
                found.st_mode,
                found.st_ino,
                found.st_nlink,
                found.st_size,
                found.st_uid,
                found.st_gid,
                found.st_mtime_ns,
                found.st_ctime_ns,
                found.st_rdev,
            )
            if self.marking:
                self.digest.update(b"/".join((*parts, name)) + b"\0" + " ".join(map(str, fields)).encode() + b"\n")
            # Only the change time counts: the kernel sets it; a modification time is whatever
            # the pod says (one in the future would mark nothing, ever).
            self.newest = max(self.newest, found.st_ctime_ns)
            if self.changed_since_ns is not None and stat.S_ISREG(found.st_mode):
                self._told_by_times(found, parts, name)
            inode = (found.st_dev, found.st_ino)
            if found.st_nlink < 2 or stat.S_ISDIR(found.st_mode) or inode not in self._linked:
                self.bytes += found.st_size  # a file with several links counts once
                if found.st_nlink > 1:
                    self._linked.add(inode)
            if stat.S_ISDIR(found.st_mode):
                below.append((name, (found.st_dev, found.st_ino)))
        below.reverse()
        return below

    def _told_by_times(self, found: os.stat_result, parts: tuple[bytes, ...], name: bytes) -> None:
        self.files += 1
        self.fine = self.fine or bool(found.st_ctime_ns % 1_000_000_000)
        since = self.changed_since_ns
        # Changed since, but dated before it (`cp -p`, `rsync -a`, `touch -r`, `tar x`, a chmod
        # or a rename) or after its own change (a future date): size and time may not tell it.
        told = since <= found.st_mtime_ns <= found.st_ctime_ns  # a write sets both at once
        if found.st_ctime_ns > since and not told and len(self.behind) < 3:
            self.behind.append(b"/".join((*parts, name)).decode(errors="replace"))


def times_untrusted(*, engine: DockerEngine, volumes: list[PodVolume], restored_at) -> str | None:
    """Why size and modification time may not tell every file changed since a start wrote these
    volumes at `restored_at` (restic then reads every file again), or None when they do: every
    file changed since has a modification time after it, as a write gives. Listed from here
    like a mark; volumes that cannot be, a start before this was recorded, or a file system
    that keeps change times to the second (a write in the same second as the restore would not
    show) are not trusted."""
    if restored_at is None:
        return "the start that wrote them did not record when"
    walk = _Walk(since_ns=0, deadline=time.monotonic() + MOST_SECONDS, marking=False)
    walk.changed_since_ns = int(restored_at.timestamp() * 1e9)
    try:
        folders = _folders(engine, [volume.docker_name for volume in volumes])
        for volume in volumes:
            told = len(walk.behind)
            walk.mark(folders[volume.docker_name])
            walk.behind[told:] = [f"{VOLUME_MOUNTS[volume.name]}/{path}" for path in walk.behind[told:]]
    except (Unmarkable, OSError, PanelError) as exc:
        return f"their files were not listed from here ({exc})"
    if walk.behind:
        return f"{', '.join(walk.behind)} changed since the start with an older modification time"
    if walk.files and not walk.fine:
        return "their file system keeps change times to the second"
    return None


def _folders(engine: DockerEngine, names: list[str]) -> dict[str, str]:
    """{docker name: its folder on this machine}; Unmarkable when any is not a plain folder here."""
    if not engine.on_this_machine:
        raise Unmarkable(f"Docker host {engine.host_name!r} is not this machine")
    with engine._errors("listing the pod's volumes"):
        rows = engine.client.api.volumes(filters={"name": names}).get("Volumes") or []
    by_name = {row["Name"]: row for row in rows}
    folders = {}
    for name in names:
        row = by_name.get(name)
        if row is None or row.get("Driver") != "local" or row.get("Options") or not row.get("Mountpoint"):
            raise Unmarkable(f"volume {name} is not a plain folder of the local driver")
        folders[name] = row["Mountpoint"]
    return folders


def volume_marks(*, engine: DockerEngine, volumes: list[PodVolume], operation=None) -> dict[str, str | None]:
    """Each volume's mark now ({} when they cannot be marked from here: the log says why)."""
    began = time.time()
    walk = _Walk(since_ns=int((began - QUIET_SECONDS) * 1e9), deadline=time.monotonic() + MOST_SECONDS)
    try:
        marks: dict[str, str | None] = {}
        folders = _folders(engine, [volume.docker_name for volume in volumes])
        for volume in volumes:
            # One volume without a mark: this copy cannot be the parent's, nor the next one this one's.
            unsettled = any(mark is None for mark in marks.values())
            marks[volume.name] = None if unsettled else walk.mark(folders[volume.docker_name])
    except (Unmarkable, OSError) as exc:
        _log(operation, f"the volumes' files were not listed from here ({exc}): restic compares them")
        return {}
    except Exception as exc:  # Docker's answer: the copy goes on, restic compares
        logger.info("could not mark the volumes of pod %s: %s", volumes[0].pod.pod_id, exc)
        return {}
    logger.info("marked %s entries in %.3f s", walk.entries, time.time() - began)
    return marks


def folder_sizes(engine: DockerEngine, names: list[str]) -> dict[str, int] | None:
    """Each volume's bytes as the size helper's `du -sb` counts them (files, folders and links
    by their apparent size, a file with several links once), listed from this machine the way
    a mark is: no helper container. None when they cannot be listed from here (the same
    limits as a mark's, but MOST_SIZE_ENTRIES entries): the helper measures them."""
    if not names:
        return {}
    walk = _Walk(since_ns=0, deadline=time.monotonic() + MOST_SECONDS, most_entries=MOST_SIZE_ENTRIES, marking=False)
    try:
        sizes = {}
        for name, folder in _folders(engine, names).items():
            walk.mark(folder)
            sizes[name] = walk.bytes
    except (Unmarkable, OSError) as exc:
        logger.info("volume sizes not listed from here (%s): the size helper measures them", exc)
        return None
    except PanelError as exc:  # Docker's answer: the helper asks again, and says what is wrong
        logger.info("volume sizes not listed from here: %s", exc)
        return None
    return sizes


def _index_rewritten_whole() -> bool:
    """Whether this machine's restic rewrites every index file it keeps when it prunes or
    rebuilds the index: 0.14-0.16 do; 0.17 rewrites only those that changed (restic/restic#4812),
    so a copy's witnesses would no longer tell. Asked once per process."""
    if "whole" not in _restic_seen:
        restic, found = shutil.which("restic"), None
        try:
            if restic is not None:
                done = subprocess.run([restic, "version"], capture_output=True, text=True, timeout=30, check=False)
                found = re.match(r"restic (\d+)\.(\d+)\.", done.stdout)
        except (OSError, subprocess.SubprocessError) as exc:  # no answer: nothing is reused
            logger.info("could not ask restic its version: %s", exc)
        _restic_seen["whole"] = found is not None and (0, 14) <= (int(found[1]), int(found[2])) < (0, 17)
    return _restic_seen["whole"]


def index_files(store) -> list[str]:
    """The repository's index files now ([] when they cannot be listed, or would tell nothing:
    nothing is reused)."""
    if not _index_rewritten_whole():
        return []
    try:
        return restic_raw.names(store, "index")
    except Exception as exc:  # the copy runs restic, which says what is wrong with the store
        logger.info("could not list the index files of %s: %s", store.url, exc)
        return []


def index_witness(index: list[str]) -> list[str]:
    """A few of the index files a copy saw: while they are all there, no prune and no rebuilt
    index has removed a chunk since (both rewrite every index file they keep)."""
    return sorted(index)[:WITNESSES]


def unchanged_parent(
    *, marks: dict[str, str | None], parent: Snapshot | None, volumes: list[PodVolume], index: list[str]
) -> bool:
    """Every volume carries the mark the parent recorded, and the index files the parent saw
    are all still there: the parent's restic snapshot holds these very files, and restic's
    index still lists every chunk of them (restic's own backup with a parent asks the same)."""
    if parent is None or not marks or not index:
        return False
    entries, present = parent.manifest or {}, set(index)
    if set(entries) != {volume.name for volume in volumes}:
        return False
    for volume in volumes:
        entry = entries[volume.name] if isinstance(entries[volume.name], dict) else {}
        seen = entry.get("index_seen") or []
        if marks.get(volume.name) is None or marks[volume.name] != entry.get("mark"):
            return False
        if not seen or not set(seen) <= present:
            return False
    return True


def parent_kept(*, pod: Pod, store, parent: Snapshot) -> bool:
    """The parent's restic snapshot is there, and no purge of it is under way: asked under the
    lock a purge of the pod's snapshots takes for each one, so retention either purged it
    before (it is gone now: restic runs) or sees this copy under way and leaves it (a copy
    that reuses it holds no restic snapshot of its own until its manifest is recorded)."""
    restic_id = next(iter(parent.manifest.values()))["store_id"]
    try:
        with hold_guard((TargetType.POD, pod.pod_id)):
            alive = Snapshot.objects.filter(pk=parent.pk, status=Snapshot.Status.COMPLETE).exists()
            return alive and restic_raw.snapshot_present(store, restic_id)
    except PanelError as exc:  # the lock not had in time: restic compares instead
        logger.info("parent snapshot #%s not reused: %s", parent.pk, exc)
        return False

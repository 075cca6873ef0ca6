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
  volume any of whose times is within QUIET_SECONDS of the mark (or later) gets no mark, and
  its next copy runs restic.

Only where the folders are this machine's: a Docker host on a local socket whose volume uses
the `local` driver without options (a plain folder, not a mount made while a container uses
it). Anything else (another host, a folder the panel may not read, a folder vanishing or a
file changing type mid-walk, more than MOST_ENTRIES entries) gives no marks, and restic
compares as before.
"""

import hashlib
import logging
import os
import stat
import time

from apps.pods.docker_engine import DockerEngine
from apps.pods.models import PodVolume, Snapshot, volume_docker_name
from apps.pods.services.state import _log

logger = logging.getLogger(__name__)

# A time this close to the mark (or after it) may share the mark's tick: not trusted.
QUIET_SECONDS = 2.0
# Beyond this many entries in the eight volumes the walk costs more than restic's own look.
MOST_ENTRIES = 500_000


class Unmarkable(Exception):
    """The volumes cannot be marked from here; the sentence says why."""


def _walk(root: str, *, since_ns: int, counted: list[int]) -> str | None:
    """One volume folder's mark, or None when a time in it is not yet settled."""
    top = os.lstat(root)
    if not stat.S_ISDIR(top.st_mode):
        raise Unmarkable(f"{root} is not a folder")
    digest = hashlib.sha256(f"{top.st_dev} {top.st_ino} {top.st_mode} {top.st_uid} {top.st_gid}".encode())
    newest = max(top.st_mtime_ns, top.st_ctime_ns)
    digest.update(f" {top.st_mtime_ns} {top.st_ctime_ns}\n".encode())
    base, folders = os.fsencode(root), [b""]
    while folders:
        relative = folders.pop()  # b"" or b"/a/b": names as bytes, whatever their encoding
        with os.scandir(base + relative) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        counted[0] += len(entries)
        if counted[0] > MOST_ENTRIES:
            raise Unmarkable(f"more than {MOST_ENTRIES:,} files")
        for entry in entries:
            found = entry.stat(follow_symlinks=False)
            path = relative + b"/" + entry.name
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
            digest.update(path + b"\0" + " ".join(map(str, fields)).encode() + b"\n")
            newest = max(newest, found.st_mtime_ns, found.st_ctime_ns)
            if stat.S_ISDIR(found.st_mode):
                folders.append(path)
    return digest.hexdigest() if newest < since_ns else None


def _folders(engine: DockerEngine, volumes: list[PodVolume]) -> dict[str, str]:
    """{volume name: its folder on this machine}; Unmarkable when any is not a plain folder here."""
    if not engine.on_this_machine:
        raise Unmarkable(f"Docker host {engine.host_name!r} is not this machine")
    prefix = volume_docker_name(volumes[0].pod.pod_id, "")
    with engine._errors("listing the pod's volumes"):
        rows = engine.client.api.volumes(filters={"name": prefix}).get("Volumes") or []
    by_name = {row["Name"]: row for row in rows}
    folders = {}
    for volume in volumes:
        row = by_name.get(volume.docker_name)
        if row is None or row.get("Driver") != "local" or row.get("Options") or not row.get("Mountpoint"):
            raise Unmarkable(f"volume {volume.docker_name} is not a plain folder of the local driver")
        folders[volume.name] = row["Mountpoint"]
    return folders


def volume_marks(*, engine: DockerEngine, volumes: list[PodVolume], operation=None) -> dict[str, str | None]:
    """Each volume's mark now ({} when they cannot be marked from here: the log says why)."""
    began = time.time()
    since_ns = int((began - QUIET_SECONDS) * 1e9)
    counted = [0]
    try:
        folders = _folders(engine, volumes)
        marks = {name: _walk(folder, since_ns=since_ns, counted=counted) for name, folder in folders.items()}
    except (Unmarkable, OSError) as exc:
        _log(operation, f"the volumes' files were not listed from here ({exc}): restic compares them")
        return {}
    except Exception as exc:  # Docker's answer: the copy goes on, restic compares
        logger.info("could not mark the volumes of pod %s: %s", volumes[0].pod.pod_id, exc)
        return {}
    logger.info("marked %s entries in %.3f s", counted[0], time.time() - began)
    return marks


def unchanged_parent(*, marks: dict[str, str | None], parent: Snapshot | None, volumes: list[PodVolume]) -> bool:
    """Every volume carries the mark the parent recorded: the parent's restic snapshot holds them."""
    if parent is None or not marks:
        return False
    recorded = {name: (entry or {}).get("mark") for name, entry in (parent.manifest or {}).items()}
    return all(marks.get(v.name) is not None and marks.get(v.name) == recorded.get(v.name) for v in volumes)

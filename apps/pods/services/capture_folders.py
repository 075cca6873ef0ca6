"""A deduplicated store's copy of a pod made beside its volumes (SNAPSHOT_ENGINE=beside):
restic in a helper container on the pod's own host backs up the eight volumes as folders, in
one restic snapshot tagged with the eight volume keys; restores write the files straight into
the new volumes (`restic restore --verify`).

- **Parent.** The pod's last complete folder snapshot in the store is the backup's parent:
  restic skips files whose size, times and inode did not change and reads only the rest. The
  parent is always named (every pod's helper backs up the same paths, and restic would
  otherwise pick another pod's snapshot as the parent). While any snapshot of the store
  failed its last re-read there is no parent: every file is read again.
- **Read back before it counts.** Every volume of the new restic snapshot is read back in
  this operation (`restic dump` of its folder as a tar, every chunk's MAC checked by restic);
  its size, sha256 and file list, taken from that read, are what the manifest records, and
  what a verify, a drill, a file download and the tar stores' readers compare against later.
  A stop whose restic snapshot holds its parent's very files (after a start, most often)
  reads every chunk back here on every core instead, and records the parent's reading
  (`same_files`). A backup restic calls incomplete (a file it could not read) is forgotten
  and fails.
- **Where.** A `dedup+file://` repository is bind-mounted into the helper, so only a host on
  this machine can reach it; `dedup+s3://` works from any host (the helper shares the host's
  network). A remote host with a file repository is refused before the pod changes state.
"""

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.services import Progress
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, PodVolume, Snapshot, volume_docker_name
from apps.pods.restic_helper import MOUNT_ROOT
from apps.pods.services import volume_marks as marking
from apps.pods.services.beside import INCOMPLETE, folder_layout, folder_name, helper_restic
from apps.pods.services.manifest_ahead import ManifestAhead, NearingEnd, tar_bytes_about
from apps.pods.services.same_files import parent_reading, proven_reading, restic_id_of, unchanged_since
from apps.pods.services.state import _log
from apps.pods.snapshots import store_from_url
from apps.pods.stores.base import StoreError
from apps.pods.stores.dedup import DEDUP_REPAIR, FOLDER_LAYOUT, HOST, DedupStore
from apps.pods.stores.restic_locks import RepositoryLocked
from apps.pods.stores.tarlist import TarFileList
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes
from controlpanel.threads import started

logger = logging.getLogger(__name__)

# On a volume a start filled from a folder snapshot: that restic snapshot's id.
RESTORED_FROM = "pinacle.restored-from"
# How often a read-back asks whether its copy is still wanted.
ASK_EVERY_SECONDS = 0.25


def parent_for(*, pod: Pod, store: DedupStore) -> Snapshot | None:
    """The pod's last complete folder snapshot in `store` (its restic snapshot is the next
    backup's parent), if the store may be trusted."""
    complete = Snapshot.objects.filter(status=Snapshot.Status.COMPLETE, store_url=store.url)
    if complete.exclude(verify_error="").exists():
        return None
    for snapshot in complete.filter(pod=pod).order_by("-finished_at", "-id")[:1]:
        entries = [e for e in (snapshot.manifest or {}).values() if isinstance(e, dict)]
        if entries and all(e.get("folder") and e.get("store_id") for e in entries):
            return snapshot
    return None


def restored_labels(manifest: dict) -> dict[str, str]:
    """Labels for the volumes a start fills from `manifest`: which restic snapshot wrote them."""
    return {RESTORED_FROM: restic_id_of(manifest)} if folder_layout(manifest) else {}


def _restored_from(engine: DockerEngine, pod: Pod, volumes: list[PodVolume]) -> str | None:
    """The restic snapshot a start wrote every one of these volumes from, if one did."""
    names = {volume.docker_name for volume in volumes}
    found = {
        volume.name: volume.labels.get(RESTORED_FROM)
        for volume in engine.volumes_list(name_prefix=volume_docker_name(pod.pod_id, ""))
        if volume.name in names
    }
    sources = set(found.values())
    return sources.pop() if len(found) == len(names) and len(sources) == 1 else None


def _backup(
    *,
    pod: Pod,
    engine: DockerEngine,
    store: DedupStore,
    volumes: list[PodVolume],
    keys: dict[str, str],
    progress: Progress,
    operation: Operation | None,
    superseded: Callable[[], str | None],
    earlier: Snapshot | None,
) -> dict:
    """One restic backup of the eight folders, `earlier`'s restic snapshot as parent; restic's summary."""
    parent = restic_id_of(earlier.manifest) if earlier is not None else None
    command = ["backup", "--json", "--host", HOST, "--tag", FOLDER_LAYOUT]
    for volume in volumes:
        command += ["--tag", keys[volume.name]]
    command += ["--parent", parent] if parent else ["--force"]
    if parent and _restored_from(engine, pod, volumes) == parent:
        # A start wrote these volumes from the parent itself: every inode and ctime is new, so
        # restic would read every file again to find it unchanged. Size and modification time
        # (the restore set them from the parent) tell a file changed since, as they tell rsync,
        # unless one was changed since and dated back, or may be while restic reads (running).
        info = engine.container_get(pod.container_name)
        why = "the pod runs while restic reads" if info is not None and info.running else None
        why = why or marking.times_untrusted(engine=engine, volumes=volumes, restored_at=pod.restored_at)
        said = f"restic reads every file again: {why}" if why else "files compared by size and time"
        command += [] if why else ["--ignore-inode", "--ignore-ctime"]
        _log(operation, f"the volumes were restored from snapshot #{earlier.pk}: {said}")
    command += [folder_name(volume) for volume in volumes]
    _log(operation, f"backing up the volumes beside them with restic{' (parent ' + parent[:8] + ')' if parent else ''}")
    seen = {"bytes_done": 0}
    lock = threading.Lock()

    def on_line(line: dict) -> None:
        if line.get("message_type") == "status":
            with lock:
                seen["bytes_done"] = max(seen["bytes_done"], int(line.get("bytes_done") or 0))
        elif line.get("message_type") == "summary":
            with lock:
                seen["summary"] = line

    told = [0]

    def cancelled() -> str | None:
        with lock:
            done = seen["bytes_done"]
        progress.advance(done - told[0])  # the calling thread: progress writes to the database
        told[0] = done
        return superseded()

    volumes_mounted = {v.docker_name: (f"{MOUNT_ROOT}/{folder_name(v)}", True) for v in volumes}
    result = helper_restic(
        store,
        engine,
        owner=pod.pod_id,
        operation=operation,
        command=command,
        volumes=volumes_mounted,
        on_line=on_line,
        cancelled=cancelled,
        doing=f"backing up pod {pod.pod_id}",
    )
    summary = seen.get("summary")
    if summary is None:
        said = " ".join(result.stderr.split())[-300:] or "nothing on stderr"
        raise StoreError(
            f"snapshot store {store.url}: restic finished backing up pod {pod.pod_id} without a summary "
            f"(exit {result.exit_code}: {said})"
        )
    if result.exit_code == INCOMPLETE:
        unread = " ".join(result.stderr.split())[-300:]
        raise BackupIncomplete(
            f"restic could not read every file of pod {pod.pod_id}, so nothing counts: {unread}",
            restic_id=summary["snapshot_id"],
        )
    return summary


class BackupIncomplete(PanelError):
    """restic made a snapshot without some files (exit 3): it is forgotten once the copy's other
    restics are gone (`incomplete_forget`), not while the manifest's writer, started ahead,
    holds the lock a forget must wait for."""

    def __init__(self, message: str, *, restic_id: str):
        super().__init__(message)
        self.restic_id = restic_id


def incomplete_forget(store: DedupStore, exc: BackupIncomplete, operation) -> None:
    try:
        store.run("forget", exc.restic_id, doing="forgetting an incomplete backup")
    except Exception as failure:  # its keys are the failed snapshot's: retention purges them
        _log(operation, f"restic snapshot {exc.restic_id[:8]} is left for retention to purge: {failure}")


def _readback(
    *,
    store: DedupStore,
    volumes: list[PodVolume],
    key: str,
    progress: Progress,
    superseded,
    operation,
    expected: int = 0,
    nearing: Callable[[], None] | None = None,
) -> dict[str, dict]:
    """The whole restic snapshot read back in one `restic dump` (restic checks every chunk's
    MAC on the way), hashed, and each regular file's path, size and sha256 taken from it:
    the manifest's entries but the keys. One read, one key derivation, not one per volume.
    `nearing()` is called once as the read nears its end (about `expected` bytes)."""
    by_folder = {folder_name(volume): volume.name for volume in volumes}
    digest, files, count = hashlib.sha256(), TarFileList(), 0
    begun = time.monotonic()
    stream = store.read(key)
    asked, pace = begun, NearingEnd(nearing, expected=expected, begun=begun)
    try:
        for chunk in stream:
            digest.update(chunk)
            files.feed(chunk)
            count += len(chunk)
            progress.advance(len(chunk))
            now = pace.read(count)
            if now - asked >= ASK_EVERY_SECONDS:  # a backup's asks are two queries
                asked = now
                why = superseded()
                if why:
                    raise PanelError(why)
    finally:
        stream.close()
    pace.ended()  # at the latest now: the manifest is written next
    if not files.ended:
        raise PanelError(f"snapshot store {store.url}: restic snapshot of {key} did not read back to its end")
    lists: dict[str, list] = {name: [] for name in by_folder.values()}
    for entry in files.files:
        name = by_folder.get(entry[0].split("/", 1)[0])
        if name is None:
            raise PanelError(f"snapshot store {store.url}: {entry[0]!r} read back outside the pod's eight folders")
        lists[name].append(entry)
    read = {}
    for volume in volumes:
        found = lists[volume.name]
        size = sum(entry[1] for entry in found)
        read[volume.name] = {"bytes": size, "files": len(found), "file_list": found}
        _log(operation, f"read back {volume.docker_name}: {humanize_bytes(size)} in {len(found)} files")
    # Every volume's entry names the same object: the dump of the whole restic snapshot.
    for entry in read.values():
        entry.update(sha256=digest.hexdigest(), archive_bytes=count)
    return read


def _damaged(*, store: DedupStore, snapshot: Snapshot, earlier: Snapshot | None, exc: StoreError) -> StoreError:
    """The new restic snapshot does not read back: a pack it relies on decayed. Its unchanged
    files are the parent's chunks, so the parent is marked as failing its re-read (the next
    copy has no parent and reads every file), and the sentence says what to do."""
    marked = ""
    if earlier is not None:
        Snapshot.objects.filter(pk=earlier.pk).update(
            verify_error=f"its chunks do not read back: {exc}"[:2000], verify_checked_at=timezone.now()
        )
        marked = f" (snapshot #{earlier.pk}, whose chunks it shares, marked as failing verification)"
    return StoreError(
        f"snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id}: its eight volumes do not read back from the "
        f"store ({exc}){marked}; the pod keeps its eight volumes: start it to go on working, and {DEDUP_REPAIR}"
    )


def folders_copy(
    *,
    pod: Pod,
    engine: DockerEngine,
    store: DedupStore,
    volumes: list[PodVolume],
    snapshot: Snapshot,
    progress: Progress,
    operation: Operation | None,
    streaming: Callable[[], AbstractContextManager],
    superseded: Callable[[], str | None],
    read_back: bool = True,
    ahead: ManifestAhead | None = None,
    backed_up: Callable[[], None] = lambda: None,
) -> dict[str, dict]:
    """Back the volumes up beside them (inside `streaming()`: a backup's pause), then read every
    one back (`read_back`: a stop; a backup may take an unchanged parent's reading); the
    manifest's entries. `ahead`: the manifest's read-back, started as the volumes' read-back ends;
    `backed_up()` is called once restic's backup has ended."""
    keys = {volume.name: f"{snapshot.prefix}/{volume.name}.tar" for volume in volumes}
    earlier = parent_for(pod=pod, store=store)
    written = None
    if not read_back and earlier is not None:  # a backup may take its parent's reading: read
        # the parent's manifest (one lockless restic) while restic backs the folders up
        written = started(store.get_small, f"{earlier.prefix}/manifest.json", name="parent-manifest")
    with streaming():
        marks = marking.volume_marks(engine=engine, volumes=volumes, operation=operation)
        index_now = marking.index_files(store) if marks else []
        reused = marking.unchanged_parent(marks=marks, parent=earlier, volumes=volumes, index=index_now)
        reused = reused and marking.parent_kept(pod=pod, store=store, parent=earlier)
        if reused:
            # Not a file changed since the parent was marked: its restic snapshot holds them.
            summary = {"snapshot_id": restic_id_of(earlier.manifest), "data_added": 0}
            keys = {volume.name: earlier.manifest[volume.name]["key"] for volume in volumes}
            said = "each file's size, times and inode as they were"
            _log(operation, f"nothing changed since snapshot #{earlier.pk} ({said}): its restic snapshot holds it all")
        else:
            summary = _backup(
                earlier=earlier,
                pod=pod,
                engine=engine,
                store=store,
                volumes=volumes,
                keys=keys,
                progress=progress,
                operation=operation,
                superseded=superseded,
            )
    backed_up()
    restic_id = summary["snapshot_id"]
    for volume in volumes:
        store.ids[keys[volume.name]] = restic_id
        store.folders[keys[volume.name]] = folder_name(volume)
    added = int(summary.get("data_added") or 0)
    if not reused:
        counts = f"{summary.get('files_new', 0)} new, {summary.get('files_changed', 0)} changed"
        unchanged = f"{summary.get('files_unmodified', 0)} unchanged files; {humanize_bytes(added)} added to the store"
        _log(operation, f"restic snapshot {restic_id[:8]}: {counts}, {unchanged}")
    why = superseded()
    if why:
        raise PanelError(why)
    # A stop reads every byte back before it removes anything; a backup removes nothing, so
    # one that changed nothing since its parent takes the parent's reading (the verify
    # schedule reads it back later: until then it is "not yet proven").
    read, same = None, reused or not (summary.get("files_new") or summary.get("files_changed"))
    if reused and not read_back:
        read = parent_reading(parent=earlier, volumes=volumes, written=written)
    elif written is not None and same:
        read = unchanged_since(store=store, parent=earlier, restic_id=restic_id, volumes=volumes, written=written)
        if read is not None:
            _log(operation, f"the same folders as snapshot #{earlier.pk} (restic's tree is unchanged): not read again")
    elif read_back and earlier is not None and same:  # a stop: every chunk read here, on every core
        read = proven_reading(
            store=store,
            parent=earlier,
            restic_id=restic_id,
            volumes=volumes,
            progress=progress,
            superseded=superseded,
            operation=operation,
            nearing=ahead.start if ahead is not None else None,
            ask_every=ASK_EVERY_SECONDS,
        )
    if read is None:
        # A reused snapshot's dump is the parent's: its size is known.
        expected = earlier.manifest[volumes[0].name].get("archive_bytes", 0) if reused else tar_bytes_about(summary)
        try:
            read = _readback(
                store=store,
                volumes=volumes,
                key=keys[volumes[0].name],
                progress=progress,
                superseded=superseded,
                operation=operation,
                expected=expected,
                nearing=ahead.start if ahead is not None else None,
            )
        except RepositoryLocked:
            raise  # a prune holds the store: nothing is damaged, the sentence says when to try again
        except StoreError as exc:
            raise _damaged(store=store, snapshot=snapshot, earlier=earlier, exc=exc) from exc
    # The index files the next copy will look for: those there now (restic's backup wrote its own).
    manifest, witness = {}, marking.index_witness(index_now if reused or not marks else marking.index_files(store))
    for index, volume in enumerate(volumes):
        manifest[volume.name] = {
            "key": keys[volume.name],
            "mount_path": volume.mount_path,
            "folder": folder_name(volume),
            **read[volume.name],
            "etag": None,
            # One restic snapshot holds the eight: what it added is told once.
            "stored_bytes": added if index == 0 else 0,
            "store_id": restic_id,
            "mark": marks.get(volume.name),
            "index_seen": witness if marks.get(volume.name) else [],
            **({"reused": True, "same_as": earlier.pk} if reused else {}),
        }
    return manifest


def folders_restore(
    *,
    pod: Pod,
    snapshot: Snapshot,
    engine: DockerEngine,
    mounts: dict[str, str],
    operation,
    progress: Progress,
    owner: str | None = None,
) -> None:
    """Write the snapshot's files straight into new, empty volumes ({docker name: folder}: the
    pod's, or a drill's), then have restic read every file written back and check it
    (`--verify`), before the pod may start."""
    store = store_from_url(snapshot.store_url)
    restic_ids = {entry["store_id"] for entry in snapshot.manifest.values()}
    if len(restic_ids) != 1:
        raise PanelError(f"snapshot #{snapshot.pk} does not name one restic snapshot for its volumes")
    restic_id = restic_ids.pop()
    _log(operation, f"restoring the files of restic snapshot {restic_id[:8]} beside the new volumes")
    total, told = snapshot.total_bytes or 0, [0]

    def written(now: int) -> None:
        # restic 0.14 tells nothing while it restores (and allocates each file whole before it
        # fills it): the bar follows what its process has written, never back, never past the
        # snapshot's bytes.
        if (done := min(total, now)) > told[0]:
            progress.advance(done - told[0])
            told[0] = done

    result = helper_restic(
        store,
        engine,
        owner=owner or pod.pod_id,
        operation=operation,
        command=["restore", restic_id, "--target", MOUNT_ROOT, "--verify"],
        volumes={name: (f"{MOUNT_ROOT}/{folder}", False) for name, folder in mounts.items()},
        doing=f"restoring snapshot #{snapshot.pk} of pod {pod.pod_id}",
        on_written=written,
    )
    if result.exit_code != 0:
        raise store.error(f"restoring snapshot #{snapshot.pk}", result.stderr)
    progress.advance(total - told[0])
    checked = next((line for line in result.lines if "finished verifying" in line), "")
    _log(operation, f"restored {len(mounts)} volumes; restic read every file back: {checked.strip() or 'verified'}")

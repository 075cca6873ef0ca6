"""Restoring a pod's eight volumes from a snapshot into new volumes: every volume's bytes
hashed on the way and checked against the manifest before the container starts."""

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import PurePosixPath

from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.services import Progress
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import VOLUME_MOUNTS, Pod, PodVolume, Snapshot
from apps.pods.services.beside import folder_layout, folder_name, folders_precheck
from apps.pods.services.capture_folders import folders_restore, restic_id_of, restored_labels
from apps.pods.services.hosts import engine_for
from apps.pods.services.sizes import sizes_measuring
from apps.pods.services.snapshotting import _container_create
from apps.pods.services.state import _labels, _log, _volumes, _volumes_remove
from apps.pods.services.verify import damage_advice
from apps.pods.snapshots import DedupStore, SnapshotStore, StoreError, store_from_url
from apps.pods.stores import restic_raw
from apps.pods.stores.restic_locks import RepositoryLocked
from apps.pods.stores.tarlist import joined
from controlpanel.formatting import humanize_bytes
from controlpanel.threads import started


class _ReadAhead:
    """A volume's chunks from the store. `start()` asks for the first chunk on a thread (an S3
    GET answered, a restic dump past its key derivation) while the volume before it is still
    being unpacked; iterating takes it, then reads on in the caller's thread."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.first: Future | None = None

    def start(self) -> None:
        if self.first is None:
            self.first = started(next, self.chunks, None, name="restore-ahead")

    def __iter__(self) -> Iterator[bytes]:
        self.start()
        chunk = self.first.result()  # the store's failure, raised here
        if chunk is not None:
            yield chunk
            yield from self.chunks

    def close(self) -> None:
        """Let go of the store's stream now (a restic dump waiting on a full pipe exits),
        not whenever the garbage collector gets to it; after the thread is done with it."""
        if self.first is not None:
            wait([self.first])
        self.chunks.close()


def _volume_read(
    *,
    snapshot: Snapshot,
    name: str,
    entry: dict,
    chunks: _ReadAhead,
    then: _ReadAhead | None,
    progress: Progress,
    checked: set[str],
) -> Iterator[bytes]:
    """A volume's tar out of the store, hashed on the way; other bytes than the manifest's
    stop the restore before the engine has the whole stream. Its name goes into `checked`
    once it was read to its end and matched. The next volume's read starts with this one's."""
    digest, count = hashlib.sha256(), 0
    if then is not None:
        then.start()
    try:
        for chunk in chunks:
            digest.update(chunk)
            count += len(chunk)
            progress.advance(len(chunk))
            yield chunk
    except RepositoryLocked:
        raise  # a prune began meanwhile: nothing is damaged
    except StoreError as exc:  # restic found a chunk damaged, or the object gone
        raise StoreError(f"{exc}; {damage_advice(snapshot=snapshot)}") from exc
    if count != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
        raise StoreError(
            f"snapshot #{snapshot.pk} {name}: read {count} bytes with sha256 {digest.hexdigest()[:12]}…, "
            f"manifest says {entry['bytes']} bytes, {entry['sha256'][:12]}…; {damage_advice(snapshot=snapshot)}"
        )
    checked.add(name)


def _restore_precheck(*, snapshot: Snapshot) -> None:
    """Before the pod changes state or any container or volume is made: a deduplicated store
    opens with the key in SNAPSHOT_KEY_FILE and lists every object of the snapshot (one
    `restic snapshots`, a wrong key refused in one line; for a folder snapshot in a
    repository this key opened before, its restic snapshot's file found by id, `restic_raw`).
    A restore that cannot read its first byte must not create, then remove, a container and
    eight volumes."""
    store = store_from_url(snapshot.store_url)
    if not isinstance(store, DedupStore):
        return
    keys = [entry["key"] for entry in (snapshot.manifest or {}).values() if isinstance(entry, dict)]
    if folder_layout(snapshot.manifest):
        folders_precheck(store=store, engine=engine_for(snapshot.pod.host), always=True)
    locks = restic_raw.lock_ids_if_opened(store)  # None: only restic can tell
    if locks != []:
        # The restore's restics take the lock: a dead prune's goes first, a live one's is waited out.
        store.exclusive_wait(what=f"starting pod {snapshot.pod.pod_id!r}")
    elif folder_layout(snapshot.manifest) and restic_raw.snapshot_present(store, restic_id_of(snapshot.manifest)):
        return  # found by its file's id, the key not derived (the restore reads and checks every chunk)
    missing = sorted(set(keys) - store.keys_present(keys))
    if missing:
        raise StoreError(
            f"snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id} is not whole in {store.url} (missing "
            f"{', '.join(missing)}); nothing was touched: run Verify on the pod's snapshots before starting it"
        )


def _container_started(engine: DockerEngine, pod: Pod, volumes: list[PodVolume]) -> Future:
    """The restored pod's container started, its volumes' sizes measured beside the start
    (`pod_sizes_measure` records them once the pod counts as running)."""
    measuring = sizes_measuring(engine, [volume.docker_name for volume in volumes])
    engine.container_start(pod.container_name)
    return measuring


def _restore(*, pod: Pod, snapshot: Snapshot, engine: DockerEngine, operation: Operation | None) -> tuple[str, Future]:
    """Restore `snapshot` into new volumes and start the container: its id, and the
    measurement of its volumes under way."""
    store: SnapshotStore = store_from_url(snapshot.store_url)
    manifest = snapshot.manifest
    if set(manifest) != set(VOLUME_MOUNTS):
        raise StoreError(f"snapshot #{snapshot.pk} does not hold all eight volumes")
    store.remember(manifest)
    # Volumes of a stopped pod were verified gone when it stopped: any found now are left
    # over from an earlier failed restore and hold nothing the snapshot does not.
    engine.container_remove(pod.container_name)
    _volumes_remove(pod=pod, engine=engine, operation=operation)
    volumes = _volumes(pod)
    for volume in volumes:
        labels = {**_labels(pod.pod_id, volume.name), **restored_labels(manifest)}
        engine.volume_create(name=volume.docker_name, labels=labels)
    info = _container_create(pod=pod, engine=engine, volumes=volumes, copy_image_content=False)
    progress = Progress(operation, total=snapshot.total_bytes, unit="bytes")
    if folder_layout(manifest):
        mounts = {volume.docker_name: folder_name(volume) for volume in volumes}
        try:
            folders_restore(
                pod=pod, snapshot=snapshot, engine=engine, mounts=mounts, operation=operation, progress=progress
            )
        except RepositoryLocked:
            raise  # a prune began meanwhile: nothing is damaged, its message says when to try again
        except StoreError as exc:  # restic found a chunk damaged, or a file not as it stored it
            raise StoreError(f"{exc}; {damage_advice(snapshot=snapshot)}") from exc
        progress.flush()
        Pod.objects.filter(pk=pod.pk).update(restored_at=timezone.now())  # before anything in it runs
        return info.id, _container_started(engine, pod, volumes)
    # Each tar holds its mount folder itself (`workspace/…`): it unpacks into the parent. The
    # volumes that share a parent go as one stream, each volume's tar cut at its end marker
    # (`joined`): one unpacking by the engine, not one per volume (each costs a fixed tenth of
    # a second or so, and the engine unpacks into a container one stream at a time).
    by_parent: dict[str, list[PodVolume]] = {}
    for volume in volumes:
        by_parent.setdefault(str(PurePosixPath(volume.mount_path).parent), []).append(volume)
    order = [volume for group in by_parent.values() for volume in group]
    reads = {volume.name: _ReadAhead(store.read(manifest[volume.name]["key"])) for volume in order}
    following = dict(zip([v.name for v in order], [reads[v.name] for v in order[1:]] + [None], strict=True))
    checked: set[str] = set()
    try:
        for parent, group in by_parent.items():
            streams = [
                _volume_read(
                    snapshot=snapshot,
                    name=volume.name,
                    entry=manifest[volume.name],
                    chunks=reads[volume.name],
                    then=following[volume.name],
                    progress=progress,
                    checked=checked,
                )
                for volume in group
            ]
            engine.archive_write(
                container=pod.container_name, path=parent, chunks=joined(streams, names=[v.mount_path for v in group])
            )
            # The engine may stop reading before the end (a tar that ends early inside, then
            # the send fails quietly): a volume whose end was never read was never checked.
            unread = [volume.name for volume in group if volume.name not in checked]
            if unread:
                raise StoreError(
                    f"snapshot #{snapshot.pk}: the engine stopped reading before the end of "
                    f"{', '.join(unread)}; its sha256 could not be checked, so the restore is not trusted"
                )
            for volume in group:
                size = humanize_bytes(manifest[volume.name]["bytes"])
                _log(operation, f"restored {volume.docker_name}: {size}, sha256 matches")
    finally:
        for read in reads.values():
            read.close()
    progress.flush()
    return info.id, _container_started(engine, pod, volumes)

"""Moving a pod's bytes: streaming its eight volumes into the snapshot store and verifying
them, and purging a snapshot from its store (restoring them is `restoring`).

Bytes move on worker threads; every database write (progress, log) happens on the calling
thread."""

import json
from concurrent.futures import ThreadPoolExecutor

from django.db import transaction
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, PodVolume, Snapshot
from apps.pods.services.beside import folders_precheck, object_bytes, objects_to_read
from apps.pods.services.capture import VOLUME_STREAMS as VOLUME_STREAMS  # re-exported: older imports
from apps.pods.services.capture import _unreferenced_record, snapshot_capture
from apps.pods.services.hosts import engine_for
from apps.pods.services.state import _labels, _log, _volumes
from apps.pods.services.unchanged import purge_keys
from apps.pods.services.verify import DEDUP_REPAIR
from apps.pods.snapshots import DedupStore, SnapshotStore, StoreError, store_from_url
from apps.pods.stores.restic_locks import RepositoryLocked
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes

# Objects of one snapshot verified at once (reads from the store, not from the engine).
VERIFY_STREAMS = 4


def _container_create(*, pod: Pod, engine: DockerEngine, volumes: list[PodVolume], copy_image_content: bool):
    return engine.container_create(
        name=pod.container_name,
        image=pod.image,
        mounts={v.docker_name: v.mount_path for v in volumes},
        labels=_labels(pod.pod_id),
        copy_image_content=copy_image_content,
    )


def _container_for_volumes(*, pod: Pod, engine: DockerEngine) -> None:
    """Make sure a container with the eight volumes exists (not started) to read them through."""
    if engine.container_get(pod.container_name) is None:
        _container_create(pod=pod, engine=engine, volumes=_volumes(pod), copy_image_content=False)


def _snapshot_verify(*, store: SnapshotStore, snapshot: Snapshot, manifest: dict, operation: Operation | None) -> None:
    """Every object the snapshot relies on read back (or checksummed by the store) at once,
    VERIFY_STREAMS at a time: a deduplicated store reads each through its own restic process,
    most of whose time is spent deriving the key, not moving bytes. A volume kept as an
    earlier snapshot's object, or written as chunks the store already held, is read back
    too: what was read when that snapshot was taken proves nothing about the store now.
    Failures are told in volume order."""
    with ThreadPoolExecutor(max_workers=VERIFY_STREAMS, thread_name_prefix="verify") as pool:
        checks = {
            names[0]: pool.submit(
                store.verify,
                entry["key"],
                expected_bytes=object_bytes(entry),
                expected_sha256=entry["sha256"],
                expected_etag=entry["etag"],
            )
            for names, entry in objects_to_read(manifest)
        }
        written = pool.submit(store.get_small, f"{snapshot.prefix}/manifest.json")
        try:
            for name, entry in manifest.items():
                if name not in checks:
                    continue  # held in the object read for another volume
                try:
                    checks[name].result()
                except RepositoryLocked:
                    raise  # a prune holds the store: nothing is damaged
                except StoreError as exc:
                    raise _readback_failure(store=store, snapshot=snapshot, name=name, entry=entry, exc=exc) from exc
                if "same_as" in entry:
                    how = "kept as it is in the store" if entry.get("reused") else "no new chunk in the store"
                    _log(operation, f"verified {name}: the same bytes as snapshot #{entry['same_as']}, {how}")
                else:
                    _log(operation, f"verified {name} in {store.url}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the stop has failed: read no more
            raise
        if json.loads(written.result())["volumes"] != manifest:
            raise StoreError(f"{store.url}/{snapshot.prefix}/manifest.json does not read back as written")


def _snapshot_reverify(*, snapshot: Snapshot, operation: Operation | None) -> None:
    """A resumed stop relies on the snapshot its earlier attempt took: read it back again now,
    in this operation, before any volume goes (what was read then proves nothing about now)."""
    _log(operation, f"resuming: reading snapshot #{snapshot.pk} back again before any volume is removed")
    _snapshot_verify(
        store=store_from_url(snapshot.store_url), snapshot=snapshot, manifest=snapshot.manifest, operation=operation
    )


def _readback_failure(
    *, store: SnapshotStore, snapshot: Snapshot, name: str, entry: dict, exc: StoreError
) -> StoreError:
    """A volume does not read back: the store's copy of it is damaged (in a deduplicating
    store, a decayed pack that no later backup writes again: restic stores a chunk once). The
    pod's complete snapshots that point at that copy are marked as failing their re-read (no
    later stop takes one as its reference), and the sentence says what to do."""
    relying = [
        pk
        for pk, manifest in Snapshot.objects.filter(
            pod_id=snapshot.pod_id, store_url=snapshot.store_url, status=Snapshot.Status.COMPLETE
        ).values_list("pk", "manifest")
        if any(isinstance(e, dict) and e.get("key") == entry["key"] for e in (manifest or {}).values())
    ]
    Snapshot.objects.filter(pk__in=relying).update(
        verify_error=f"{name}: {exc}"[:2000], verify_checked_at=timezone.now()
    )
    held = f", kept from snapshot #{entry['same_as']}," if entry.get("reused") else ""
    marked = f" (snapshot {', '.join(f'#{pk}' for pk in relying)} marked as failing verification)" if relying else ""
    then = f"and {DEDUP_REPAIR}" if isinstance(store, DedupStore) else "or stop it again to write a new copy"
    return StoreError(
        f"snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id}: volume {name}{held} does not read back from "
        f"the store ({exc}){marked}; the pod keeps its eight volumes: start it to go on working, {then}"
    )


def _needed_bytes(pod: Pod) -> int | None:
    """The last measured sizes of the pod's volumes (reconcile's, or the last snapshot's)."""
    measured = [v.size_bytes for v in _volumes(pod) if v.size_bytes is not None]
    return sum(measured) if measured else None


def _snapshot_precheck(*, pod: Pod) -> None:
    """Before the pod changes state or its container stops: the store answers, holds the
    right key, is not being pruned, and has room for the last measured sizes."""
    store = store_from_url()
    folders_precheck(store=store, engine=engine_for(pod.host))
    store.preflight(needed_bytes=_needed_bytes(pod), what=f"stopping pod {pod.pod_id!r}")


def _snapshot_take(
    *, pod: Pod, engine: DockerEngine, operation: Operation | None, prechecked: bool = False
) -> Snapshot:
    store = store_from_url()
    if not prechecked:  # a resumed stop skipped the up-front check: now, before the container stops
        folders_precheck(store=store, engine=engine)
        store.preflight(needed_bytes=_needed_bytes(pod), what=f"stopping pod {pod.pod_id!r}")
    volumes = _volumes(pod)
    missing = [v.docker_name for v in volumes if not engine.volume_exists(v.docker_name)]
    if missing:
        raise PanelError(f"pod {pod.pod_id!r} is missing volumes {', '.join(missing)}; nothing was removed")
    info = engine.container_get(pod.container_name)
    if info is not None and info.status != "created":
        _log(operation, f"stopping the container {pod.container_name}")
        engine.container_stop(pod.container_name)
        _log(operation, f"stopped container {pod.container_name}")
    _container_for_volumes(pod=pod, engine=engine)
    # Earlier attempts that died mid-upload are failed now: this operation holds the pod.
    Snapshot.objects.filter(pod=pod, status__in=[Snapshot.Status.PENDING, Snapshot.Status.UPLOADING]).update(
        status=Snapshot.Status.FAILED, error="interrupted; superseded by a later attempt", finished_at=timezone.now()
    )
    return snapshot_capture(
        pod=pod, engine=engine, store=store, volumes=volumes, operation=operation, readback=_snapshot_verify
    )


def _stop_writing_to(store_url: str, *, besides: Snapshot) -> bool:
    """A stop is streaming into this store now (its snapshot uploading, its operation alive)."""
    return (
        Snapshot.objects.filter(store_url=store_url, status=Snapshot.Status.UPLOADING)
        .exclude(pk=besides.pk)
        .filter(operation__status__in=Operation.ACTIVE)
        .exists()
    )


def _snapshot_purge(*, snapshot: Snapshot, actor: Actor, operation: Operation | None) -> int:
    store = store_from_url(snapshot.store_url)
    # A prune is exclusive: never under a stop writing to the same deduplicated store. Its
    # snapshots are forgotten now; their chunks stay, reported as unreferenced, until a
    # later purge prunes.
    reclaim = not (isinstance(store, DedupStore) and _stop_writing_to(snapshot.store_url, besides=snapshot))
    if not reclaim:
        _log(operation, f"{store.url}: a stop is writing to it; prune left for a later purge")
    if isinstance(store, DedupStore):
        keep, also = purge_keys(snapshot)
        removed = store.delete_prefix(snapshot.prefix, reclaim=reclaim, keep=frozenset(keep), also=frozenset(also))
    else:
        removed = store.delete_prefix(snapshot.prefix, reclaim=reclaim)
    _unreferenced_record(store, operation)
    with transaction.atomic():
        snapshot.transition(Snapshot.Status.DELETED)
        snapshot.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action=AuditAction.SNAPSHOT_DELETE,
            target_type=TargetType.POD,
            target_id=snapshot.pod.pod_id,
            bytes_reclaimed=removed,
            message=f"snapshot #{snapshot.pk} purged from {snapshot.store_url}",
            operation=operation,
        )
    _log(operation, f"purged snapshot #{snapshot.pk} ({humanize_bytes(removed)})")
    return removed

"""Moving a pod's bytes: streaming its eight volumes into the snapshot store and verifying
them, and purging a snapshot from its store (restoring them is `restoring`).

Bytes move on worker threads; every database write (progress, log) happens on the calling
thread."""

import hashlib
import json
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, Progress, Throttle, audit_record, storage_sample_record
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import UNREFERENCED_DOMAIN, Pod, PodVolume, Snapshot
from apps.pods.services.state import _error_text, _labels, _log, _volumes, host_sample
from apps.pods.services.streams import ByteCounter, Writers
from apps.pods.services.unchanged import (
    TAR_END,
    Blocks,
    Reusable,
    archive_complete,
    purge_keys,
    reference_for,
    same_as_reference,
    volume_compare,
)
from apps.pods.services.verify import DEDUP_REPAIR
from apps.pods.snapshots import DedupStore, SnapshotStore, StoreError, store_from_url
from apps.pods.stores.tarlist import TarFileList
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes

# Volumes streamed at once during a snapshot. One: dockerd holds a container's lock while an
# archive streams out of it, so a second get_archive on the same container only waits, and
# past DOCKER_TIMEOUT_SECONDS it fails the stop. The store still overlaps with the engine
# (parts upload on the writer's own threads while the next bytes are read).
VOLUME_STREAMS = 1
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


def _volume_stream(
    *, engine: DockerEngine, writers: Writers, container: str, mount_path: str, key: str, counter, cancel, reusable
) -> dict:
    """One volume: tar out of the container → sha256 → store, never more than a part in memory.
    A volume the reference holds is compared first (`unchanged.volume_compare`) and written only if it
    changed; a deduplicating store's entries keep their block digests for the next stop."""
    earlier = reusable.get(key.rsplit("/", 1)[-1].removesuffix(".tar"))
    counter.begin(mount_path)
    if earlier is not None:
        kept = volume_compare(
            engine=engine, container=container, mount_path=mount_path, earlier=earlier, counter=counter, cancel=cancel
        )
        if kept is not None and reusable.present(kept["key"]):
            return kept
        counter.restart(mount_path)
    digest, count, tail = hashlib.sha256(), 0, b""
    # Every file's path, size and sha256, from the same chunks (the restore drill checks them).
    files = TarFileList()
    blocks = Blocks() if isinstance(writers.store, DedupStore) else None
    writer = writers.take(key)
    try:
        for chunk in engine.archive_read(container=container, path=mount_path):
            if cancel.is_set():
                raise PanelError("stopped: another volume of this snapshot failed")
            digest.update(chunk)
            files.feed(chunk)
            if blocks is not None:
                blocks.feed(chunk)
            writer.write(chunk)
            count += len(chunk)
            tail = (tail + chunk[-len(TAR_END) :])[-len(TAR_END) :]
            counter.add(len(chunk))
        archive_complete(mount_path, count, tail)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    entry = {
        "key": key,
        "mount_path": mount_path,
        "bytes": count,
        "sha256": digest.hexdigest(),
        "etag": writer.expected_etag,
        "stored_bytes": writer.stored_bytes,
        "files": len(files.files),
        "file_list": files.files,
    }
    if writer.store_id:
        entry["store_id"] = writer.store_id
    if writer.new_chunks is not None:
        entry["new_chunks"] = writer.new_chunks
    if blocks is not None:
        entry["blocks"] = blocks.finish()
    return entry


def _volumes_stream(
    *,
    pod: Pod,
    volumes: list[PodVolume],
    engine: DockerEngine,
    store: SnapshotStore,
    snapshot: Snapshot,
    progress: Progress,
    operation: Operation | None,
    reusable: Reusable,
    writers: Writers,
) -> dict[str, dict[str, Any]]:
    """Stream VOLUME_STREAMS volumes at a time on worker threads. Threads only move bytes;
    every database write (progress, log) happens here on the calling thread."""
    counter, cancel = ByteCounter(), threading.Event()
    throttle = Throttle()
    keys = {volume.name: f"{snapshot.prefix}/{volume.name}.tar" for volume in volumes}
    with ThreadPoolExecutor(max_workers=VOLUME_STREAMS, thread_name_prefix="snapshot") as pool:
        futures = {
            pool.submit(
                _volume_stream,
                engine=engine,
                writers=writers,
                container=pod.container_name,
                mount_path=volume.mount_path,
                key=keys[volume.name],
                counter=counter,
                cancel=cancel,
                reusable=reusable,
            ): volume
            for volume in volumes
        }
        pending = set(futures)
        started = 0
        try:
            while pending:
                done, pending = wait(
                    pending, timeout=max(0.2, settings.OPERATION_PROGRESS_INTERVAL_SECONDS), return_when=FIRST_EXCEPTION
                )
                for mount_path in counter.take_began():
                    started += 1
                    _log(operation, f"streaming {mount_path}, {started} of {len(volumes)}")
                for mount_path in counter.take_changed():
                    _log(operation, f"{mount_path} changed since the last snapshot: streaming it again, to the store")
                progress.advance(counter.take())
                if throttle.due():
                    Snapshot.objects.filter(pk=snapshot.pk).update(bytes_done=progress.done)
                # In volume order, not the set's: when the daemon dies, the volume streaming
                # then fails first and every later one fails at once after it; the error
                # must name the first.
                for future in [f for f in futures if f in done]:
                    entry = future.result()  # raises the volume's failure
                    volume = futures[future]
                    unchanged = ", unchanged: nothing written" if entry.get("reused") else ""
                    _log(
                        operation,
                        f"{volume.docker_name}: {humanize_bytes(entry['bytes'])}, "
                        f"sha256 {entry['sha256'][:16]}…{unchanged}",
                    )
        except BaseException:
            cancel.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True)
    by_name = {futures[f].name: f.result() for f in futures}
    return {volume.name: by_name[volume.name] for volume in volumes}


def _snapshot_verify(*, store: SnapshotStore, snapshot: Snapshot, manifest: dict, operation: Operation | None) -> None:
    """Every object the snapshot relies on read back (or checksummed by the store) at once,
    VERIFY_STREAMS at a time: a deduplicated store reads each through its own restic process,
    most of whose time is spent deriving the key, not moving bytes. A volume kept as an
    earlier snapshot's object, or written as chunks the store already held, is read back
    too: what was read when that snapshot was taken proves nothing about the store now.
    Failures are told in volume order."""
    with ThreadPoolExecutor(max_workers=VERIFY_STREAMS, thread_name_prefix="verify") as pool:
        checks = {
            name: pool.submit(
                store.verify,
                entry["key"],
                expected_bytes=entry["bytes"],
                expected_sha256=entry["sha256"],
                expected_etag=entry["etag"],
            )
            for name, entry in manifest.items()
        }
        written = pool.submit(store.get_small, f"{snapshot.prefix}/manifest.json")
        try:
            for name, entry in manifest.items():
                try:
                    checks[name].result()
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
    store_from_url().preflight(needed_bytes=_needed_bytes(pod), what=f"stopping pod {pod.pod_id!r}")


def _unreferenced_record(store: SnapshotStore, operation: Operation | None) -> None:
    """What a deduplicated store holds that no snapshot needs, for the leak report."""
    if not isinstance(store, DedupStore):
        return
    try:
        unreferenced = store.unreferenced_bytes()
    except PanelError as exc:  # the measurement is a report, not the work: say so and go on
        _log(operation, f"could not measure unreferenced bytes in {store.url}: {exc}")
        return
    storage_sample_record(domain=UNREFERENCED_DOMAIN, subject=store.url[:255], total_bytes=unreferenced)


def _snapshot_take(
    *, pod: Pod, engine: DockerEngine, operation: Operation | None, prechecked: bool = False
) -> Snapshot:
    store = store_from_url()
    if not prechecked:  # a resumed stop skipped the up-front check: now, before the container stops
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
    # The last measurement is kept as an estimate on the snapshot, but it is no total for the
    # bar: files written since would show more done than the total. Measuring now would walk
    # every file before the first byte moves, so the bar counts the bytes so far instead.
    measured = [v.size_bytes for v in volumes if v.size_bytes is not None]
    expected = sum(measured) if measured else None
    snapshot = Snapshot.objects.create(
        pod=pod, store_url=store.url, operation=operation, expected_bytes=expected, started_at=timezone.now()
    )
    progress = Progress(operation, total=None, unit="bytes")
    reference = reference_for(pod=pod, store=store)
    reusable = Reusable(store=store, reference=reference)
    manifest_key = f"{snapshot.prefix}/manifest.json"
    # Writers are made ahead only for what will surely be written: the volumes the reference
    # does not hold, and the manifest (first, when nothing else surely is).
    writers = Writers(
        store, [f"{snapshot.prefix}/{v.name}.tar" for v in volumes if reusable.get(v.name) is None] + [manifest_key]
    )
    try:
        snapshot.transition(Snapshot.Status.UPLOADING)
        snapshot.save(update_fields=["status"])
        if len(writers.keys) == 1:
            writers.prepare(manifest_key)
        manifest = _volumes_stream(
            pod=pod,
            volumes=volumes,
            engine=engine,
            store=store,
            snapshot=snapshot,
            progress=progress,
            operation=operation,
            reusable=reusable,
            writers=writers,
        )
        same_as_reference(manifest, reference)
        # The manifest is written last: a snapshot without one never counts as complete. Its
        # per-file lists ({volume: [[path, size, sha256], …]}) live in the store's copy only.
        file_lists = {name: entry.pop("file_list") for name, entry in manifest.items()}
        manifest_body = json.dumps(
            {"pod_id": pod.pod_id, "snapshot": snapshot.pk, "volumes": manifest, "files": file_lists}, indent=1
        )
        manifest_stored = store.put_small(manifest_key, manifest_body.encode(), writer=writers.take(manifest_key))
        writers.abort_unused()  # none is left by now; never a restic process waiting on nothing
        _snapshot_verify(store=store, snapshot=snapshot, manifest=manifest, operation=operation)
    except BaseException as exc:
        snapshot.status = Snapshot.Status.FAILED
        snapshot.error = _error_text(exc)
        snapshot.finished_at = timezone.now()
        snapshot.bytes_done = progress.done
        snapshot.save(update_fields=["status", "error", "finished_at", "bytes_done"])
        # A failed backup leaves chunks no snapshot refers to: measured for the leak report.
        writers.abort_unused()
        _unreferenced_record(store, operation)
        raise
    progress.flush()
    snapshot.transition(Snapshot.Status.COMPLETE)
    snapshot.manifest = manifest
    snapshot.total_bytes = sum(entry["bytes"] for entry in manifest.values())
    snapshot.stored_bytes = sum(entry["stored_bytes"] or 0 for entry in manifest.values()) + (manifest_stored or 0)
    snapshot.bytes_done = snapshot.total_bytes
    snapshot.finished_at = timezone.now()
    snapshot.save(update_fields=["status", "manifest", "total_bytes", "stored_bytes", "bytes_done", "finished_at"])
    if snapshot.stored_bytes != snapshot.total_bytes:
        _log(operation, f"snapshot #{snapshot.pk} added {humanize_bytes(snapshot.stored_bytes)} to {store.url}")
    # The archive sizes are a fresh measurement of what the volumes held.
    for volume in volumes:
        volume.size_bytes, volume.measured_at = manifest[volume.name]["bytes"], snapshot.finished_at
    PodVolume.objects.bulk_update(volumes, ["size_bytes", "measured_at"])
    # The peak the pod reached, recorded before its volumes go: charts show what existed.
    host_sample(pod.host)
    return snapshot


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

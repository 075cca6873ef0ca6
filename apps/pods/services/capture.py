"""The streaming core every copy of a pod shares: its eight volumes, each a tar out of the
pod's container through the Docker archive API, into the snapshot store, the manifest last.

A stop (`snapshotting._snapshot_take`) calls it with the container stopped and reads the
copy back before it counts; a backup of a running pod (`backup.pod_backup`) calls it with
the container running: a file that shrinks while Docker archives it cuts the archive short
(Go's tar writer refuses the next header), so each volume is read again a bounded number of
times, and the backup fails rather than store a broken archive. A backup can be superseded
(a stop of the pod wants it): `superseded()` is asked between chunks, and a snapshot marked
failed meanwhile is never marked complete.

Bytes move on worker threads; every database write (progress, log) happens on the calling
thread."""

import gc
import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.services import Progress, Throttle, storage_sample_record
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import UNREFERENCED_DOMAIN, Pod, PodVolume, Snapshot
from apps.pods.services.beside import folders_used
from apps.pods.services.capture_folders import BackupIncomplete, folders_copy, incomplete_forget
from apps.pods.services.manifest_ahead import ManifestAhead
from apps.pods.services.state import _error_text, _log, host_sample
from apps.pods.services.streams import ByteCounter, Writers
from apps.pods.services.unchanged import (
    TAR_END,
    ArchiveCut,
    Blocks,
    Reusable,
    archive_complete,
    reference_for,
    same_as_reference,
    volume_compare,
)
from apps.pods.snapshots import DedupStore, SnapshotStore, StoreError
from apps.pods.stores.tarlist import TarFileList
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes

# Volumes streamed at once during a snapshot. One: dockerd holds a container's lock while an
# archive streams out of it, so a second get_archive on the same container only waits, and
# past DOCKER_TIMEOUT_SECONDS it fails the stop. The store still overlaps with the engine
# (parts upload on the writer's own threads while the next bytes are read).
VOLUME_STREAMS = 1
# Reads of one volume of a running container before the backup gives up on it: a process
# rewriting a file while Docker archives it cuts the archive short (found on dockerd 20.10).
RUNNING_ATTEMPTS = 3
CUT_ADVICE = (
    "a file shrank while Docker archived it (a process in the pod rewrites it); "
    "set POD_BACKUP_PAUSE=1 to pause the pod while its volumes stream"
)


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
    chunks = None
    try:
        chunks = iter(engine.archive_read(container=container, path=mount_path))
        for chunk in chunks:
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
        archive_complete(mount_path, count, tail, ended=files.ended)
        writer.close()
    except BaseException:
        writer.abort()
        if chunks is not None and hasattr(chunks, "close"):
            chunks.close()  # the daemon lets the container go only once the response is closed
            gc.collect()
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


def _volume_stream_retried(*, attempts: int, counter, mount_path: str, **stream) -> dict:
    """A running container's volume: read again while its archive comes out cut short."""
    for attempt in range(1, attempts + 1):
        try:
            return _volume_stream(counter=counter, mount_path=mount_path, **stream)
        except ArchiveCut as exc:
            if attempts == 1:
                raise  # a stopped container's archive cut short: the daemon stopped sending it
            if attempt == attempts:
                cut = f"the archive of {mount_path} came out cut short {attempts} times"
                raise ArchiveCut(f"{cut}: {CUT_ADVICE}") from exc
            counter.retry(mount_path)
    raise AssertionError("unreachable")


def _volumes_stream(
    *,
    pod: Pod,
    volumes: list[PodVolume],
    engine: DockerEngine,
    snapshot: Snapshot,
    progress: Progress,
    operation: Operation | None,
    reusable: Reusable,
    writers: Writers,
    attempts: int,
    superseded: Callable[[], str | None],
) -> dict[str, dict[str, Any]]:
    """Stream VOLUME_STREAMS volumes at a time on worker threads. Threads only move bytes;
    every database write (progress, log) happens here on the calling thread."""
    counter, cancel = ByteCounter(), threading.Event()
    throttle = Throttle()
    keys = {volume.name: f"{snapshot.prefix}/{volume.name}.tar" for volume in volumes}
    with ThreadPoolExecutor(max_workers=VOLUME_STREAMS, thread_name_prefix="snapshot") as pool:
        futures = {
            pool.submit(
                _volume_stream_retried,
                attempts=attempts,
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
                why = superseded()
                if why:
                    raise PanelError(why)
                for mount_path in counter.take_began():
                    started += 1
                    _log(operation, f"streaming {mount_path}, {started} of {len(volumes)}")
                for mount_path in counter.take_changed():
                    _log(operation, f"{mount_path} changed since the last snapshot: streaming it again, to the store")
                for mount_path in counter.take_retried():
                    _log(operation, f"the archive of {mount_path} came out cut short (a file changed): reading again")
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


def manifest_readback(
    *, store: SnapshotStore, snapshot: Snapshot, manifest: dict, operation, ahead: ManifestAhead | None = None
) -> None:
    """The manifest as written reads back (its volumes were read back as they were made).
    `ahead`: its read started before it was written, used only if it found the very bytes."""
    key = f"{snapshot.prefix}/manifest.json"
    early = ahead.found() if ahead is not None else None
    if early is not None and early.get("volumes") == manifest:
        _log(operation, "the manifest read back as written (its read began as the volumes' read-back ended)")
        return
    if json.loads(store.get_small(key))["volumes"] != manifest:
        raise StoreError(f"{store.url}/{key} does not read back as written")


def _never() -> str | None:
    return None


def snapshot_capture(
    *,
    pod: Pod,
    engine: DockerEngine,
    store: SnapshotStore,
    volumes: list[PodVolume],
    operation: Operation | None,
    container_stopped: bool = True,
    readback: Callable[..., None] | None = None,
    streaming: Callable[[], AbstractContextManager] = nullcontext,
    superseded: Callable[[Snapshot], str | None] | None = None,
) -> Snapshot:
    """Copy the volumes through `pod`'s container into `store` as one new snapshot, complete
    once its manifest is written (and, with `readback`, read back). `streaming()` is entered
    only while the volumes stream (a backup's pause); `superseded(snapshot)` says why to give
    up now, or None. A failure leaves the snapshot failed, its writers aborted."""
    # The last measurement is kept as an estimate on the snapshot, but it is no total for the
    # bar: files written since would show more done than the total. Measuring now would walk
    # every file before the first byte moves, so the bar counts the bytes so far instead.
    measured = [v.size_bytes for v in volumes if v.size_bytes is not None]
    expected = sum(measured) if measured else None
    kind = Snapshot.Kind.STOP if container_stopped else Snapshot.Kind.BACKUP
    snapshot = Snapshot.objects.create(
        pod=pod, kind=kind, store_url=store.url, operation=operation, expected_bytes=expected, started_at=timezone.now()
    )
    progress = Progress(operation, total=None, unit="bytes")
    beside = folders_used(store)
    reference = None if beside else reference_for(pod=pod, store=store)
    reusable = Reusable(store=store, reference=reference)
    manifest_key = f"{snapshot.prefix}/manifest.json"
    # Writers are made ahead only for what will surely be written: the volumes the reference
    # does not hold, and the manifest (first, when nothing else surely is).
    ahead = [] if beside else [f"{snapshot.prefix}/{v.name}.tar" for v in volumes if reusable.get(v.name) is None]
    writers = Writers(store, [*ahead, manifest_key])
    given_up = (lambda: superseded(snapshot)) if superseded is not None else _never
    try:
        snapshot.transition(Snapshot.Status.UPLOADING)
        Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.PENDING).update(status=snapshot.status)
        # A stop beside the volumes makes it once restic's backup ended (see below).
        after_backup = beside and container_stopped
        if len(writers.keys) == 1 and not after_backup:
            writers.prepare(manifest_key)
        if beside:  # every volume read back in here: the readback below checks the manifest
            early_read = ManifestAhead(store, manifest_key) if readback is not None else None
            manifest = folders_copy(
                pod=pod,
                engine=engine,
                store=store,
                volumes=volumes,
                snapshot=snapshot,
                progress=progress,
                operation=operation,
                streaming=streaming,
                superseded=given_up,
                read_back=container_stopped,
                ahead=early_read,
                # The writer's key derivation runs beside the read-back (restic's dump takes one
                # core), not beside the backup (it takes both). A backup's stays at the start:
                # the comparison with its parent that follows an unchanged backup takes both.
                backed_up=(lambda: writers.prepare(manifest_key)) if after_backup else (lambda: None),
            )
            readback = partial(manifest_readback, ahead=early_read) if readback is not None else None
        else:
            with streaming():
                manifest = _volumes_stream(
                    pod=pod,
                    volumes=volumes,
                    engine=engine,
                    snapshot=snapshot,
                    progress=progress,
                    operation=operation,
                    reusable=reusable,
                    writers=writers,
                    attempts=1 if container_stopped else RUNNING_ATTEMPTS,
                    superseded=given_up,
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
        if readback is not None:
            readback(store=store, snapshot=snapshot, manifest=manifest, operation=operation)
        why = given_up()
        if why:
            raise PanelError(why)
    except BaseException as exc:
        # Marked failed unless something else already did (a stop superseding a backup says why).
        Snapshot.objects.filter(pk=snapshot.pk, status__in=[Snapshot.Status.PENDING, Snapshot.Status.UPLOADING]).update(
            status=Snapshot.Status.FAILED, error=_error_text(exc), finished_at=timezone.now(), bytes_done=progress.done
        )
        snapshot.refresh_from_db()
        # A failed backup leaves chunks no snapshot refers to: measured for the leak report.
        writers.abort_unused()
        if isinstance(exc, BackupIncomplete):
            incomplete_forget(store, exc, operation)
        _unreferenced_record(store, operation)
        raise
    progress.flush()
    snapshot.transition(Snapshot.Status.COMPLETE)
    snapshot.manifest = manifest
    snapshot.total_bytes = sum(entry["bytes"] for entry in manifest.values())
    snapshot.stored_bytes = sum(entry["stored_bytes"] or 0 for entry in manifest.values()) + (manifest_stored or 0)
    snapshot.bytes_done = snapshot.total_bytes
    snapshot.finished_at = timezone.now()
    fields = ["status", "manifest", "total_bytes", "stored_bytes", "bytes_done", "finished_at"]
    # Complete only if it is still uploading: a snapshot a stop marked failed meanwhile stays so.
    if not Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.UPLOADING).update(
        **{field: getattr(snapshot, field) for field in fields}
    ):
        snapshot.refresh_from_db()
        raise PanelError(f"snapshot #{snapshot.pk} of pod {pod.pod_id} was not kept: {snapshot.error}")
    if snapshot.stored_bytes != snapshot.total_bytes:
        _log(operation, f"snapshot #{snapshot.pk} added {humanize_bytes(snapshot.stored_bytes)} to {store.url}")
    # The archive sizes are a fresh measurement of what the volumes held.
    for volume in volumes:
        volume.size_bytes, volume.measured_at = manifest[volume.name]["bytes"], snapshot.finished_at
    PodVolume.objects.bulk_update(volumes, ["size_bytes", "measured_at"])
    # The peak the pod reached, recorded before its volumes go: charts show what existed.
    host_sample(pod.host)
    return snapshot

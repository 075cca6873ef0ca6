"""Every side effect on pods: one function per action, called by the admin, the pages,
the schedules and `manage.py pods` alike.

Order of work for a user stop (the one that deletes data): stop the container → stream each
volume out of it into the snapshot store with sha256 and byte counts → write the manifest
last → read every object back and compare → remove the container → remove the eight
volumes by name → look again: none may remain → `stopped`. A failure before the snapshot
is verified leaves every volume in place (pod `paused`, error recorded); a failure after it
leaves the pod `stopping`, and stopping again finishes the job with the same snapshot.
"""

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.services import (
    Actor,
    Progress,
    audit_record,
    operation_create,
    operation_enqueue,
    operation_log,
    storage_sample_record,
)
from apps.pods.docker_engine import DockerEngine, DockerFailure, VolumeInfo
from apps.pods.models import (
    POD_LABEL,
    VOLUME_LABEL,
    VOLUME_MOUNTS,
    VOLUME_PREFIX,
    DockerHost,
    OrphanVolume,
    Pod,
    PodVolume,
    Snapshot,
    volume_docker_name,
)
from apps.pods.selectors import pods_busy, snapshot_leaks
from apps.pods.snapshots import SnapshotStore, StoreError, store_from_url
from controlpanel.errors import InvalidInput, NotFound, PanelError, Unreachable
from controlpanel.paths import validate_id

logger = logging.getLogger(__name__)

TASK = "apps.pods.tasks.run_pod_operation"
# Volumes streamed at once during a snapshot. One: dockerd holds a container's lock while an
# archive streams out of it, so a second get_archive on the same container only waits, and
# past DOCKER_TIMEOUT_SECONDS it fails the stop. The store still overlaps with the engine
# (parts upload on the writer's own threads while the next bytes are read).
VOLUME_STREAMS = 1
POD_ACTIONS = ["provision", "stop", "start", "deprovision", "delete"]
# Pages live at /pods/<name>/: a pod may not take one of these names.
RESERVED_POD_IDS = {"provision", "reconcile", "sweep", "retention"}

# --- hosts and engines ---------------------------------------------------------------


def host_default() -> DockerHost:
    host, _ = DockerHost.objects.get_or_create(name="local", defaults={"base_url": settings.DOCKER_HOST})
    return host


def host_get(*, name: str | None) -> DockerHost:
    if not name:
        return host_default()
    validate_id(name, kind="Docker host name")
    host = DockerHost.objects.filter(name=name).first()
    if host is None:
        raise NotFound(f"Docker host {name!r} does not exist; add it in the admin first")
    return host


def engine_for(host: DockerHost) -> DockerEngine:
    return DockerEngine(host_name=host.name, base_url=host.base_url)


def pod_get(*, pod_id: str) -> Pod:
    validate_id(pod_id, kind="pod id")
    pod = Pod.objects.select_related("host").filter(pod_id=pod_id).first()
    if pod is None:
        raise NotFound(f"pod {pod_id!r} does not exist")
    return pod


def _locked(pod_id: str) -> Pod:
    """The pod row, locked until the surrounding transaction ends (PostgreSQL row lock)."""
    pod = Pod.objects.select_for_update().select_related("host").filter(pod_id=pod_id).first()
    if pod is None:
        raise NotFound(f"pod {pod_id!r} does not exist")
    return pod


def _volumes(pod: Pod) -> list[PodVolume]:
    return list(pod.volumes.order_by("id"))


def _labels(pod_id: str, volume: str | None = None) -> dict[str, str]:
    labels = {POD_LABEL: pod_id}
    if volume:
        labels[VOLUME_LABEL] = volume
    return labels


def _log(operation: Operation | None, line: str) -> None:
    if operation is not None:
        operation_log(operation, line)
    else:
        logger.info(line)


def _record_failure(
    *, pod_id: str, to: str, action: str, exc: BaseException, actor: Actor, operation: Operation | None
) -> None:
    """Put the pod in a state it can be recovered from, with the reason, and audit it."""
    message = str(exc) if isinstance(exc, PanelError) else f"{type(exc).__name__}: {exc}"
    with transaction.atomic():
        pod = _locked(pod_id)
        if pod.status != to:
            pod.transition(to)
        pod.last_error = message
        pod.updated_at = timezone.now()
        pod.save()
        audit_record(
            actor=actor,
            action=action,
            target_type="pod",
            target_id=pod_id,
            outcome=AuditEvent.Outcome.FAILED,
            message=message,
            operation=operation,
        )


def _volumes_remove(*, pod: Pod, engine: DockerEngine, operation: Operation | None) -> list[str]:
    """Remove the pod's eight volumes by name, then look again: none may remain."""
    # container.remove(v=True) removes only anonymous volumes, never named ones, so each
    # named volume is removed explicitly here (the leak this panel exists to prevent).
    removed, refusals = [], []
    for volume in _volumes(pod):
        try:
            if engine.volume_remove(volume.docker_name):
                removed.append(volume.docker_name)
        except DockerFailure as exc:
            # Keep going: every other volume is just as safely stored; a retry handles this one.
            refusals.append(str(exc))
    remaining = [v.docker_name for v in _volumes(pod) if engine.volume_exists(v.docker_name)]
    PodVolume.objects.filter(pod=pod).exclude(docker_name__in=remaining).update(exists=False)
    if refusals:
        raise DockerFailure(refusals[0] + (f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""))
    if remaining:
        raise DockerFailure(f"volumes still exist after removal: {', '.join(remaining)}")
    _log(operation, f"removed {len(removed)} volumes by name; none remain")
    return removed


def _held_bytes(pod: Pod) -> int:
    return sum(v.size_bytes or 0 for v in _volumes(pod))


def _volume_rows_ensure(pod: Pod) -> None:
    existing = set(pod.volumes.values_list("name", flat=True))
    PodVolume.objects.bulk_create(
        [
            PodVolume(pod=pod, name=name, docker_name=volume_docker_name(pod.pod_id, name), mount_path=path)
            for name, path in VOLUME_MOUNTS.items()
            if name not in existing
        ]
    )


# --- provision -------------------------------------------------------------------------


def pod_provision(
    *,
    pod_id: str,
    actor: Actor,
    image: str | None = None,
    host_name: str | None = None,
    operation: Operation | None = None,
) -> dict:
    """Create the eight volumes and the container, start it. On any failure remove whatever
    was created and mark the pod failed with the reason."""
    validate_id(pod_id, kind="pod id")
    if pod_id in RESERVED_POD_IDS or len(pod_id) > 64:
        raise InvalidInput(f"pod id {pod_id!r} is not valid: use up to 64 characters, not {sorted(RESERVED_POD_IDS)}")
    image = image or settings.POD_IMAGE
    if not image or len(image) > 255 or any(c.isspace() for c in image):
        raise InvalidInput(f"image {image!r} is not a valid image reference")
    host = host_get(name=host_name)
    # An unreachable host is refused before any row or volume exists.
    engine = engine_for(host)
    engine.ping()
    with transaction.atomic():
        pod = Pod.objects.select_for_update().filter(pod_id=pod_id).first()
        if pod is None:
            pod = Pod.objects.create(pod_id=pod_id, host=host, image=image, status=Pod.Status.PROVISIONING)
        else:
            if pod.status not in Pod.TRANSITIONS or Pod.Status.PROVISIONING not in Pod.TRANSITIONS[pod.status]:
                raise InvalidInput(f"pod {pod_id!r} already exists and is {pod.status}")
            pod.transition(Pod.Status.PROVISIONING)
            pod.host, pod.image, pod.last_error, pod.container_id = host, image, "", None
            pod.save()
        _volume_rows_ensure(pod)
    volumes = _volumes(pod)
    _log(operation, f"provisioning {pod_id} on {host.name} from {image}")
    try:
        for volume in volumes:
            engine.volume_create(name=volume.docker_name, labels=_labels(pod_id, volume.name))
        container = engine.container_create(
            name=pod.container_name,
            image=image,
            mounts={v.docker_name: v.mount_path for v in volumes},
            labels=_labels(pod_id),
            copy_image_content=True,
        )
        engine.container_start(pod.container_name)
    except Exception as exc:
        cleanup_error = _provision_cleanup(pod=pod, engine=engine, operation=operation)
        reason = str(exc) if isinstance(exc, PanelError) else f"{type(exc).__name__}: {exc}"
        if cleanup_error:
            reason += f" (cleanup left something behind: {cleanup_error}; reconcile reports it)"
        _record_failure(
            pod_id=pod_id,
            to=Pod.Status.FAILED,
            action="pod.provision",
            exc=PanelError(reason),
            actor=actor,
            operation=operation,
        )
        raise PanelError(f"provisioning pod {pod_id!r} failed: {reason}") from exc
    with transaction.atomic():
        pod = _locked(pod_id)
        pod.transition(Pod.Status.RUNNING)
        pod.container_id = container.id
        pod.save()
        PodVolume.objects.filter(pod=pod).update(exists=True)
        audit_record(
            actor=actor,
            action="pod.provision",
            target_type="pod",
            target_id=pod_id,
            message=f"provisioned on {host.name} from {image}",
            operation=operation,
        )
    return {"pod_id": pod_id, "container_id": container.id, "volumes": [v.docker_name for v in volumes]}


def _provision_cleanup(*, pod: Pod, engine: DockerEngine, operation: Operation | None) -> str:
    """Remove whatever a failed provision created; returns what could not be removed."""
    try:
        engine.container_remove(pod.container_name)
        _volumes_remove(pod=pod, engine=engine, operation=operation)
    except PanelError as exc:
        return str(exc)
    return ""


# --- stop with snapshot ----------------------------------------------------------------


def pod_stop(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    validate_id(pod_id, kind="pod id")
    with transaction.atomic():
        pod = _locked(pod_id)
        resuming = pod.status == Pod.Status.STOPPING
        pod.transition(Pod.Status.STOPPING)
        pod.last_error = ""
        pod.save()
    engine = engine_for(pod.host)
    snapshot = None
    if resuming:
        # A snapshot verified since this stop began still holds every byte: the container
        # has not run since (a stopping pod cannot be started).
        snapshot = (
            Snapshot.objects.filter(pod=pod, status=Snapshot.Status.COMPLETE, finished_at__gte=pod.status_changed_at)
            .order_by("-finished_at")
            .first()
        )
        if snapshot is not None:
            _log(operation, f"resuming: snapshot #{snapshot.pk} is already verified")
    # Before the snapshot is verified: any failure leaves all eight volumes where they are.
    if snapshot is None:
        try:
            snapshot = _snapshot_take(pod=pod, engine=engine, operation=operation)
        except BaseException as exc:
            _record_failure(
                pod_id=pod_id, to=Pod.Status.PAUSED, action="pod.stop", exc=exc, actor=actor, operation=operation
            )
            raise
    # After it: the container and volumes go; a failure here keeps the pod `stopping`.
    try:
        engine.container_remove(pod.container_name)
        _log(operation, f"removed container {pod.container_name}")
        _volumes_remove(pod=pod, engine=engine, operation=operation)
    except BaseException as exc:
        _record_failure(
            pod_id=pod_id, to=Pod.Status.STOPPING, action="pod.stop", exc=exc, actor=actor, operation=operation
        )
        raise
    with transaction.atomic():
        pod = _locked(pod_id)
        reclaimed = _held_bytes(pod)
        pod.transition(Pod.Status.STOPPED)
        pod.container_id = None
        pod.last_error = ""
        pod.save()
        audit_record(
            actor=actor,
            action="pod.stop",
            target_type="pod",
            target_id=pod_id,
            bytes_reclaimed=reclaimed,
            message=f"snapshot #{snapshot.pk} verified ({snapshot.total_bytes} bytes); container and 8 volumes removed",
            details={"snapshot": snapshot.pk},
            operation=operation,
        )
    return {"pod_id": pod_id, "snapshot": snapshot.pk, "snapshot_bytes": snapshot.total_bytes}


class _Throttle:
    def __init__(self):
        self.last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= settings.OPERATION_PROGRESS_INTERVAL_SECONDS:
            self.last = now
            return True
        return False


def _container_for_volumes(*, pod: Pod, engine: DockerEngine) -> None:
    """Make sure a container with the eight volumes exists (not started) to read them through."""
    if engine.container_get(pod.container_name) is None:
        volumes = _volumes(pod)
        engine.container_create(
            name=pod.container_name,
            image=pod.image,
            mounts={v.docker_name: v.mount_path for v in volumes},
            labels=_labels(pod.pod_id),
            copy_image_content=False,
        )


class _ByteCounter:
    """Bytes moved by the streaming threads, collected by the main thread for progress."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = 0

    def add(self, amount: int) -> None:
        with self._lock:
            self._pending += amount

    def take(self) -> int:
        with self._lock:
            amount, self._pending = self._pending, 0
        return amount


def _volume_stream(
    *, engine: DockerEngine, store: SnapshotStore, container: str, mount_path: str, key: str, counter, cancel
) -> dict:
    """One volume: tar out of the container → sha256 → store, never more than a part in memory."""
    digest, count = hashlib.sha256(), 0
    writer = store.writer(key)
    try:
        for chunk in engine.archive_read(container=container, path=mount_path):
            if cancel.is_set():
                raise PanelError("stopped: another volume of this snapshot failed")
            digest.update(chunk)
            writer.write(chunk)
            count += len(chunk)
            counter.add(len(chunk))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {
        "key": key,
        "mount_path": mount_path,
        "bytes": count,
        "sha256": digest.hexdigest(),
        "etag": writer.expected_etag,
    }


def _volumes_stream(
    *,
    pod: Pod,
    volumes: list[PodVolume],
    engine: DockerEngine,
    store: SnapshotStore,
    snapshot: Snapshot,
    progress: Progress,
    operation: Operation | None,
) -> dict[str, dict[str, Any]]:
    """Stream VOLUME_STREAMS volumes at a time on worker threads. Threads only move bytes;
    every database write (progress, log) happens here on the calling thread."""
    counter, cancel = _ByteCounter(), threading.Event()
    throttle = _Throttle()
    with ThreadPoolExecutor(max_workers=VOLUME_STREAMS, thread_name_prefix="snapshot") as pool:
        futures = {
            pool.submit(
                _volume_stream,
                engine=engine,
                store=store,
                container=pod.container_name,
                mount_path=volume.mount_path,
                key=f"{snapshot.prefix}/{volume.name}.tar",
                counter=counter,
                cancel=cancel,
            ): volume
            for volume in volumes
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(
                    pending, timeout=max(0.2, settings.OPERATION_PROGRESS_INTERVAL_SECONDS), return_when=FIRST_EXCEPTION
                )
                progress.advance(counter.take())
                if throttle.due():
                    Snapshot.objects.filter(pk=snapshot.pk).update(bytes_done=progress.done)
                for future in done:
                    entry = future.result()  # raises the volume's failure
                    volume = futures[future]
                    _log(operation, f"{volume.docker_name}: {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}…")
        except BaseException:
            cancel.set()
            raise
    by_name = {futures[f].name: f.result() for f in futures}
    return {volume.name: by_name[volume.name] for volume in volumes}


def _snapshot_take(*, pod: Pod, engine: DockerEngine, operation: Operation | None) -> Snapshot:
    store = store_from_url()
    volumes = _volumes(pod)
    missing = [v.docker_name for v in volumes if not engine.volume_exists(v.docker_name)]
    if missing:
        raise PanelError(f"pod {pod.pod_id!r} is missing volumes {', '.join(missing)}; nothing was removed")
    info = engine.container_get(pod.container_name)
    if info is not None and info.status != "created":
        engine.container_stop(pod.container_name)
        _log(operation, f"stopped container {pod.container_name}")
    _container_for_volumes(pod=pod, engine=engine)
    # Earlier attempts that died mid-upload are failed now: this operation holds the pod.
    Snapshot.objects.filter(pod=pod, status__in=[Snapshot.Status.PENDING, Snapshot.Status.UPLOADING]).update(
        status=Snapshot.Status.FAILED, error="interrupted; superseded by a later attempt", finished_at=timezone.now()
    )
    # The progress bar's total comes from the last reconcile's measurement: measuring now
    # (`docker system df`) would walk every volume on the host before the first byte moves.
    measured = [v.size_bytes for v in volumes if v.size_bytes is not None]
    expected = sum(measured) if measured else None
    snapshot = Snapshot.objects.create(
        pod=pod, store_url=store.url, operation=operation, expected_bytes=expected, started_at=timezone.now()
    )
    progress = Progress(operation, total=expected, unit="bytes")
    try:
        snapshot.transition(Snapshot.Status.UPLOADING)
        snapshot.save(update_fields=["status"])
        manifest = _volumes_stream(
            pod=pod,
            volumes=volumes,
            engine=engine,
            store=store,
            snapshot=snapshot,
            progress=progress,
            operation=operation,
        )
        # The manifest is written last: a snapshot without one never counts as complete.
        manifest_body = json.dumps({"pod_id": pod.pod_id, "snapshot": snapshot.pk, "volumes": manifest}, indent=1)
        store.put_small(f"{snapshot.prefix}/manifest.json", manifest_body.encode())
        for name, entry in manifest.items():
            store.verify(
                entry["key"],
                expected_bytes=entry["bytes"],
                expected_sha256=entry["sha256"],
                expected_etag=entry["etag"],
            )
            _log(operation, f"verified {name} in {store.url}")
        if json.loads(store.get_small(f"{snapshot.prefix}/manifest.json"))["volumes"] != manifest:
            raise StoreError(f"{store.url}/{snapshot.prefix}/manifest.json does not read back as written")
    except BaseException as exc:
        snapshot.status = Snapshot.Status.FAILED
        snapshot.error = str(exc) if isinstance(exc, PanelError) else f"{type(exc).__name__}: {exc}"
        snapshot.finished_at = timezone.now()
        snapshot.bytes_done = progress.done
        snapshot.save(update_fields=["status", "error", "finished_at", "bytes_done"])
        raise
    progress.flush()
    snapshot.transition(Snapshot.Status.COMPLETE)
    snapshot.manifest = manifest
    snapshot.total_bytes = sum(entry["bytes"] for entry in manifest.values())
    snapshot.bytes_done = snapshot.total_bytes
    snapshot.finished_at = timezone.now()
    snapshot.save(update_fields=["status", "manifest", "total_bytes", "bytes_done", "finished_at"])
    # The archive sizes are a fresh measurement of what the volumes held.
    for volume in volumes:
        volume.size_bytes, volume.measured_at = manifest[volume.name]["bytes"], snapshot.finished_at
    PodVolume.objects.bulk_update(volumes, ["size_bytes", "measured_at"])
    return snapshot


# --- start -----------------------------------------------------------------------------


def pod_start(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Paused: reattach its volumes. Stopped: restore the latest complete snapshot into new
    volumes and check every sha256 before the pod counts as running."""
    validate_id(pod_id, kind="pod id")
    with transaction.atomic():
        pod = _locked(pod_id)
        if pod.status == Pod.Status.STOPPED or (pod.status == Pod.Status.STARTING and pod.restoring_snapshot_id):
            snapshot = pod.restoring_snapshot or _latest_complete(pod)
            if snapshot is None:
                raise PanelError(f"pod {pod_id!r} is stopped but has no complete snapshot to restore")
            pod.transition(Pod.Status.STARTING)
            pod.restoring_snapshot = snapshot
        else:
            snapshot = None
            pod.transition(Pod.Status.STARTING)
        pod.last_error = ""
        pod.save()
    engine = engine_for(pod.host)
    if snapshot is None:
        try:
            container_id = _reattach(pod=pod, engine=engine, operation=operation)
        except BaseException as exc:
            _record_failure(
                pod_id=pod_id, to=Pod.Status.PAUSED, action="pod.start", exc=exc, actor=actor, operation=operation
            )
            raise
        message = "reattached its volumes and started the container"
    else:
        try:
            container_id = _restore(pod=pod, snapshot=snapshot, engine=engine, operation=operation)
        except BaseException as exc:
            # The snapshot still holds every byte: drop the partial restore, back to stopped.
            try:
                engine.container_remove(pod.container_name)
                _volumes_remove(pod=pod, engine=engine, operation=operation)
            except PanelError as cleanup_exc:
                logger.warning("cleaning up the failed restore of %s: %s", pod_id, cleanup_exc)
            _record_failure(
                pod_id=pod_id, to=Pod.Status.STOPPED, action="pod.start", exc=exc, actor=actor, operation=operation
            )
            Pod.objects.filter(pod_id=pod_id).update(restoring_snapshot=None)
            raise
        message = f"restored snapshot #{snapshot.pk} (sha256 verified) and started the container"
    with transaction.atomic():
        pod = _locked(pod_id)
        pod.transition(Pod.Status.RUNNING)
        pod.container_id = container_id
        pod.restoring_snapshot = None
        pod.save()
        PodVolume.objects.filter(pod=pod).update(exists=True)
        audit_record(
            actor=actor, action="pod.start", target_type="pod", target_id=pod_id, message=message, operation=operation
        )
    return {"pod_id": pod_id, "container_id": container_id, "restored_snapshot": snapshot.pk if snapshot else None}


def _latest_complete(pod: Pod) -> Snapshot | None:
    return pod.snapshots.filter(status=Snapshot.Status.COMPLETE).order_by("-finished_at", "-id").first()


def _reattach(*, pod: Pod, engine: DockerEngine, operation: Operation | None) -> str:
    missing = [v.docker_name for v in _volumes(pod) if not engine.volume_exists(v.docker_name)]
    if missing:
        raise PanelError(
            f"pod {pod.pod_id!r} is missing volumes {', '.join(missing)}; nothing was started "
            "(deprovision it, or restore it from a snapshot by stopping and starting)"
        )
    _container_for_volumes(pod=pod, engine=engine)
    engine.container_start(pod.container_name)
    info = engine.container_get(pod.container_name)
    _log(operation, f"started {pod.container_name} with its eight volumes")
    return info.id if info else ""


def _hashing(chunks: Iterator[bytes], digest, counter: list[int], progress: Progress) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        counter[0] += len(chunk)
        progress.advance(len(chunk))
        yield chunk


def _restore(*, pod: Pod, snapshot: Snapshot, engine: DockerEngine, operation: Operation | None) -> str:
    store: SnapshotStore = store_from_url(snapshot.store_url)
    manifest = snapshot.manifest
    if set(manifest) != set(VOLUME_MOUNTS):
        raise StoreError(f"snapshot #{snapshot.pk} does not hold all eight volumes")
    # Volumes of a stopped pod were verified gone when it stopped: any found now are left
    # over from an earlier failed restore and hold nothing the snapshot does not.
    engine.container_remove(pod.container_name)
    _volumes_remove(pod=pod, engine=engine, operation=operation)
    volumes = _volumes(pod)
    for volume in volumes:
        engine.volume_create(name=volume.docker_name, labels=_labels(pod.pod_id, volume.name))
    info = engine.container_create(
        name=pod.container_name,
        image=pod.image,
        mounts={v.docker_name: v.mount_path for v in volumes},
        labels=_labels(pod.pod_id),
        copy_image_content=False,
    )
    progress = Progress(operation, total=snapshot.total_bytes, unit="bytes")
    for volume in volumes:
        entry = manifest[volume.name]
        digest, counter = hashlib.sha256(), [0]
        # The tar holds the mount folder itself (`workspace/…`): unpack it into the parent.
        parent = str(PurePosixPath(volume.mount_path).parent)
        engine.archive_write(
            container=pod.container_name,
            path=parent,
            chunks=_hashing(store.read(entry["key"]), digest, counter, progress),
        )
        if counter[0] != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
            raise StoreError(
                f"snapshot #{snapshot.pk} {volume.name}: read {counter[0]} bytes with sha256 "
                f"{digest.hexdigest()[:12]}…, manifest says {entry['bytes']} bytes, {entry['sha256'][:12]}…"
            )
        _log(operation, f"restored {volume.docker_name}: {counter[0]} bytes, sha256 matches")
    progress.flush()
    engine.container_start(pod.container_name)
    return info.id


# --- deprovision and delete --------------------------------------------------------------


def pod_deprovision(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Remove the container and all eight volumes by name; snapshots stay."""
    return _pod_remove(pod_id=pod_id, actor=actor, operation=operation, purge_snapshots=False)


def pod_delete(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Remove the container, the eight volumes and every snapshot of the pod."""
    return _pod_remove(pod_id=pod_id, actor=actor, operation=operation, purge_snapshots=True)


def _pod_remove(*, pod_id: str, actor: Actor, operation: Operation | None, purge_snapshots: bool) -> dict:
    validate_id(pod_id, kind="pod id")
    busy, done, action = (
        (Pod.Status.DELETING, Pod.Status.DELETED, "pod.delete")
        if purge_snapshots
        else (Pod.Status.DEPROVISIONING, Pod.Status.DEPROVISIONED, "pod.deprovision")
    )
    # An unreachable host is refused before the pod changes state: it stays as it was
    # (say `unknown`) instead of `deprovisioning` with an error nobody can act on.
    engine = engine_for(pod_get(pod_id=pod_id).host)
    engine.ping()
    with transaction.atomic():
        pod = _locked(pod_id)
        pod.transition(busy)
        pod.last_error = ""
        pod.save()
    snapshot_bytes = 0
    try:
        engine.container_remove(pod.container_name)
        removed = _volumes_remove(pod=pod, engine=engine, operation=operation)
        if purge_snapshots:
            for snapshot in pod.snapshots.exclude(status=Snapshot.Status.DELETED):
                snapshot_bytes += _snapshot_purge(snapshot=snapshot, actor=actor, operation=operation)
    except BaseException as exc:
        _record_failure(pod_id=pod_id, to=busy, action=action, exc=exc, actor=actor, operation=operation)
        raise
    with transaction.atomic():
        pod = _locked(pod_id)
        reclaimed = _held_bytes(pod) if removed else 0
        pod.transition(done)
        pod.container_id = None
        pod.save()
        audit_record(
            actor=actor,
            action=action,
            target_type="pod",
            target_id=pod_id,
            bytes_reclaimed=reclaimed + snapshot_bytes,
            message=f"container and {len(removed)} volumes removed"
            + (f"; snapshots purged ({snapshot_bytes} bytes)" if purge_snapshots else ""),
            operation=operation,
        )
    return {"pod_id": pod_id, "volumes_removed": removed, "snapshot_bytes_purged": snapshot_bytes}


def _snapshot_purge(*, snapshot: Snapshot, actor: Actor, operation: Operation | None) -> int:
    store = store_from_url(snapshot.store_url)
    removed = store.delete_prefix(snapshot.prefix)
    with transaction.atomic():
        snapshot.transition(Snapshot.Status.DELETED)
        snapshot.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="snapshot.delete",
            target_type="pod",
            target_id=snapshot.pod.pod_id,
            bytes_reclaimed=removed,
            message=f"snapshot #{snapshot.pk} purged from {snapshot.store_url}",
            operation=operation,
        )
    _log(operation, f"purged snapshot #{snapshot.pk} ({removed} bytes)")
    return removed


# --- reconcile, orphans, retention -----------------------------------------------------


def _pod_id_from_volume(volume: VolumeInfo) -> str:
    if volume.labels.get(POD_LABEL):
        return volume.labels[POD_LABEL]
    rest = volume.name.removeprefix(VOLUME_PREFIX)
    for name in VOLUME_MOUNTS:
        if rest.endswith(f"-{name}"):
            return rest[: -len(name) - 1]
    return ""


def _orphans_find(*, host: DockerHost, volumes: list[VolumeInfo]) -> list[tuple[VolumeInfo, str, str]]:
    """(volume, pod id, reason) for each volume no pod needs. Pods at work are never orphans."""
    pod_ids = {_pod_id_from_volume(v) for v in volumes}
    pods = {p.pod_id: p for p in Pod.objects.filter(pod_id__in=pod_ids)}
    busy = set(pods_busy().filter(target_id__in=pod_ids))
    found = []
    for volume in volumes:
        pod_id = _pod_id_from_volume(volume)
        pod = pods.get(pod_id)
        if pod_id in busy or (pod is not None and pod.status in Pod.TRANSITIONAL):
            continue
        if pod is None:
            reason = "no pod has this id" if pod_id else "not named after a pod"
        elif pod.host_id != host.pk:
            reason = f"pod {pod_id} lives on host {pod.host_id}"
        elif pod.status in Pod.NO_VOLUMES:
            reason = f"pod {pod_id} is {pod.status}"
        elif volume.name not in {volume_docker_name(pod_id, n) for n in VOLUME_MOUNTS}:
            reason = "not one of the pod's eight volumes"
        else:
            continue
        found.append((volume, pod_id, reason))
    return found


def pods_reconcile(*, actor: Actor, operation: Operation | None = None) -> dict:
    """Compare every host with the database: crashed containers → paused (volumes kept),
    unreachable hosts → their pods unknown (nothing deleted), leaks recorded for the report."""
    host_default()
    report: dict[str, Any] = {"hosts": {}}
    for host in DockerHost.objects.all():
        report["hosts"][host.name] = _reconcile_host(host=host, actor=actor, operation=operation)
    report["resumed"] = pods_resume_interrupted(actor=actor, operation=operation)
    return report


# What an interrupted action becomes on the next run: the user's own action again (each
# resumes where it stopped), except provisioning, which holds no user data and rolls back.
RESUME_ACTIONS = {
    Pod.Status.STOPPING: "stop",
    Pod.Status.STARTING: "start",
    Pod.Status.DEPROVISIONING: "deprovision",
    Pod.Status.DELETING: "delete",
}


def pods_resume_interrupted(*, actor: Actor, operation: Operation | None = None) -> dict[str, str]:
    """Roll forward (or back) pods left mid-action by a worker that died.

    A pod is interrupted when it sits in a transitional status with no active operation and
    no recorded error: a failure always records its reason in `last_error` (and waits for a
    person), while a killed worker leaves nothing. Its operation was marked errored by
    `operation_reap_stale`. Stop, start, deprovision and delete are queued again as new
    operations (each resumes: a verified snapshot is reused, a half restore is redone);
    provisioning is rolled back and the pod marked failed."""
    interrupted = (
        Pod.objects.filter(status__in=[*RESUME_ACTIONS, Pod.Status.PROVISIONING], last_error="", host__reachable=True)
        .exclude(pod_id__in=pods_busy())
        .select_related("host")
    )
    resumed: dict[str, str] = {}
    for pod in interrupted:
        if pod.status == Pod.Status.PROVISIONING:
            resumed[pod.pod_id] = _provision_roll_back(pod_id=pod.pod_id, actor=actor, operation=operation)
            continue
        action = RESUME_ACTIONS[pod.status]
        try:
            queued = pod_operation_create(action=action, pod_id=pod.pod_id, actor=actor, params={"resumed": True})
        except PanelError as exc:  # a person (or another worker) got there first
            resumed[pod.pod_id] = f"left alone: {exc}"
            continue
        audit_record(
            actor=actor,
            action="pod.resume",
            target_type="pod",
            target_id=pod.pod_id,
            message=f"{pod.status} without a worker: {action} queued again as operation #{queued.pk}",
            operation=operation,
        )
        operation_enqueue(operation=queued)
        _log(operation, f"{pod.pod_id}: interrupted while {pod.status}; {action} queued as operation #{queued.pk}")
        resumed[pod.pod_id] = f"{action} queued as operation #{queued.pk}"
    return resumed


def _provision_roll_back(*, pod_id: str, actor: Actor, operation: Operation | None) -> str:
    with transaction.atomic():
        pod = _locked(pod_id)
        if pod.status != Pod.Status.PROVISIONING or pod.last_error:
            return "left alone: changed meanwhile"
        pod.transition(Pod.Status.FAILED)  # claims it: a failed pod is never resumed again
        pod.save()
    leftover = _provision_cleanup(pod=pod, engine=engine_for(pod.host), operation=operation)
    message = "provisioning was interrupted (its worker stopped); rolled back" + (
        f", but cleanup left something behind: {leftover}" if leftover else ": container and volumes removed"
    )
    _record_failure(
        pod_id=pod_id,
        to=Pod.Status.FAILED,
        action="pod.provision",
        exc=PanelError(message),
        actor=actor,
        operation=operation,
    )
    _log(operation, f"{pod_id}: {message}")
    return message


def _reconcile_host(*, host: DockerHost, actor: Actor, operation: Operation | None) -> dict:
    engine = engine_for(host)
    now = timezone.now()
    try:
        engine.ping()
        volumes = engine.volumes_list(name_prefix=VOLUME_PREFIX)
    except Unreachable as exc:
        host.reachable, host.last_error, host.checked_at = False, str(exc), now
        host.save(update_fields=["reachable", "last_error", "checked_at"])
        marked = []
        for pod in Pod.objects.filter(host=host, status__in=[Pod.Status.RUNNING, Pod.Status.PAUSED]):
            with transaction.atomic():
                pod = _locked(pod.pod_id)
                if pod.status not in {Pod.Status.RUNNING, Pod.Status.PAUSED}:
                    continue
                pod.transition(Pod.Status.UNKNOWN)
                pod.last_error = str(exc)
                pod.save()
                audit_record(
                    actor=actor,
                    action="pod.reconcile",
                    target_type="pod",
                    target_id=pod.pod_id,
                    outcome=AuditEvent.Outcome.FAILED,
                    message=f"host unreachable; marked unknown, nothing deleted: {exc}",
                    operation=operation,
                )
            marked.append(pod.pod_id)
        _log(operation, str(exc))
        return {"reachable": False, "error": str(exc), "unknown": marked}
    host.reachable, host.last_error, host.checked_at = True, "", now
    host.save(update_fields=["reachable", "last_error", "checked_at"])

    changed = {}
    watched = [Pod.Status.RUNNING, Pod.Status.PAUSED, Pod.Status.UNKNOWN]
    for pod in Pod.objects.filter(host=host, status__in=watched).exclude(pod_id__in=pods_busy()):
        container = engine.container_get(pod.container_name)
        running = container is not None and container.running
        target = Pod.Status.RUNNING if running else Pod.Status.PAUSED
        if pod.status == target:
            continue
        with transaction.atomic():
            pod = _locked(pod.pod_id)
            if pod.status not in watched or pod.status == target:
                continue
            before = pod.status
            pod.transition(target)
            if running:
                pod.last_error = ""
                pod.container_id = container.id
                message = f"{before} → running: its container is running"
            else:
                what = "is missing" if container is None else f"is {container.status}"
                pod.last_error = f"container {what} without a user action; volumes kept"
                message = f"{before} → paused: container {what} without a user action; volumes kept"
            pod.save()
            audit_record(
                actor=actor,
                action="pod.reconcile",
                target_type="pod",
                target_id=pod.pod_id,
                message=message,
                operation=operation,
            )
        changed[pod.pod_id] = target

    # Which of our volumes exist, how big they are, and which no pod needs.
    names = {v.name for v in volumes}
    sizes = engine.volume_sizes(name_prefix=VOLUME_PREFIX) if volumes else {}
    rows = list(PodVolume.objects.filter(pod__host=host))
    for row in rows:
        row.exists = row.docker_name in names
        if row.docker_name in sizes:
            row.size_bytes, row.measured_at = sizes[row.docker_name], now
    PodVolume.objects.bulk_update(rows, ["exists", "size_bytes", "measured_at"], batch_size=500)
    orphans = _orphans_find(host=host, volumes=volumes)
    with transaction.atomic():
        OrphanVolume.objects.filter(host=host).delete()
        OrphanVolume.objects.bulk_create(
            [
                OrphanVolume(
                    host=host,
                    docker_name=v.name,
                    pod_id=pod_id[:64],
                    reason=reason[:200],
                    size_bytes=sizes.get(v.name),
                    created_at=v.created_at,
                    seen_at=now,
                )
                for v, pod_id, reason in orphans
            ]
        )
    storage_sample_record(domain="pods", subject=host.name, total_bytes=sum(sizes.values()), total_files=None)
    _log(operation, f"{host.name}: {len(changed)} pods changed, {len(orphans)} orphaned volumes")
    return {"reachable": True, "changed": changed, "orphans": [v.name for v, _, _ in orphans]}


def orphans_plan(*, name_prefix: str = VOLUME_PREFIX, host_name: str | None = None) -> list[dict]:
    """Orphaned volumes older than POD_ORPHAN_GRACE_MINUTES, with sizes. Reads only: the
    confirmation page calls it on GET, so it creates no row (not even the default host)."""
    if not name_prefix.startswith(VOLUME_PREFIX):
        raise InvalidInput(f"name prefix {name_prefix!r} must start with {VOLUME_PREFIX!r}")
    if host_name:
        hosts = [host_get(name=host_name)]
    else:
        hosts = list(DockerHost.objects.all()) or [DockerHost(name="local", base_url=settings.DOCKER_HOST)]
    cutoff = timezone.now() - timedelta(minutes=settings.POD_ORPHAN_GRACE_MINUTES)
    plan = []
    for host in hosts:
        engine = engine_for(host)
        volumes = engine.volumes_list(name_prefix=name_prefix)
        sizes = engine.volume_sizes(name_prefix=name_prefix) if volumes else {}
        for volume, pod_id, reason in _orphans_find(host=host, volumes=volumes):
            if volume.created_at is not None and volume.created_at <= cutoff:
                plan.append(
                    {
                        "host": host,
                        "name": volume.name,
                        "pod_id": pod_id,
                        "bytes": sizes.get(volume.name),
                        "reason": reason,
                        "created_at": volume.created_at,
                        "volume": volume,
                    }
                )
    return plan


def orphans_sweep(
    *,
    actor: Actor,
    dry_run: bool = False,
    name_prefix: str = VOLUME_PREFIX,
    host_name: str | None = None,
    operation: Operation | None = None,
) -> dict:
    """Remove orphaned pod volumes older than POD_ORPHAN_GRACE_MINUTES. A dry run lists them
    with their sizes. A volume a pod at work may need is never touched."""
    if not host_name:
        host_default()
    plan = orphans_plan(name_prefix=name_prefix, host_name=host_name)
    listed, removed, errors, reclaimed = [], [], [], 0
    for item in plan:
        host = item["host"]
        entry = {"host": host.name, "name": item["name"], "bytes": item["bytes"], "reason": item["reason"]}
        listed.append(entry)
        if dry_run:
            continue
        engine = engine_for(host)
        # Look again right before removing: a pod may have been provisioned or started meanwhile.
        if not _orphans_find(host=host, volumes=[item["volume"]]):
            continue
        try:
            engine.volume_remove(item["name"])
            if engine.volume_exists(item["name"]):
                raise DockerFailure(f"volume {item['name']} still exists after removal")
        except PanelError as exc:
            errors.append(str(exc))
            continue
        removed.append(entry)
        reclaimed += entry["bytes"] or 0
        OrphanVolume.objects.filter(host=host, docker_name=item["name"]).delete()
        _log(operation, f"removed orphaned volume {item['name']} ({item['reason']})")
    outcome = (
        AuditEvent.Outcome.DRY_RUN
        if dry_run
        else (AuditEvent.Outcome.FAILED if errors else AuditEvent.Outcome.SUCCEEDED)
    )
    audit_record(
        actor=actor,
        action="pods.sweep_orphans",
        target_type="pods",
        target_id="orphans",
        outcome=outcome,
        bytes_reclaimed=0 if dry_run else reclaimed,
        message=f"{len(listed)} orphaned volumes found, {len(removed)} removed"
        + (f"; {len(errors)} failed: {errors[0]}" if errors else ""),
        details={"removed": [e["name"] for e in removed], "errors": errors[:20]},
        operation=operation,
    )
    if errors:
        raise PanelError(f"{len(errors)} orphaned volumes could not be removed: {errors[0]}")
    return {"dry_run": dry_run, "orphans": listed, "removed": [e["name"] for e in removed], "bytes": reclaimed}


def snapshots_to_retire(*, keep: int | None = None) -> list[Snapshot]:
    """What retention purges now; the rules are `selectors.snapshots_past_retention`."""
    return snapshot_leaks(keep=keep)


def snapshots_apply_retention(*, actor: Actor, keep: int | None = None, operation: Operation | None = None) -> dict:
    purged, reclaimed = [], 0
    for snapshot in snapshots_to_retire(keep=keep):
        reclaimed += _snapshot_purge(snapshot=snapshot, actor=actor, operation=operation)
        purged.append(snapshot.pk)
    return {"purged": purged, "bytes": reclaimed}


# --- previews and requests (pages, admin, CLI) -------------------------------------------


def pod_preview(*, pod_id: str, action: str) -> dict:
    """What an action will delete, for the confirmation page: items with bytes and a total."""
    if action not in POD_ACTIONS:
        raise InvalidInput(f"unknown pod action {action!r}")
    pod = pod_get(pod_id=pod_id)
    if action not in {"provision"} and not pod_action_allowed(pod, action):
        raise PanelError(f"pod {pod_id!r} is {pod.status}; it cannot be {_past(action)} now")
    volumes = _volumes(pod)
    items = []
    if action in {"stop", "deprovision", "delete"}:
        note = {
            "stop": "deleted after a verified snapshot",
            "deprovision": "deleted; snapshots are kept",
            "delete": "deleted",
        }[action]
        items += [
            {"label": v.docker_name, "bytes": v.size_bytes, "note": note if v.exists else "already gone"}
            for v in volumes
        ]
    if action == "delete":
        items += [
            {"label": f"snapshot #{s.pk} ({s.status})", "bytes": s.total_bytes, "note": f"purged from {s.store_url}"}
            for s in pod.snapshots.exclude(status=Snapshot.Status.DELETED)
        ]
    summary = {
        "stop": f"Pod {pod_id} will be snapshotted to {settings.SNAPSHOT_STORE_URL}; once every volume is verified "
        "there, its container and these eight volumes are deleted.",
        "start": f"Pod {pod_id} will be started"
        + (" from its latest complete snapshot (checksums verified first)." if pod.status == "stopped" else "."),
        "deprovision": f"Pod {pod_id}'s container and these eight volumes will be deleted. Snapshots stay.",
        "delete": f"Pod {pod_id}'s container, eight volumes and every snapshot will be deleted. This cannot be undone.",
        "provision": f"Pod {pod_id} will be provisioned again.",
    }[action]
    return {"pod": pod, "items": items, "total_bytes": sum(i["bytes"] or 0 for i in items), "summary": summary}


def _past(action: str) -> str:
    return {"stop": "stopped", "start": "started", "deprovision": "deprovisioned", "delete": "deleted"}.get(
        action, action
    )


def pod_action_allowed(pod: Pod, action: str) -> bool:
    target = {
        "stop": Pod.Status.STOPPING,
        "start": Pod.Status.STARTING,
        "deprovision": Pod.Status.DEPROVISIONING,
        "delete": Pod.Status.DELETING,
        "provision": Pod.Status.PROVISIONING,
    }[action]
    return target in Pod.TRANSITIONS.get(pod.status, set())


def pod_operation_create(*, action: str, pod_id: str, actor: Actor, params: dict | None = None) -> Operation:
    """Check the request and write the intent (an exclusive Operation on the pod)."""
    if action not in POD_ACTIONS:
        raise InvalidInput(f"unknown pod action {action!r}")
    validate_id(pod_id, kind="pod id")
    if action != "provision":
        pod = pod_get(pod_id=pod_id)
        if not pod_action_allowed(pod, action):
            raise PanelError(f"pod {pod_id!r} is {pod.status}; it cannot be {_past(action)} now")
    return operation_create(
        kind=f"pod.{action}", target_type="pod", target_id=pod_id, actor=actor, task=TASK, params=params or {}
    )


def pods_operation_create(*, action: str, actor: Actor, params: dict | None = None) -> Operation:
    """Work on all pods (reconcile, sweep-orphans, retention): one at a time."""
    if action not in {"reconcile", "sweep-orphans", "retention"}:
        raise InvalidInput(f"unknown pods action {action!r}")
    return operation_create(
        kind=f"pods.{action}", target_type="pods", target_id=action, actor=actor, task=TASK, params=params or {}
    )


def pod_request(*, action: str, pod_id: str, actor: Actor, params: dict | None = None) -> Operation:
    operation = pod_operation_create(action=action, pod_id=pod_id, actor=actor, params=params)
    operation_enqueue(operation=operation)
    return operation


def pods_request(*, action: str, actor: Actor, params: dict | None = None) -> Operation:
    operation = pods_operation_create(action=action, actor=actor, params=params)
    operation_enqueue(operation=operation)
    return operation


def pod_operation_run(operation: Operation) -> dict:
    """Run the work an Operation describes (tasks and the CLI both come here)."""
    actor = operation.actor_user or operation.actor_name
    params = operation.params or {}
    pod_id = operation.target_id
    match operation.kind:
        case "pod.provision":
            return pod_provision(
                pod_id=pod_id,
                actor=actor,
                image=params.get("image"),
                host_name=params.get("host"),
                operation=operation,
            )
        case "pod.stop":
            return pod_stop(pod_id=pod_id, actor=actor, operation=operation)
        case "pod.start":
            return pod_start(pod_id=pod_id, actor=actor, operation=operation)
        case "pod.deprovision":
            return pod_deprovision(pod_id=pod_id, actor=actor, operation=operation)
        case "pod.delete":
            return pod_delete(pod_id=pod_id, actor=actor, operation=operation)
        case "pods.reconcile":
            return pods_reconcile(actor=actor, operation=operation)
        case "pods.sweep-orphans":
            return orphans_sweep(
                actor=actor,
                dry_run=bool(params.get("dry_run")),
                name_prefix=params.get("name_prefix") or VOLUME_PREFIX,
                operation=operation,
            )
        case "pods.retention":
            return snapshots_apply_retention(actor=actor, keep=params.get("keep"), operation=operation)
    raise InvalidInput(f"operation #{operation.pk} has kind {operation.kind!r}, which pods do not run")

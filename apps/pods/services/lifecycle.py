"""The five actions on one pod: provision, stop (with a verified snapshot), start (reattach
or restore), deprovision and delete.

Order of work for a user stop (the one that deletes data): stop the container → stream each
volume out of it into the snapshot store with sha256 and byte counts → write the manifest
last → read every object back and compare → remove the container → remove the eight
volumes by name → look again: none may remain → `stopped`. A failure before the snapshot
is verified leaves every volume in place (pod `paused`, error recorded); a failure after it
leaves the pod `stopping`, and stopping again finishes the job with the same snapshot.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import transaction

from apps.audit.holds import Held, hold_guard
from apps.audit.models import Operation
from apps.audit.names import TargetType
from apps.audit.services import Actor, audit_record
from apps.pods.actions import DELETE, DEPROVISION, PROVISION, START, STOP, PodAction
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, PodVolume, Snapshot
from apps.pods.services.backup import backups_supersede
from apps.pods.services.hosts import engine_for, host_get
from apps.pods.services.restoring import _restore, _restore_precheck
from apps.pods.services.sizes import pod_sizes_measure
from apps.pods.services.snapshotting import (
    _container_create,
    _container_for_volumes,
    _snapshot_precheck,
    _snapshot_purge,
    _snapshot_reverify,
    _snapshot_take,
)
from apps.pods.services.state import (
    _error_text,
    _held_bytes,
    _labels,
    _latest_complete,
    _locked,
    _log,
    _record_failure,
    _volume_rows_ensure,
    _volumes,
    _volumes_remove,
    pod_get,
    pod_id_check,
)
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.formatting import humanize_bytes
from controlpanel.paths import validate_id

logger = logging.getLogger(__name__)


def _audit_done(*, action: PodAction, pod_id: str, actor: Actor, operation: Operation | None, **fields) -> None:
    audit_record(
        actor=actor,
        action=action.audit_action,
        target_type=TargetType.POD,
        target_id=pod_id,
        operation=operation,
        **fields,
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
    pod_id_check(pod_id)
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
            pod = Pod.objects.create(pod_id=pod_id, host=host, image=image, status=PROVISION.busy)
        else:
            if not pod.can_transition(PROVISION.busy):
                raise InvalidInput(f"pod {pod_id!r} already exists and is {pod.status}")
            pod.transition(PROVISION.busy)
            pod.host, pod.image, pod.last_error, pod.container_id = host, image, "", None
            # A new pod under an old id: its page tells the earlier pod's snapshots and sizes apart.
            pod.created_at = pod.status_changed_at
            PodVolume.objects.filter(pod=pod).update(size_bytes=None, measured_at=None, exists=False)
            pod.save()
        _volume_rows_ensure(pod)
    volumes = _volumes(pod)
    _log(operation, f"provisioning {pod_id} on {host.name} from {image}")
    try:
        for volume in volumes:
            engine.volume_create(name=volume.docker_name, labels=_labels(pod_id, volume.name))
        container = _container_create(pod=pod, engine=engine, volumes=volumes, copy_image_content=True)
        engine.container_start(pod.container_name)
    except Exception as exc:
        cleanup_error = _provision_cleanup(pod=pod, engine=engine, operation=operation)
        reason = _error_text(exc)
        if cleanup_error:
            reason += f" (cleanup left something behind: {cleanup_error}; reconcile reports it)"
        _record_failure(
            pod_id=pod_id,
            to=Pod.Status.FAILED,
            action=PROVISION.audit_action,
            exc=PanelError(reason),
            actor=actor,
            operation=operation,
        )
        raise PanelError(f"provisioning pod {pod_id!r} failed: {reason}") from exc
    with transaction.atomic():
        pod = _locked(pod_id)
        pod.transition(PROVISION.done)
        pod.container_id = container.id
        pod.save()
        PodVolume.objects.filter(pod=pod).update(exists=True)
        _audit_done(
            action=PROVISION,
            pod_id=pod_id,
            actor=actor,
            operation=operation,
            message=f"provisioned on {host.name} from {image}",
        )
    pod_sizes_measure(pod=pod, operation=operation)
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
    pod = pod_get(pod_id=pod_id)
    if pod.status != STOP.busy and pod.can_transition(STOP.busy):
        # Refused up front, the pod untouched: a store that cannot fit the last measured
        # sizes, or a dedup store without its key or held by a prune.
        _snapshot_precheck(pod=pod)
    with transaction.atomic():
        pod = _locked(pod_id)
        resuming = pod.status == STOP.busy
        pod.transition(STOP.busy)
        pod.last_error = ""
        pod.save()
        backups_supersede(pod, by="stop")  # never waited for: it sees this between chunks and gives up
    engine = engine_for(pod.host)
    snapshot = None
    if resuming:
        # A stop's snapshot taken since this stop began holds what the volumes held (the container
        # has not run since: a stopping pod cannot be started), once it reads back again, now. Never
        # a backup: one may have finished as the stop began, with the pod still running.
        snapshot = (
            Snapshot.objects.filter(
                pod=pod,
                kind=Snapshot.Kind.STOP,
                status=Snapshot.Status.COMPLETE,
                finished_at__gte=pod.status_changed_at,
            )
            .order_by("-finished_at")
            .first()
        )
        if snapshot is not None:
            try:
                _snapshot_reverify(snapshot=snapshot, operation=operation)
            except BaseException as exc:
                # Some volumes may be gone already: the pod stays `stopping`, the rest stay too.
                _record_failure(
                    pod_id=pod_id, to=STOP.busy, action=STOP.audit_action, exc=exc, actor=actor, operation=operation
                )
                raise
    # Before the snapshot is verified: any failure leaves all eight volumes where they are.
    if snapshot is None:
        try:
            snapshot = _snapshot_take(pod=pod, engine=engine, operation=operation, prechecked=not resuming)
        except BaseException as exc:
            _record_failure(
                pod_id=pod_id, to=Pod.Status.PAUSED, action=STOP.audit_action, exc=exc, actor=actor, operation=operation
            )
            raise
    # After it: the container and volumes go; a failure here keeps the pod `stopping`.
    try:
        with _unheld(pod_id, doing=f"stopped (snapshot #{snapshot.pk} kept; its volumes too)"):
            engine.container_remove(pod.container_name)
            _log(operation, f"removed container {pod.container_name}")
            _volumes_remove(pod=pod, engine=engine, operation=operation)
    except Held as exc:  # held while it stopped: nothing more goes, the pod is paused as it stands
        _record_failure(
            pod_id=pod_id, to=Pod.Status.PAUSED, action=STOP.audit_action, exc=exc, actor=actor, operation=operation
        )
        raise
    except BaseException as exc:
        _record_failure(
            pod_id=pod_id, to=STOP.busy, action=STOP.audit_action, exc=exc, actor=actor, operation=operation
        )
        raise
    with transaction.atomic():
        pod = _locked(pod_id)
        reclaimed = _held_bytes(pod)
        pod.transition(STOP.done)
        pod.container_id = None
        pod.last_error = ""
        pod.save()
        _audit_done(
            action=STOP,
            pod_id=pod_id,
            actor=actor,
            operation=operation,
            bytes_reclaimed=reclaimed,
            message=f"snapshot #{snapshot.pk} verified ({humanize_bytes(snapshot.total_bytes)}); "
            "container and 8 volumes removed",
            details={"snapshot": snapshot.pk},
        )
    return {"pod_id": pod_id, "snapshot": snapshot.pk, "snapshot_bytes": snapshot.total_bytes}


# --- start -----------------------------------------------------------------------------


def pod_start(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Paused: reattach its volumes. Stopped: restore the latest complete snapshot into new
    volumes and check every sha256 before the pod counts as running."""
    validate_id(pod_id, kind="pod id")
    pod = pod_get(pod_id=pod_id)
    planned = pod.restoring_snapshot or _latest_complete(pod)
    if pod.status in {Pod.Status.STOPPED, Pod.Status.DEPROVISIONED} and planned is not None:
        # Refused up front, the pod untouched: a dedup store without its key or the snapshot's objects.
        _restore_precheck(snapshot=planned)
    with transaction.atomic():
        pod = _locked(pod_id)
        restorable = pod.status in {Pod.Status.STOPPED, Pod.Status.DEPROVISIONED}
        if restorable or (pod.status == START.busy and pod.restoring_snapshot_id):
            snapshot = pod.restoring_snapshot or _latest_complete(pod)
            if snapshot is None:
                raise PanelError(f"pod {pod_id!r} is stopped but has no complete snapshot to restore")
            pod.transition(START.busy)
            pod.restoring_snapshot = snapshot
        else:
            snapshot = None
            pod.transition(START.busy)
        pod.last_error = ""
        pod.save()
    engine = engine_for(pod.host)
    if snapshot is None:
        try:
            container_id = _reattach(pod=pod, engine=engine, operation=operation)
        except BaseException as exc:
            _record_failure(
                pod_id=pod_id,
                to=Pod.Status.PAUSED,
                action=START.audit_action,
                exc=exc,
                actor=actor,
                operation=operation,
            )
            raise
        measuring = None
        message = "reattached its volumes and started the container"
    else:
        try:
            container_id, measuring = _restore(pod=pod, snapshot=snapshot, engine=engine, operation=operation)
        except BaseException as exc:
            # The snapshot still holds every byte: drop the partial restore, back to stopped.
            try:
                engine.container_remove(pod.container_name)
                _volumes_remove(pod=pod, engine=engine, operation=operation)
            except PanelError as cleanup_exc:
                logger.warning("cleaning up the failed restore of %s: %s", pod_id, cleanup_exc)
            _record_failure(
                pod_id=pod_id,
                to=Pod.Status.STOPPED,
                action=START.audit_action,
                exc=exc,
                actor=actor,
                operation=operation,
            )
            Pod.objects.filter(pod_id=pod_id).update(restoring_snapshot=None)
            raise
        message = f"restored snapshot #{snapshot.pk} (sha256 verified) and started the container"
    with transaction.atomic():
        pod = _locked(pod_id)
        pod.transition(START.done)
        pod.container_id = container_id
        pod.restoring_snapshot = None
        pod.save()
        PodVolume.objects.filter(pod=pod).update(exists=True)
        _audit_done(action=START, pod_id=pod_id, actor=actor, operation=operation, message=message)
    pod_sizes_measure(pod=pod, operation=operation, measuring=measuring)
    return {"pod_id": pod_id, "container_id": container_id, "restored_snapshot": snapshot.pk if snapshot else None}


def _reattach(*, pod: Pod, engine: DockerEngine, operation: Operation | None) -> str:
    missing = [v.docker_name for v in _volumes(pod) if not engine.volume_exists(v.docker_name)]
    if missing:
        raise PanelError(
            f"pod {pod.pod_id!r} is missing volumes {', '.join(missing)}; nothing was started "
            "(deprovision it, or restore it from a snapshot by stopping and starting)"
        )
    _container_for_volumes(pod=pod, engine=engine)
    if getattr(engine.container_get(pod.container_name), "status", "") == "paused":
        engine.container_unpause(pod.container_name)  # frozen by a backup whose worker died (POD_BACKUP_PAUSE)
    else:
        engine.container_start(pod.container_name)
    info = engine.container_get(pod.container_name)
    _log(operation, f"started {pod.container_name} with its eight volumes")
    return info.id if info else ""


# --- deprovision and delete --------------------------------------------------------------


@contextmanager
def _unheld(pod_id: str, *, doing: str, snapshots: bool = False) -> Iterator[None]:
    """The pod (and its snapshots) read unheld under the lock a hold's write takes, kept
    until the block ends; held, a refusal that names the hold."""
    targets = [(TargetType.POD, pod_id)]
    if snapshots:
        kept = Snapshot.objects.filter(pod__pod_id=pod_id).exclude(status=Snapshot.Status.DELETED)
        targets += [(TargetType.SNAPSHOT, str(pk)) for pk in kept.values_list("pk", flat=True)]
    with hold_guard(*targets) as hold:
        if hold is not None:
            raise Held(
                f"pod {pod_id} was not {doing}: {hold.target_type} {hold.target_id} was put on hold by "
                f"{hold.held_by} ({hold.reason}) meanwhile"
            )
        yield


def pod_deprovision(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Remove the container and all eight volumes by name; snapshots stay."""
    return _pod_remove(pod_id=pod_id, actor=actor, operation=operation, action=DEPROVISION)


def pod_delete(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Remove the container, the eight volumes and every snapshot of the pod."""
    return _pod_remove(pod_id=pod_id, actor=actor, operation=operation, action=DELETE)


def _pod_remove(*, pod_id: str, actor: Actor, operation: Operation | None, action: PodAction) -> dict:
    validate_id(pod_id, kind="pod id")
    # An unreachable host is refused before the pod changes state: it stays as it was
    # (say `unknown`) instead of `deprovisioning` with an error nobody can act on.
    engine = engine_for(pod_get(pod_id=pod_id).host)
    engine.ping()
    # Held since it was asked for: refused with the pod as it was; a hold asked for from here
    # on waits until the removal is done.
    with _unheld(pod_id, snapshots=action.purges_snapshots, doing=f"{action.done} (left as it was)"):
        with transaction.atomic():
            pod = _locked(pod_id)
            pod.transition(action.busy)
            pod.last_error = ""
            pod.save()
            backups_supersede(pod, by=action.name)
        snapshot_bytes = 0
        try:
            engine.container_remove(pod.container_name)
            removed = _volumes_remove(pod=pod, engine=engine, operation=operation)
            if action.purges_snapshots:
                for snapshot in pod.snapshots.exclude(status=Snapshot.Status.DELETED):
                    snapshot_bytes += _snapshot_purge(snapshot=snapshot, actor=actor, operation=operation)
        except BaseException as exc:
            _record_failure(
                pod_id=pod_id, to=action.busy, action=action.audit_action, exc=exc, actor=actor, operation=operation
            )
            raise
    with transaction.atomic():
        pod = _locked(pod_id)
        reclaimed = _held_bytes(pod) if removed else 0
        pod.transition(action.done)
        pod.container_id = None
        pod.save()
        _audit_done(
            action=action,
            pod_id=pod_id,
            actor=actor,
            operation=operation,
            bytes_reclaimed=reclaimed + snapshot_bytes,
            message=f"container and {len(removed)} volumes removed"
            + (f"; snapshots purged ({humanize_bytes(snapshot_bytes)})" if action.purges_snapshots else ""),
        )
    return {"pod_id": pod_id, "volumes_removed": removed, "snapshot_bytes_purged": snapshot_bytes}

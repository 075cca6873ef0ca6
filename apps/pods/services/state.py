"""The pod row and its volume rows: looking a pod up, locking it, recording a failure, and
removing its eight volumes by name (then proving none remain)."""

import logging

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import TargetType
from apps.audit.services import Actor, audit_record, operation_log, storage_sample_record
from apps.pods.docker_engine import DockerEngine, DockerFailure
from apps.pods.models import (
    DOMAIN,
    POD_LABEL,
    VOLUME_LABEL,
    VOLUME_MOUNTS,
    OrphanVolume,
    Pod,
    PodVolume,
    Snapshot,
    volume_docker_name,
)
from apps.pods.restic_helper import pod_helpers_remove
from controlpanel.errors import InvalidInput, NotFound, PanelError
from controlpanel.paths import validate_id
from controlpanel.threads import started

logger = logging.getLogger(__name__)

# Pages live at /pods/<name>/: a pod may not take one of these names.
RESERVED_POD_IDS = {"provision", "reconcile", "sweep", "retention"}


def pod_id_check(pod_id: str) -> str:
    """A pod id a new pod may take: a safe id, at most 64 characters, not a page's name."""
    validate_id(pod_id, kind="pod id")
    if pod_id in RESERVED_POD_IDS or len(pod_id) > 64:
        raise InvalidInput(f"pod id {pod_id!r} is not valid: use up to 64 characters, not {sorted(RESERVED_POD_IDS)}")
    return pod_id


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


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PanelError) else f"{type(exc).__name__}: {exc}"


def _record_failure(
    *, pod_id: str, to: str, action: str, exc: BaseException, actor: Actor, operation: Operation | None
) -> None:
    """Put the pod in a state it can be recovered from, with the reason, and audit it."""
    message = _error_text(exc)
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
            target_type=TargetType.POD,
            target_id=pod_id,
            outcome=AuditEvent.Outcome.FAILED,
            message=message,
            operation=operation,
        )


def _volumes_remove(*, pod: Pod, engine: DockerEngine, operation: Operation | None) -> list[str]:
    """Remove the pod's eight volumes by name, then look again: none may remain."""
    # container.remove(v=True) removes only anonymous volumes, never named ones, so each
    # named volume is removed explicitly here (the leak this panel exists to prevent).
    # A restic helper still holding them (a dead worker's, a superseded backup's) would make
    # Docker refuse: the pod is this operation's now, so it goes first.
    try:
        left = pod_helpers_remove(engine, pod.pod_id)
    except PanelError as exc:  # the removal below says what is wrong with the host, volume by volume
        left = []
        _log(operation, f"could not look for restic helpers: {exc}")
    if left:
        _log(operation, f"removed restic helpers still holding the volumes: {', '.join(left)}")
    names = [volume.docker_name for volume in _volumes(pod)]
    # All at once: the engine deletes each volume's files, the home and workspace volumes
    # most of them, and deletes the next meanwhile (0.4 s for 256 MiB and 2,000 files, one by one).
    removals = {name: started(engine.volume_remove, name, name="volume-remove") for name in names}
    removed, refusals = [], []
    for name, removal in removals.items():
        try:
            if removal.result():
                removed.append(name)
        except DockerFailure as exc:
            # Keep going: every other volume is just as safely stored; a retry handles this one.
            refusals.append(str(exc))
    listed = {volume.name for volume in engine.volumes_list(name_prefix=volume_docker_name(pod.pod_id, ""))}
    remaining = [name for name in names if name in listed]
    PodVolume.objects.filter(pod=pod).exclude(docker_name__in=remaining).update(exists=False)
    if refusals:
        raise DockerFailure(refusals[0] + (f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""))
    if remaining:
        raise DockerFailure(f"volumes still exist after removal: {', '.join(remaining)}")
    _log(operation, f"removed {len(removed)} volumes by name; none remain")
    host_sample(pod.host)  # the chart shows the drop as it happens, not at the next measurement
    return removed


def host_sample(host) -> None:
    """Record the bytes the host holds as last measured (its pods' volumes and its orphans):
    after every measurement, and whenever a stop or removal changes what it holds, so a
    chart shows each peak and each drop."""
    held = PodVolume.objects.filter(pod__host=host, exists=True).aggregate(total=Sum("size_bytes", default=0))
    orphans = OrphanVolume.objects.filter(host=host).aggregate(total=Sum("size_bytes", default=0))
    storage_sample_record(domain=DOMAIN, subject=host.name, total_bytes=held["total"] + orphans["total"])


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


def _latest_complete(pod: Pod) -> Snapshot | None:
    return pod.snapshots.filter(status=Snapshot.Status.COMPLETE).order_by("-finished_at", "-id").first()

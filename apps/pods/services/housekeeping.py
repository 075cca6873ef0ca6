"""Work on all pods at once: reconcile every host with the database (and roll forward what
a dead worker left), sweep orphaned volumes, apply snapshot retention."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit import operations
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record, storage_sample_record
from apps.pods.actions import PROVISION, RESUME_ACTIONS
from apps.pods.docker_engine import DockerFailure, VolumeInfo
from apps.pods.models import (
    DOMAIN,
    POD_LABEL,
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
from apps.pods.services.hosts import engine_for, host_default, host_get
from apps.pods.services.lifecycle import _provision_cleanup
from apps.pods.services.snapshotting import _snapshot_purge
from apps.pods.services.state import _locked, _log, _record_failure
from controlpanel.errors import InvalidInput, PanelError, Unreachable

# --- which volumes no pod needs ------------------------------------------------------------


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


# --- reconcile -------------------------------------------------------------------------------


def pods_reconcile(*, actor: Actor, operation: Operation | None = None) -> dict:
    """Compare every host with the database: crashed containers → paused (volumes kept),
    unreachable hosts → their pods unknown (nothing deleted), leaks recorded for the report."""
    host_default()
    report: dict[str, Any] = {"hosts": {}}
    for host in DockerHost.objects.all():
        report["hosts"][host.name] = _reconcile_host(host=host, actor=actor, operation=operation)
    report["resumed"] = pods_resume_interrupted(actor=actor, operation=operation)
    return report


def _audit_reconciled(*, pod_id: str, actor: Actor, operation: Operation | None, **fields) -> None:
    audit_record(
        actor=actor,
        action=AuditAction.POD_RECONCILE,
        target_type=TargetType.POD,
        target_id=pod_id,
        operation=operation,
        **fields,
    )


def _host_unreachable(*, host: DockerHost, exc: Unreachable, actor: Actor, operation: Operation | None) -> dict:
    """Its pods become unknown; nothing is deleted."""
    host.reachable, host.last_error, host.checked_at = False, str(exc), timezone.now()
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
            _audit_reconciled(
                pod_id=pod.pod_id,
                actor=actor,
                operation=operation,
                outcome=AuditEvent.Outcome.FAILED,
                message=f"host unreachable; marked unknown, nothing deleted: {exc}",
            )
        marked.append(pod.pod_id)
    _log(operation, str(exc))
    return {"reachable": False, "error": str(exc), "unknown": marked}


def _reconcile_host(*, host: DockerHost, actor: Actor, operation: Operation | None) -> dict:
    engine = engine_for(host)
    now = timezone.now()
    try:
        engine.ping()
        volumes = engine.volumes_list(name_prefix=VOLUME_PREFIX)
    except Unreachable as exc:
        return _host_unreachable(host=host, exc=exc, actor=actor, operation=operation)
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
            _audit_reconciled(pod_id=pod.pod_id, actor=actor, operation=operation, message=message)
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
    storage_sample_record(domain=DOMAIN, subject=host.name, total_bytes=sum(sizes.values()), total_files=None)
    _log(operation, f"{host.name}: {len(changed)} pods changed, {len(orphans)} orphaned volumes")
    return {"reachable": True, "changed": changed, "orphans": [v.name for v, _, _ in orphans]}


# --- rolling forward what a dead worker left -------------------------------------------------


def pods_resume_interrupted(*, actor: Actor, operation: Operation | None = None) -> dict[str, str]:
    """Roll forward (or back) pods left mid-action by a worker that died.

    A pod is interrupted when it sits in a transitional status with no active operation and
    no recorded error: a failure always records its reason in `last_error` (and waits for a
    person), while a killed worker leaves nothing. Its operation was marked errored by
    `operation_reap_stale`. Stop, start, deprovision and delete are queued again as new
    operations (each resumes: a verified snapshot is reused, a half restore is redone);
    provisioning is rolled back and the pod marked failed."""
    interrupted = (
        Pod.objects.filter(status__in=[*RESUME_ACTIONS, PROVISION.busy], last_error="", host__reachable=True)
        .exclude(pod_id__in=pods_busy())
        .select_related("host")
    )
    resumed: dict[str, str] = {}
    for pod in interrupted:
        if pod.status == PROVISION.busy:
            resumed[pod.pod_id] = _provision_roll_back(pod_id=pod.pod_id, actor=actor, operation=operation)
            continue
        action = RESUME_ACTIONS[pod.status]
        try:
            with transaction.atomic():
                queued = operations.request(action.kind, pod.pod_id, actor=actor, resumed=True)
                audit_record(
                    actor=actor,
                    action=AuditAction.POD_RESUME,
                    target_type=TargetType.POD,
                    target_id=pod.pod_id,
                    message=f"{pod.status} without a worker: {action.name} queued again as operation #{queued.pk}",
                    operation=operation,
                )
        except PanelError as exc:  # a person (or another worker) got there first
            resumed[pod.pod_id] = f"left alone: {exc}"
            continue
        _log(operation, f"{pod.pod_id}: interrupted while {pod.status}; {action.name} queued as operation #{queued.pk}")
        resumed[pod.pod_id] = f"{action.name} queued as operation #{queued.pk}"
    return resumed


def _provision_roll_back(*, pod_id: str, actor: Actor, operation: Operation | None) -> str:
    with transaction.atomic():
        pod = _locked(pod_id)
        if pod.status != PROVISION.busy or pod.last_error:
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
        action=PROVISION.audit_action,
        exc=PanelError(message),
        actor=actor,
        operation=operation,
    )
    _log(operation, f"{pod_id}: {message}")
    return message


# --- orphans and retention -------------------------------------------------------------------


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
        action=AuditAction.PODS_SWEEP_ORPHANS,
        target_type=TargetType.PODS,
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

"""Work on all pods at once: reconcile every host with the database (and roll forward what
a dead worker left), sweep orphaned volumes, apply snapshot retention.

Reconcile is liveness only: per host it lists the pods' containers and volumes (two cheap
calls, every host at once, each within DOCKER_TIMEOUT_SECONDS) and never walks a file;
sizes are the size schedule's work (`services.sizes`)."""

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit import operations
from apps.audit.holds import ON_HOLD, held_ids, hold_guard
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record
from apps.pods.actions import PROVISION, RESUME_ACTIONS
from apps.pods.docker_engine import ContainerInfo, DockerFailure, VolumeInfo
from apps.pods.models import POD_LABEL, VOLUME_PREFIX, DockerHost, OrphanVolume, Pod, PodVolume
from apps.pods.selectors import pods_busy
from apps.pods.services.backup import backups_interrupted_fail
from apps.pods.services.drill import drills_leftover_remove
from apps.pods.services.fleet import BATCH, batched, hosts_each, orphans_find, reconcile_events
from apps.pods.services.hosts import engine_for, host_default, host_get
from apps.pods.services.idle import cpu_read, cpu_record
from apps.pods.services.lifecycle import _provision_cleanup
from apps.pods.services.retention import snapshots_apply_retention, snapshots_to_retire  # noqa: F401 - their old home
from apps.pods.services.state import _locked, _log, _record_failure, host_sample
from controlpanel.errors import InvalidInput, PanelError

# --- reconcile -------------------------------------------------------------------------------

WATCHED = (Pod.Status.RUNNING, Pod.Status.PAUSED, Pod.Status.UNKNOWN)


@dataclass
class _HostSeen:
    """What one host answered: its pods' containers by name and its `pinacle-vol-*` volumes."""

    containers: dict[str, ContainerInfo]
    volumes: list[VolumeInfo]
    cpu: dict | None = None  # {container name: (id, CPU seconds)} while idle stop is on


def _host_look(host: DockerHost) -> _HostSeen:
    """Two listing calls (and, while idle stop is on, one-shot CPU stats of the running pod
    containers within half the host's time limit); runs on the host's own thread, so it
    touches no database."""
    began = time.monotonic()
    engine = engine_for(host)
    containers = engine.containers_list(label=POD_LABEL)
    volumes = engine.volumes_list(name_prefix=VOLUME_PREFIX)
    budget = settings.DOCKER_TIMEOUT_SECONDS / 2 - (time.monotonic() - began)
    return _HostSeen(containers=containers, volumes=volumes, cpu=cpu_read(engine, containers, seconds=budget))


def pods_reconcile(*, actor: Actor, operation: Operation | None = None) -> dict:
    """Compare every host with the database: crashed containers → paused (volumes kept),
    unreachable hosts → their pods unknown (nothing deleted), leaks recorded for the report.
    Each host's answer is applied as soon as it comes: a hanging host delays no other."""
    host_default()
    report: dict[str, Any] = {"hosts": {}}
    hosts = list(DockerHost.objects.all())
    reachable = []
    for answer in hosts_each(hosts, _host_look, seconds=settings.DOCKER_TIMEOUT_SECONDS):
        host = answer.host
        if answer.error is None:
            reachable.append(host)
        if answer.error is not None:
            report["hosts"][host.name] = _host_unreachable(
                host=host, exc=answer.error, actor=actor, operation=operation
            )
        else:
            report["hosts"][host.name] = _host_reconciled(
                host=host, seen=answer.value, actor=actor, operation=operation
            )
    report["hosts"] = dict(sorted(report["hosts"].items()))
    # The hosts that just answered: no second read of the hosts table.
    report["drill_leftovers"] = drills_leftover_remove(hosts=reachable, operation=operation)
    report["resumed"] = pods_resume_interrupted(actor=actor, operation=operation)
    report["backups_interrupted"] = backups_interrupted_fail(operation=operation)
    return report


@dataclass
class _Move:
    to: str
    last_error: str
    why: str  # the audit message says "<before> → <to>: <why>"
    outcome: str = AuditEvent.Outcome.SUCCEEDED
    container_id: str | None = None


def _pods_move(*, moves: dict[str, _Move], only_from, actor: Actor, operation: Operation | None) -> list[str]:
    """Move pods, a batch at a time: lock them (one query), update them (one query), audit
    them (one query), in one transaction. A pod that changed meanwhile, or got work to do,
    is left alone; the next reconcile looks again."""
    moved = []
    for chunk in batched(moves):
        with transaction.atomic():
            pods = list(
                Pod.objects.select_for_update()
                .filter(pod_id__in=chunk, status__in=only_from)
                .exclude(pod_id__in=pods_busy())
            )
            changed, events = [], []
            for pod in pods:
                move = moves[pod.pod_id]
                if pod.status == move.to:
                    continue
                before = pod.status
                pod.transition(move.to)
                pod.last_error = move.last_error
                if move.container_id:
                    pod.container_id = move.container_id
                changed.append(pod)
                events.append((pod.pod_id, move.outcome, f"{before} → {move.to}: {move.why}"))
            Pod.objects.bulk_update(
                changed,
                ["status", "last_error", "container_id", "status_changed_at", "updated_at", "cpu_samples"],
                batch_size=BATCH,
            )
            AuditEvent.objects.bulk_create(reconcile_events(events, actor=actor, operation=operation))
        moved += [pod.pod_id for pod in changed]
    return moved


def _host_unreachable(*, host: DockerHost, exc: PanelError, actor: Actor, operation: Operation | None) -> dict:
    """Its pods become unknown, with the reason; nothing is deleted."""
    DockerHost.objects.filter(pk=host.pk).update(reachable=False, last_error=str(exc), checked_at=timezone.now())
    alive = (Pod.Status.RUNNING, Pod.Status.PAUSED)
    pod_ids = Pod.objects.filter(host=host, status__in=alive).values_list("pod_id", flat=True)
    move = _Move(
        to=Pod.Status.UNKNOWN,
        last_error=str(exc),
        why=f"host unreachable, nothing deleted: {exc}",
        outcome=AuditEvent.Outcome.FAILED,
    )
    marked = _pods_move(moves=dict.fromkeys(pod_ids, move), only_from=alive, actor=actor, operation=operation)
    _log(operation, str(exc))
    return {"reachable": False, "error": str(exc), "unknown": marked}


def _container_moves(*, host: DockerHost, containers: dict[str, ContainerInfo]) -> dict[str, _Move]:
    """Pods whose container says otherwise than their status (one query, streamed)."""
    moves = {}
    pods = (
        Pod.objects.filter(host=host, status__in=WATCHED)
        .exclude(pod_id__in=pods_busy())
        .values_list("pod_id", "status")
        .order_by()
    )
    for pod_id, status in pods.iterator(chunk_size=2000):
        container = containers.get(Pod(pod_id=pod_id).container_name)
        running = container is not None and container.running
        if status == (Pod.Status.RUNNING if running else Pod.Status.PAUSED):
            continue
        if running:
            moves[pod_id] = _Move(
                to=Pod.Status.RUNNING,
                last_error="",
                why="its container is running",
                container_id=container.id,
            )
        else:
            what = "is missing" if container is None else f"is {container.status}"
            moves[pod_id] = _Move(
                to=Pod.Status.PAUSED,
                last_error=f"container {what} without a user action; volumes kept",
                why=f"container {what} without a user action; volumes kept",
            )
    return moves


def _volumes_mark(*, host: DockerHost, names: set[str]) -> None:
    """Record which of the host's volume rows exist: one query to read, one per batch of rows
    that changed."""
    appeared, vanished = [], []
    rows = PodVolume.objects.filter(pod__host=host).values_list("pk", "docker_name", "exists").order_by()
    for pk, docker_name, exists in rows.iterator(chunk_size=5000):
        if (docker_name in names) != exists:
            (vanished if exists else appeared).append(pk)
    for flag, pks in ((True, appeared), (False, vanished)):
        for chunk in batched(pks):
            PodVolume.objects.filter(pk__in=chunk).update(exists=flag)


def _orphans_record(*, host: DockerHost, volumes: list[VolumeInfo]) -> list[tuple[VolumeInfo, str, str]]:
    """Replace the host's orphan rows (the leak report), keeping each one's last known size."""
    orphans = orphans_find(host=host, volumes=volumes)
    now = timezone.now()
    with transaction.atomic():
        sizes = dict(OrphanVolume.objects.filter(host=host).values_list("docker_name", "size_bytes"))
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
            ],
            batch_size=BATCH,
        )
    if {v.name for v, _, _ in orphans} != set(sizes):
        # Orphans came or went: the bytes held changed, and the sample tells the pages to count again.
        host_sample(host)
    return orphans


def _host_reconciled(*, host: DockerHost, seen: _HostSeen, actor: Actor, operation: Operation | None) -> dict:
    DockerHost.objects.filter(pk=host.pk).update(reachable=True, last_error="", checked_at=timezone.now())
    moves = _container_moves(host=host, containers=seen.containers)
    moved = _pods_move(moves=moves, only_from=WATCHED, actor=actor, operation=operation)
    changed = {pod_id: moves[pod_id].to for pod_id in moved}
    sampled = cpu_record(host=host, readings=seen.cpu)
    _volumes_mark(host=host, names={v.name for v in seen.volumes})
    orphans = _orphans_record(host=host, volumes=seen.volumes)
    _log(operation, f"{host.name}: {len(changed)} pods changed, {len(orphans)} orphaned volumes")
    return {"reachable": True, "changed": changed, "orphans": [v.name for v, _, _ in orphans], "cpu_sampled": sampled}


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
    held = held_ids(target_type=TargetType.POD, target_ids=[pod.pod_id for pod in interrupted])
    for pod in interrupted:
        if pod.pod_id in held:  # a person holds it: nothing is finished or rolled back by itself
            resumed[pod.pod_id] = f"left alone: {ON_HOLD}"
            continue
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
        old = [
            (volume, pod_id, reason)
            for volume, pod_id, reason in orphans_find(host=host, volumes=volumes)
            if volume.created_at is not None and volume.created_at <= cutoff
        ]
        # Only these volumes are walked, within the size budget (unmeasured ones show no size).
        sizes = engine.volumes_measure(
            names=[volume.name for volume, _, _ in old],
            image=settings.POD_IMAGE,
            seconds=settings.POD_SIZE_BUDGET_SECONDS,
        ).sizes
        for volume, pod_id, reason in old:
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
    held = held_ids(target_type=TargetType.POD, target_ids={item["pod_id"] for item in plan if item["pod_id"]})
    on_hold = [item["name"] for item in plan if item["pod_id"] in held]
    for item in [item for item in plan if item["pod_id"] not in held]:
        host = item["host"]
        entry = {"host": host.name, "name": item["name"], "bytes": item["bytes"], "reason": item["reason"]}
        listed.append(entry)
        if dry_run:
            continue
        engine = engine_for(host)
        try:
            # Holds are read again under the lock a hold's write takes, and it is kept until
            # the volume is gone: a pod held since the plan keeps its volume.
            with hold_guard(*([(TargetType.POD, item["pod_id"])] if item["pod_id"] else [])) as hold:
                if hold is not None:
                    on_hold.append(item["name"])
                    listed.remove(entry)
                    continue
                # Look again right before removing: a pod may have been provisioned or started meanwhile.
                if not orphans_find(host=host, volumes=[item["volume"]]):
                    continue
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
        details={"removed": [e["name"] for e in removed], "errors": errors[:20], "on_hold": on_hold[:50]},
        operation=operation,
    )
    if errors:
        raise PanelError(f"{len(errors)} orphaned volumes could not be removed: {errors[0]}")
    return {
        "dry_run": dry_run,
        "orphans": listed,
        "removed": [e["name"] for e in removed],
        "bytes": reclaimed,
        "on_hold": on_hold,
    }

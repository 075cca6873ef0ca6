"""Backups of running pods: the pod's eight volumes copied into the snapshot store while it
runs, without stopping or restarting it, removing nothing.

Order of work: claim (the pod is running, no other backup of it is under way, its host runs
fewer than POD_BACKUP_CONCURRENCY backups asked for before this one) → the store
answers and has room → (POD_BACKUP_PAUSE: `docker pause`) → stream every volume through the
running container (`capture.snapshot_capture`, each volume read again if its archive came out
cut short) → (unpause, the pause measured) → manifest last → `complete`, audited.

Crash-consistent by default: what a power cut would leave (each file as it was when Docker
read it, files read at slightly different moments). A backup is not read back at once: it
removes nothing, so the verify schedule (or the Verify button) proves it later; until then
the page says "not yet proven".

A stop, deprovision or delete of the pod supersedes a running backup: the action marks the
backup's snapshot failed ("superseded by a stop") when it claims the pod, the backup sees
that between chunks, aborts its writers and lets the container go; its snapshot is never
marked complete. The action never waits for the backup to finish. A backup whose worker died
(its operation reaped) is failed by reconcile (`backups_interrupted_fail`), never resumed."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.services import Actor, audit_record
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot
from apps.pods.services.beside import folders_precheck
from apps.pods.services.capture import snapshot_capture
from apps.pods.services.hosts import engine_for
from apps.pods.services.state import _locked, _log, _volumes, pod_get
from apps.pods.snapshots import store_from_url
from controlpanel.errors import Busy, InvalidInput, PanelError
from controlpanel.formatting import humanize_bytes, plural
from controlpanel.paths import validate_id

UNDER_WAY = [Snapshot.Status.PENDING, Snapshot.Status.UPLOADING]


def backup_check(*, pod_id: str) -> Pod:
    """Refuse a backup before any row is written: the pod must be running (a held pod may be
    backed up: a backup deletes nothing) and no other work may be under way on it."""
    pod = pod_get(pod_id=pod_id)
    if pod.status != Pod.Status.RUNNING:
        raise PanelError(f"pod {pod_id!r} is {pod.status}; only a running pod can be backed up")
    active = Operation.objects.filter(target_type=TargetType.POD, target_id=pod.pod_id, status__in=Operation.ACTIVE)
    busy = active.filter(exclusive=True).first() or active.filter(kind=Kind.POD_BACKUP).first()
    if busy is not None:
        raise Busy(f"pod {pod_id!r} already has {busy.kind} in progress (operation #{busy.pk}); wait for it to finish")
    _host_room(pod, operation=None)
    return pod


def _host_room(pod: Pod, *, operation: Operation | None) -> None:
    """At most POD_BACKUP_CONCURRENCY backups under way on the pod's Docker host, whoever asked
    (schedule, page, CLI, API). Asked for: every active backup there counts. Running: only the
    older ones, so of two let through at once the older goes on and the newer is refused."""
    others = Operation.objects.filter(
        kind=Kind.POD_BACKUP,
        status__in=Operation.ACTIVE,
        target_id__in=Pod.objects.filter(host_id=pod.host_id).values("pod_id"),
    )
    if operation is not None:
        others = others.filter(pk__lt=operation.pk)
    running = others.count()
    limit = settings.POD_BACKUP_CONCURRENCY
    if running >= limit:
        raise Busy(
            f"host {pod.host.name} already runs {plural(running, 'backup')} (POD_BACKUP_CONCURRENCY={limit}): "
            "try again when it ends"
        )


def backups_supersede(pod: Pod, *, by: str) -> int:
    """A stop (or removal) of `pod` takes it now: its backup under way gives up."""
    return Snapshot.objects.filter(pod=pod, kind=Snapshot.Kind.BACKUP, status__in=UNDER_WAY).update(
        status=Snapshot.Status.FAILED, error=f"superseded by a {by}", finished_at=timezone.now()
    )


def _claim(*, pod_id: str, operation: Operation | None) -> Pod:
    """Under the pod's lock: still running, and this is the only backup of it under way (of
    two asked for at once, the older operation goes on)."""
    with transaction.atomic():
        pod = _locked(pod_id)
        if pod.status != Pod.Status.RUNNING:
            raise PanelError(f"pod {pod_id!r} is {pod.status}; only a running pod can be backed up")
        others = Operation.objects.filter(
            kind=Kind.POD_BACKUP, target_id=pod.pod_id, status__in=Operation.ACTIVE
        ).exclude(pk=operation.pk if operation else None)
        if operation is not None:
            others = others.filter(pk__lt=operation.pk)
        earlier = others.first()
        if earlier is not None:
            raise Busy(f"pod {pod_id!r} is already being backed up (operation #{earlier.pk})")
        restoring = path_restore_active(pod_id, besides=operation)
        if restoring is not None:  # it pauses the pod while it writes: never both at once
            raise Busy(f"a path of pod {pod_id!r} is being restored (operation #{restoring.pk}); back it up after")
        _host_room(pod, operation=operation)
        # A backup of it whose worker died, not yet seen by reconcile: it never completes now.
        Snapshot.objects.filter(pod=pod, kind=Snapshot.Kind.BACKUP, status__in=UNDER_WAY).exclude(
            operation__status__in=Operation.ACTIVE
        ).update(status=Snapshot.Status.FAILED, error=INTERRUPTED, finished_at=timezone.now())
    return pod


INTERRUPTED = "interrupted: its worker died"


def path_restore_active(pod_id: str, *, besides: Operation | None = None) -> Operation | None:
    """A restore of a path into the pod under way (its own backup first, for a replace, is
    `besides`): a backup and it never run at once, since each may pause the pod."""
    found = Operation.objects.filter(kind=Kind.POD_RESTORE_PATH, target_id=pod_id, status__in=Operation.ACTIVE)
    return found.exclude(pk=besides.pk).first() if besides is not None else found.first()


def backup_active(pod_id: str) -> Operation | None:
    """A backup of the pod under way (its operation alive)."""
    return Operation.objects.filter(kind=Kind.POD_BACKUP, target_id=pod_id, status__in=Operation.ACTIVE).first()


def backups_interrupted_fail(*, operation: Operation | None = None) -> list[int]:
    """Backups whose operation is no longer active (its worker died and the heartbeat reaper
    marked it errored) never complete now: their snapshots are failed, so no page shows a
    backup in progress that no one is doing, and retention purges what they wrote. Reconcile
    runs this every minute. A backup run with no operation (a direct service call) is left
    alone: nothing tells whether it is still going."""
    stale = Snapshot.objects.filter(
        kind=Snapshot.Kind.BACKUP, status__in=UNDER_WAY, operation__status__in=Operation.TERMINAL
    )
    failed = []
    for snapshot in stale.select_related("pod"):
        done = Snapshot.objects.filter(pk=snapshot.pk, status__in=UNDER_WAY).update(
            status=Snapshot.Status.FAILED, error=INTERRUPTED, finished_at=timezone.now()
        )
        if done:
            failed.append(snapshot.pk)
            _log(operation, f"{snapshot.pod.pod_id}: backup snapshot #{snapshot.pk} {INTERRUPTED}; marked failed")
    return failed


def _superseded(snapshot: Snapshot) -> str | None:
    """Why this backup gives up now (its snapshot failed by a stop, the pod no longer running), or None."""
    status, error = Snapshot.objects.filter(pk=snapshot.pk).values_list("status", "error").get()
    if status not in UNDER_WAY:
        return error or f"snapshot #{snapshot.pk} is {status}"
    pod_status = Pod.objects.filter(pk=snapshot.pod_id).values_list("status", flat=True).get()
    if pod_status != Pod.Status.RUNNING:
        return f"superseded: pod {snapshot.pod.pod_id} is {pod_status} now"
    return None


@contextmanager
def _paused(*, engine: DockerEngine, pod: Pod, operation: Operation | None, pause: dict) -> Iterator[None]:
    """With POD_BACKUP_PAUSE, the container frozen (`docker pause`) only while its volumes
    stream, unpaused whatever happens; the seconds it was frozen go into `pause`."""
    if not settings.POD_BACKUP_PAUSE:
        yield
        return
    engine.container_pause(pod.container_name)
    began = time.monotonic()
    _log(operation, f"paused {pod.container_name} while its volumes stream")
    try:
        yield
    finally:
        pause["seconds"] = round(time.monotonic() - began, 3)
        info = engine.container_get(pod.container_name)
        if info is not None and info.status == "paused":  # a stop that superseded it may have removed it
            engine.container_unpause(pod.container_name)
        _log(operation, f"unpaused {pod.container_name} after {pause['seconds']:.2f} s")


def pod_backup(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    """Copy a running pod's eight volumes into the snapshot store; nothing stops, nothing is removed."""
    validate_id(pod_id, kind="pod id")
    began = time.monotonic()
    pod = _claim(pod_id=pod_id, operation=operation)
    engine = engine_for(pod.host)
    info = engine.container_get(pod.container_name)
    if info is not None and info.status == "paused":
        # Only a backup (POD_BACKUP_PAUSE) or a restore of a path pauses a pod's container;
        # none is under way (claimed above): an earlier one's worker died while it was paused.
        engine.container_unpause(pod.container_name)
        info = engine.container_get(pod.container_name)
    if info is None or not info.running:
        state = info.status if info else "missing"
        raise PanelError(f"pod {pod_id!r}'s container is {state}; reconcile it, then back it up again")
    volumes = _volumes(pod)
    store = store_from_url()
    folders_precheck(store=store, engine=engine)
    store.preflight(needed_bytes=sum(v.size_bytes or 0 for v in volumes) or None, what=f"backing up pod {pod_id!r}")
    pause: dict = {}
    consistency = "paused" if settings.POD_BACKUP_PAUSE else "crash-consistent"
    _log(operation, f"backing up running pod {pod_id} into {store.url} ({consistency})")
    snapshot = snapshot_capture(
        pod=pod,
        engine=engine,
        store=store,
        volumes=volumes,
        operation=operation,
        container_stopped=False,
        streaming=lambda: _paused(engine=engine, pod=pod, operation=operation, pause=pause),
        superseded=_superseded,
    )
    seconds = round(time.monotonic() - began, 3)
    paused = f", paused {pause['seconds']:.2f} s" if "seconds" in pause else ""
    audit_record(
        actor=actor,
        action=AuditAction.POD_BACKUP,
        target_type=TargetType.POD,
        target_id=pod_id,
        operation=operation,
        message=f"snapshot #{snapshot.pk} of the running pod ({humanize_bytes(snapshot.total_bytes)}, "
        f"{humanize_bytes(snapshot.stored_bytes or 0)} stored, {consistency}{paused}); nothing removed",
        details={"snapshot": snapshot.pk},
    )
    kept_from = {entry.get("same_as") if entry.get("reused") else None for entry in snapshot.manifest.values()}
    return {
        "pod_id": pod_id,
        "snapshot": snapshot.pk,
        # Every volume kept as it is in an earlier snapshot: nothing had changed since.
        "unchanged_since": kept_from.pop() if len(kept_from) == 1 else None,
        "total_bytes": snapshot.total_bytes,
        "stored_bytes": snapshot.stored_bytes,
        "seconds": seconds,
        "consistency": consistency,
        "paused_seconds": pause.get("seconds"),
    }


def pod_backup_interval_set(*, pod_id: str, hours: float | None, actor: Actor) -> Pod:
    """This pod's hours between backups (0 = never), or None for POD_BACKUP_EVERY_HOURS; audited."""
    if hours is not None and not 0 <= hours <= 24 * 366:
        raise InvalidInput("hours between backups must be between 0 and 8784, or empty for the default")
    with transaction.atomic():
        pod = _locked(pod_id)
        pod.backup_every_hours = hours
        pod.save(update_fields=["backup_every_hours"])
        if hours is None:
            said = "the default (POD_BACKUP_EVERY_HOURS)"
        else:
            said = "never" if hours == 0 else f"every {hours:g} h"
        audit_record(
            actor=actor,
            action=AuditAction.POD_BACKUP_INTERVAL,
            target_type=TargetType.POD,
            target_id=pod.pod_id,
            message=f"backups of the running pod: {said}",
        )
    return pod


def backed_up_sentence(result: dict) -> str:
    said = f", the pod paused {result['paused_seconds']:.2f} s" if result.get("paused_seconds") is not None else ""
    if result.get("unchanged_since"):
        said += f"; nothing had changed since snapshot #{result['unchanged_since']}"
    return (
        f"Pod {result['pod_id']} backed up while running: snapshot #{result['snapshot']} holds "
        f"{humanize_bytes(result['total_bytes'])} ({humanize_bytes(result['stored_bytes'] or 0)} added to the store, "
        f"{result['consistency']}{said}); not yet proven until it is verified."
    )

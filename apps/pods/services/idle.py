"""Idle pods and dormant pods: stopping what nobody uses, then letting go of what nobody starts.

Idle (`POD_IDLE_STOP_HOURS`, 0 = off): reconcile asks each host's engine for the CPU seconds
every running pod container has used so far (one-shot stats, a few at a time, within the
host's time limit; `cpu_read` on the host's thread, `cpu_record` on the calling one) and keeps a
few samples per window on the pod. The `pods.idle-stop` schedule compares the newest sample
with the newest one at least a window old: less than `POD_IDLE_CPU_SECONDS` between them and the
pod is stopped with a verified snapshot (`pod.stop`, queued through `request`), audited, and
people are told once the stop is done ("Pod abc stopped after 4 h idle").

Dormant (`POD_DORMANT_DAYS`, 0 = off): the `pods.dormancy` schedule marks a pod stopped (and
not started) that long dormant and tells people. With `POD_DORMANT_DEPROVISION_DAYS` it also
warns a day before a dormant pod's time is up, and deprovisions it (snapshots kept) once that
time has come and the warning is at least a day old. Starting a pod clears both marks.

Holds win: a held pod is never stopped, marked, warned or deprovisioned here; it is reported
as kept "on hold".
"""

import random
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.audit import operations
from apps.audit.holds import ON_HOLD, held_ids
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.notify import notify
from apps.audit.services import Actor, audit_record
from apps.pods.docker_engine import ContainerInfo, DockerEngine
from apps.pods.models import CONTAINER_PREFIX, DockerHost, Pod
from apps.pods.selectors import pods_busy
from apps.pods.services.fleet import BATCH, batched, reconcile_events
from apps.pods.services.state import _log
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes, plural

# Samples kept per window (plus the one at its start): enough to find the window's start
# within 1/16 of it, few enough that 10,000 pods cost one small JSON value each.
SAMPLES_PER_WINDOW = 16
# Samples older than this (or 1/8 of the window) mean reconcile stopped seeing the container:
# no pod is stopped on such old news.
STALE_SECONDS = 600
DAY = timedelta(days=1)
NAMES_SHOWN = 20


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def _names(pod_ids: list[str]) -> str:
    shown = ", ".join(pod_ids[:NAMES_SHOWN])
    return shown + (f" and {len(pod_ids) - NAMES_SHOWN} more" if len(pod_ids) > NAMES_SHOWN else "")


# --- CPU samples (reconcile) -------------------------------------------------------------------


def cpu_read(engine: DockerEngine, containers: dict[str, ContainerInfo], *, seconds: float) -> dict:
    """{container name: (container id, CPU seconds so far)} of the running pod containers the
    engine answered for within `seconds`. Runs on the host's thread: no database. Costs nothing
    while idle stop is off. The order is shuffled, so a host with more containers than its time
    allows still has each of them sampled now and then."""
    if not settings.POD_IDLE_STOP_HOURS or seconds <= 0:
        return {}
    running = list({c.id: c for c in containers.values() if c.running and c.name.startswith(CONTAINER_PREFIX)}.values())
    random.shuffle(running)
    used = engine.containers_cpu([c.id for c in running], seconds=seconds)
    return {c.name: (c.id, used[c.id]) for c in running if c.id in used}


def samples_add(current: dict, *, container: str, at: float, cpu: float, window: float) -> dict:
    """The pod's samples with one more reading: a new container, a counter that went back (the
    container restarted) or a clock that did starts them afresh; the newest slot moves along
    until it is 1/16 of a window past the one before; samples before the newest one at least a
    window old are dropped."""
    samples = [list(s) for s in (current or {}).get("samples") or []] if current.get("container") == container else []
    reading = [round(at, 1), round(cpu, 3)]
    if samples and (reading[1] < samples[-1][1] or reading[0] <= samples[-1][0]):
        samples = []
    spacing = max(60.0, window / SAMPLES_PER_WINDOW)
    if len(samples) >= 2 and samples[-1][0] - samples[-2][0] < spacing:
        samples[-1] = reading
    else:
        samples.append(reading)
    old = [index for index, (when, _) in enumerate(samples) if when <= at - window]
    if old:
        samples = samples[old[-1] :]
    return {"container": container, "samples": samples}


def idle_usage(current: dict, *, now: float, window: float) -> float | None:
    """CPU seconds the pod used from its newest sample at least `window` old to its newest
    sample; None when it has not been watched for a whole window, or not lately."""
    samples = (current or {}).get("samples") or []
    if len(samples) < 2 or now - samples[-1][0] > max(STALE_SECONDS, window / 8):
        return None
    start = [cpu for when, cpu in samples if when <= now - window]
    if not start:
        return None
    return samples[-1][1] - start[-1]


def cpu_record(*, host: DockerHost, readings: dict) -> int:
    """Add each reading to its running pod's samples: one query to read and one to write per
    batch of pods. Pods at work are left alone. How many pods got a sample."""
    by_pod = {name.removeprefix(CONTAINER_PREFIX): reading for name, reading in (readings or {}).items()}
    if not by_pod or not settings.POD_IDLE_STOP_HOURS:
        return 0
    at, window = timezone.now().timestamp(), settings.POD_IDLE_STOP_HOURS * 3600
    recorded = 0
    for chunk in batched(by_pod):
        pods = list(
            Pod.objects.filter(host=host, status=Pod.Status.RUNNING, pod_id__in=chunk)
            .exclude(pod_id__in=pods_busy())
            .only("pk", "pod_id", "cpu_samples")
        )
        for pod in pods:
            container, cpu = by_pod[pod.pod_id]
            pod.cpu_samples = samples_add(pod.cpu_samples or {}, container=container, at=at, cpu=cpu, window=window)
        Pod.objects.bulk_update(pods, ["cpu_samples"], batch_size=BATCH)
        recorded += len(pods)
    return recorded


# --- idle stop --------------------------------------------------------------------------------


def pods_idle_find() -> dict[str, float]:
    """{pod id: CPU seconds used over the window} of running pods idle for POD_IDLE_STOP_HOURS."""
    window, now = settings.POD_IDLE_STOP_HOURS * 3600, timezone.now().timestamp()
    rows = (
        Pod.objects.filter(status=Pod.Status.RUNNING)
        .exclude(pod_id__in=pods_busy())
        .values_list("pod_id", "cpu_samples")
        .order_by("pod_id")
    )
    idle = {}
    for pod_id, samples in rows.iterator(chunk_size=2000):
        used = idle_usage(samples, now=now, window=window)
        if used is not None and used < settings.POD_IDLE_CPU_SECONDS:
            idle[pod_id] = used
    return idle


def pods_idle_stop(*, actor: Actor, operation: Operation | None = None) -> dict:
    """Queue a stop with a snapshot (`pod.stop`) for every running pod idle for the window."""
    hours = settings.POD_IDLE_STOP_HOURS
    result: dict = {"hours": hours, "idle": {}, "stopping": {}, "held": [], "refused": {}}
    if not hours:
        return {**result, "off": True}
    idle = pods_idle_find()
    result["idle"] = {pod_id: round(used, 3) for pod_id, used in idle.items()}
    held = held_ids(target_type=TargetType.POD, target_ids=idle) if idle else set()
    for pod_id, used in idle.items():
        if pod_id in held:
            result["held"].append(pod_id)
            _log(operation, f"{pod_id}: idle for {_hours(hours)}, kept ({ON_HOLD})")
            continue
        try:
            with transaction.atomic():
                queued = operations.request(
                    Kind.POD_STOP, pod_id, actor=actor, idle_hours=hours, idle_cpu_seconds=round(used, 3)
                )
                audit_record(
                    actor=actor,
                    action=AuditAction.POD_IDLE,
                    target_type=TargetType.POD,
                    target_id=pod_id,
                    message=f"used {used:.1f} s of CPU in {_hours(hours)} (less than "
                    f"{settings.POD_IDLE_CPU_SECONDS:g} s): stop with a snapshot queued as operation #{queued.pk}",
                    details={"cpu_seconds": round(used, 3), "hours": hours, "stop": queued.pk},
                    operation=operation,
                )
        except PanelError as exc:  # a person got there first, or it changed meanwhile
            result["refused"][pod_id] = str(exc)
            continue
        result["stopping"][pod_id] = queued.pk
        _log(operation, f"{pod_id}: used {used:.1f} s of CPU in {_hours(hours)}; stop queued as #{queued.pk}")
    return result


def idle_stop_notify(operation: Operation, result: dict) -> None:
    """After a stop the idle schedule asked for: tell people (nothing for any other stop)."""
    params = operation.params or {}
    if not params.get("idle_hours"):
        return
    pod_id, hours = result["pod_id"], _hours(params["idle_hours"])
    notify(
        event="pod.idle-stopped",
        subject=pod_id,
        title=f"Pod {pod_id} stopped after {hours} idle",
        body=f"Pod {pod_id} used {params.get('idle_cpu_seconds', 0):.1f} s of CPU in {hours} (less than "
        f"{settings.POD_IDLE_CPU_SECONDS:g} s), so it was stopped: snapshot #{result['snapshot']} holds "
        f"{humanize_bytes(result['snapshot_bytes'])} (verified) and its volumes are removed. Start it again "
        "from its page; its files come back from the snapshot.",
        level="info",
    )


def idle_sentence(result: dict) -> str:
    if result.get("off"):
        return "Idle stop is off (POD_IDLE_STOP_HOURS is 0)."
    if not result["idle"]:
        return f"No running pod was idle for {_hours(result['hours'])}."
    parts = [f"{plural(len(result['stopping']), 'pod')} being stopped with a snapshot"]
    if result["held"]:
        parts.append(f"{len(result['held'])} kept ({ON_HOLD})")
    if result["refused"]:
        parts.append(f"{len(result['refused'])} left alone (busy or changed)")
    return f"{plural(len(result['idle']), 'running pod')} idle for {_hours(result['hours'])}: {', '.join(parts)}."


# --- dormancy ---------------------------------------------------------------------------------


def _stopped() -> QuerySet[Pod]:
    return Pod.objects.filter(status=Pod.Status.STOPPED).exclude(pod_id__in=pods_busy())


def _ids(pods: QuerySet[Pod]) -> list[str]:
    return list(pods.order_by("pod_id").values_list("pod_id", flat=True))


def _mark(*, field: str, pod_ids: list[str], message: str, actor: Actor, operation: Operation | None) -> None:
    """Set `field` to now on these stopped pods and audit each, a batch per transaction."""
    now = timezone.now()
    for chunk in batched(pod_ids):
        with transaction.atomic():
            Pod.objects.filter(pod_id__in=chunk, status=Pod.Status.STOPPED).update(**{field: now})
            events = [(pod_id, AuditEvent.Outcome.SUCCEEDED, message) for pod_id in chunk]
            AuditEvent.objects.bulk_create(
                reconcile_events(events, actor=actor, operation=operation, action=AuditAction.POD_DORMANT)
            )


def pods_dormancy(*, actor: Actor, operation: Operation | None = None) -> dict:
    """Mark, warn, then deprovision (snapshots kept) pods stopped and not started for long."""
    days, remove_days = settings.POD_DORMANT_DAYS, settings.POD_DORMANT_DEPROVISION_DAYS
    result: dict = {"days": days, "marked": [], "warned": [], "deprovisioning": {}, "held": [], "refused": {}}
    if not days:
        return {**result, "off": True}
    held = held_ids(target_type=TargetType.POD)
    kept: set[str] = set()
    due = _ids(
        _stopped().filter(dormant_since__isnull=True, status_changed_at__lte=timezone.now() - timedelta(days=days))
    )
    kept.update(held.intersection(due))
    result["marked"] = _dormant_mark([pod_id for pod_id in due if pod_id not in held], actor=actor, operation=operation)
    if remove_days:
        result["warned"] = _warn(held=held, kept=kept, actor=actor, operation=operation)
        result["deprovisioning"], result["refused"] = _deprovision(
            held=held, kept=kept, actor=actor, operation=operation
        )
    result["held"] = sorted(kept)
    for pod_id in result["held"]:
        _log(operation, f"{pod_id}: dormant or due, kept ({ON_HOLD})")
    return result


def _dormant_mark(pod_ids: list[str], *, actor: Actor, operation: Operation | None) -> list[str]:
    if not pod_ids:
        return []
    days, remove_days = settings.POD_DORMANT_DAYS, settings.POD_DORMANT_DEPROVISION_DAYS
    later = f"; deprovisioned (snapshots kept) after {remove_days:g} more days" if remove_days else ""
    message = f"stopped for {days:g} days: dormant{later}"
    _mark(field="dormant_since", pod_ids=pod_ids, message=message, actor=actor, operation=operation)
    one = len(pod_ids) == 1
    fate = (
        f"; {'it' if one else 'they'} will be deprovisioned (snapshots kept) after {remove_days:g} more days, "
        "with a warning a day before. Start a pod, or put it on hold, to keep it."
        if remove_days
        else "."
    )
    notify(
        event="pod.dormant",
        subject=",".join(pod_ids)[:200],
        title=f"Pod {pod_ids[0]} is dormant" if one else f"{len(pod_ids)} pods are dormant",
        body=f"Stopped and not started for {days:g} days: {_names(pod_ids)}. Their snapshots are kept{fate}",
    )
    _log(operation, f"dormant: {_names(pod_ids)}")
    return pod_ids


def _warn(*, held: set[str], kept: set[str], actor: Actor, operation: Operation | None) -> list[str]:
    """A day before a dormant pod's time is up, tell people. The warning is recorded only when
    it went out (or notifications are off), so a deprovision always follows a day-old warning."""
    now = timezone.now()
    due = _ids(
        _stopped().filter(
            dormant_warned_at__isnull=True,
            dormant_since__lte=now - timedelta(days=settings.POD_DORMANT_DEPROVISION_DAYS) + DAY,
        )
    )
    kept.update(held.intersection(due))
    warn = [pod_id for pod_id in due if pod_id not in held]
    if not warn:
        return []
    # Warned once its time is within a day: it goes a day from now, not before.
    when = f"{now + DAY:%Y-%m-%d %H:%M} UTC"
    one = len(warn) == 1
    sent = notify(
        event="pod.dormant-deprovision",
        subject=",".join(warn)[:200],
        title=f"Pod {warn[0]} will be deprovisioned in a day"
        if one
        else f"{len(warn)} dormant pods will be deprovisioned in a day",
        body=f"Dormant (stopped for over {settings.POD_DORMANT_DAYS:g} days): {_names(warn)}. From {when} on, "
        f"{'it' if one else 'they'} will be deprovisioned: status deprovisioned, snapshots kept. Start a pod, or "
        "put it on hold, to keep it as it is.",
    )
    if sent is False:
        _log(operation, f"the deprovisioning warning was not sent; it is tried again next time: {_names(warn)}")
        return []
    message = f"warned: deprovisioned from {when} on"
    _mark(field="dormant_warned_at", pod_ids=warn, message=message, actor=actor, operation=operation)
    return warn


def _deprovision(
    *, held: set[str], kept: set[str], actor: Actor, operation: Operation | None
) -> tuple[dict[str, int], dict[str, str]]:
    """Queue `pod.deprovision` for dormant pods whose time is up and whose warning is a day old."""
    now = timezone.now()
    due = _ids(
        _stopped().filter(
            dormant_since__lte=now - timedelta(days=settings.POD_DORMANT_DEPROVISION_DAYS),
            dormant_warned_at__lte=now - DAY,
        )
    )
    kept.update(held.intersection(due))
    queued_ids, refused = {}, {}
    for pod_id in due:
        if pod_id in held:
            continue
        try:
            with transaction.atomic():
                queued = operations.request(Kind.POD_DEPROVISION, pod_id, actor=actor, dormant=True)
                audit_record(
                    actor=actor,
                    action=AuditAction.POD_DORMANT,
                    target_type=TargetType.POD,
                    target_id=pod_id,
                    message=f"dormant and warned over a day ago: deprovision queued as operation #{queued.pk} "
                    "(snapshots kept)",
                    details={"deprovision": queued.pk},
                    operation=operation,
                )
        except PanelError as exc:  # a person got there first, or it changed meanwhile
            refused[pod_id] = str(exc)
            continue
        queued_ids[pod_id] = queued.pk
        _log(operation, f"{pod_id}: dormant, warned over a day ago; deprovision queued as #{queued.pk}")
    return queued_ids, refused


def dormancy_sentence(result: dict) -> str:
    if result.get("off"):
        return "Dormancy is off (POD_DORMANT_DAYS is 0)."
    parts = [
        f"{plural(len(result['marked']), 'pod')} marked dormant",
        f"{len(result['warned'])} warned of deprovisioning",
        f"{len(result['deprovisioning'])} being deprovisioned (snapshots kept)",
    ]
    if result["held"]:
        parts.append(f"{len(result['held'])} kept ({ON_HOLD})")
    return ", ".join(parts) + "."

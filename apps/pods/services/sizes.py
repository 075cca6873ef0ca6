"""Volume sizes on a budget: the size schedule (`pods.measure`) walks, on every host at once,
the volumes whose size is oldest, for at most POD_SIZE_BUDGET_SECONDS per host per run; with
budget left over, the orphaned volumes never measured (the leak report's rows).

Reconcile never measures (it only lists); a stop's snapshot records the exact bytes it
streamed, which count as a measurement too (`measured_at`). Each run takes a host's volumes
oldest look first — the later of `measured_at` and `size_tried_at`, never looked at first —
a batch at a time, through one helper container per batch (`DockerEngine.volumes_measure`),
until the budget is spent. A volume the budget cut off midway counts as looked at, so one
volume too big for the budget never blocks the queue (it keeps its last known size).

The bound: with a budget of B seconds per run, a run every I minutes, and W seconds for the
helper to walk all of a host's volumes plus about c = 0.5 s per batch of
MEASURE_BATCH volumes, every volume of that host is measured again within ceil((W + c ×
batches) / B) + 1 runs, that is that many times I minutes (the +1: the run under way when it
was last measured). A volume that alone takes longer than B is never measured by the
schedule; raise the budget, or its size comes from its pod's next stop."""

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import DateTimeField, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.services import Actor
from apps.pods.docker_engine import DockerEngine, VolumeSizes
from apps.pods.models import DockerHost, OrphanVolume, Pod, PodVolume
from apps.pods.selectors import pods_busy
from apps.pods.services.fleet import BATCH
from apps.pods.services.hosts import engine_for, host_default
from apps.pods.services.state import _log, host_sample
from apps.pods.services.volume_marks import folder_sizes
from controlpanel.errors import PanelError
from controlpanel.threads import started

# Volumes one helper container walks; a host with time left gets the next batch.
MEASURE_BATCH = BATCH
_NEVER = Value(datetime(1970, 1, 1, tzinfo=UTC), output_field=DateTimeField())
# When a volume's size was last looked at: measured (by this schedule or a stop) or tried.
LOOKED_AT = Greatest(Coalesce("measured_at", _NEVER), Coalesce("size_tried_at", _NEVER))


def orphans_to_measure(*, host: DockerHost, tried: set[int], limit: int) -> list[tuple[int, str]]:
    """(pk, docker name) of the host's orphaned volumes never measured, not tried in this run
    yet (one query): the leak report shows their bytes, not "not measured yet", for good."""
    return list(
        OrphanVolume.objects.filter(host=host, size_bytes__isnull=True)
        .exclude(pk__in=tried)
        .order_by("pk")
        .values_list("pk", "docker_name")[:limit]
    )


def volumes_to_measure(*, host: DockerHost, before: datetime, limit: int) -> list[tuple[int, str]]:
    """(pk, docker name) of the host's volumes to measure next, oldest look first, of pods
    that hold their volumes and have no work in flight (one query)."""
    return list(
        PodVolume.objects.filter(pod__host=host, exists=True, pod__status__in=Pod.HOLDS_VOLUMES)
        .exclude(pod__pod_id__in=pods_busy())
        .annotate(looked_at=LOOKED_AT)
        .filter(looked_at__lt=before)
        .order_by("looked_at", "pk")
        .values_list("pk", "docker_name")[:limit]
    )


@dataclass
class _HostRun:
    """One host's part of a run: its thread measures, the calling thread reads and writes."""

    host: DockerHost
    deadline: float
    inbox: queue.Queue = field(default_factory=queue.Queue)
    pending: dict[str, int] = field(default_factory=dict)  # docker name → pk of the batch out
    # Pods' volumes first; once none is left to look at, the orphans (`pending` then holds those).
    pending_orphans: bool = False
    orphans_tried: set[int] = field(default_factory=set)
    measured: int = 0
    cut_off: int = 0
    error: str = ""
    done: bool = False


def _host_measure(run: _HostRun, image: str, outbox: queue.Queue) -> None:
    """The host's thread: Docker calls only, a batch of names at a time until told to stop."""
    try:
        engine = engine_for(run.host)
        engine.helpers_remove()
        while (names := run.inbox.get()) is not None:
            left = run.deadline - time.monotonic()
            # A helper needs about twice its start-up time (start, then stop) before it measures anything.
            worth_it = left > 2 * engine.helper_seconds
            outbox.put((run, engine.volumes_measure(names=names, image=image, seconds=left) if worth_it else None))
    except PanelError as exc:
        outbox.put((run, exc))
    except Exception as exc:  # noqa: BLE001 - re-raised on the calling thread
        outbox.put((run, exc))
    else:
        outbox.put((run, StopIteration()))


def _next_batch(run: _HostRun, *, started: datetime, batch_size: int) -> list[str] | None:
    if time.monotonic() >= run.deadline:
        return None
    rows = volumes_to_measure(host=run.host, before=started, limit=batch_size)
    run.pending_orphans = not rows
    if run.pending_orphans:
        rows = orphans_to_measure(host=run.host, tried=run.orphans_tried, limit=batch_size)
        run.orphans_tried.update(pk for pk, _ in rows)
    run.pending = {name: pk for pk, name in rows}
    return list(run.pending) or None


def _sizes_write(run: _HostRun, answer: VolumeSizes) -> None:
    """Two queries a batch: the sizes measured, and when the rest were tried."""
    now = timezone.now()
    if run.pending_orphans:
        found = [
            OrphanVolume(pk=run.pending[name], size_bytes=size)
            for name, size in answer.sizes.items()
            if name in run.pending
        ]
        OrphanVolume.objects.bulk_update(found, ["size_bytes"], batch_size=BATCH)
        run.measured += len(found)
        run.cut_off += len([name for name in answer.walked if name not in answer.sizes])
        return
    measured = [
        PodVolume(pk=run.pending[name], size_bytes=size, measured_at=now, size_tried_at=now)
        for name, size in answer.sizes.items()
        if name in run.pending
    ]
    PodVolume.objects.bulk_update(measured, ["size_bytes", "measured_at", "size_tried_at"], batch_size=BATCH)
    tried = [run.pending[name] for name in answer.walked if name in run.pending and name not in answer.sizes]
    PodVolume.objects.filter(pk__in=tried).update(size_tried_at=now)
    run.measured += len(measured)
    run.cut_off += len(tried)


def pods_measure(*, actor: Actor, operation: Operation | None = None, batch_size: int = MEASURE_BATCH) -> dict:
    """Measure the oldest volume sizes of every host at once, POD_SIZE_BUDGET_SECONDS each."""
    host_default()
    budget = settings.POD_SIZE_BUDGET_SECONDS
    started = timezone.now()
    begun = time.monotonic()
    outbox: queue.Queue = queue.Queue()
    runs = [_HostRun(host=host, deadline=begun + budget) for host in DockerHost.objects.all()]
    for run in runs:
        run.inbox.put(_next_batch(run, started=started, batch_size=batch_size))
        threading.Thread(
            target=_host_measure, args=(run, settings.POD_IMAGE, outbox), name=f"sizes-{run.host.name}", daemon=True
        ).start()
    # Past the budget a helper is killed, read and removed: a second at most on a live host.
    cutoff = begun + budget + max(1.0, budget / 10)
    while not all(run.done for run in runs):
        try:
            run, answer = outbox.get(timeout=max(0.0, cutoff - time.monotonic()))
        except queue.Empty:
            break
        if answer is None:  # too little of the budget left to start a helper
            run.inbox.put(None)
            continue
        if isinstance(answer, VolumeSizes):
            _sizes_write(run, answer)
            run.inbox.put(_next_batch(run, started=started, batch_size=batch_size))
            continue
        run.done = True
        if isinstance(answer, PanelError):
            run.error = str(answer)
        elif not isinstance(answer, StopIteration):
            raise answer
    report = {"budget_seconds": budget, "hosts": {}}
    for run in runs:
        if not run.done:
            run.inbox.put(None)  # its thread stops after the call it is in
            run.error = f"Docker host {run.host.name!r} did not finish within the {budget} s budget"
        if run.measured:
            host_sample(run.host)
        line = f"{run.host.name}: {run.measured} volume sizes measured, {run.cut_off} cut off by the budget"
        _log(operation, line + (f"; {run.error}" if run.error else ""))
        report["hosts"][run.host.name] = {"measured": run.measured, "cut_off": run.cut_off, "error": run.error}
    report["seconds"] = round(time.monotonic() - begun, 3)
    return report


# A pod just provisioned or started is measured at once, for its page and the chart.
POD_MEASURE_SECONDS = 10


def _pod_measure(engine: DockerEngine, names: list[str]) -> VolumeSizes:
    """One pod's volumes listed from this machine when they are its plain folders (no helper
    container: the start it follows ends sooner), else walked by the size helper within
    POD_MEASURE_SECONDS. Both count as `du -sb` does."""
    listed = folder_sizes(engine, names)
    if listed is not None:
        return VolumeSizes(sizes=listed, walked=list(names))
    return engine.volumes_measure(names=names, image=settings.POD_IMAGE, seconds=POD_MEASURE_SECONDS)


def sizes_measuring(engine: DockerEngine, names: list[str]) -> Future:
    """`pod_sizes_measure`'s helper started now on a thread of its own, so that it runs beside
    something else the engine does (a container's start: each takes the engine a fifth of a
    second or so). It touches no database; its answer is given to `pod_sizes_measure`."""
    return started(_pod_measure, engine, names, name="sizes-measure")


def pod_sizes_measure(*, pod: Pod, operation: Operation | None = None, measuring: Future | None = None) -> None:
    """Measure one pod's volumes now, the way the size schedule and the confirmation pages do
    (`du -sb` in a helper), so every page shows one kind of figure with its age: not the
    snapshot's archive bytes after a start, not "not measured yet" after a provision. A failure
    only leaves the sizes for the schedule; it never fails the action. `measuring`: the
    measurement already under way (`sizes_measuring`), recorded here."""
    volumes = list(PodVolume.objects.filter(pod=pod, exists=True))
    try:
        if measuring is not None:
            answer = measuring.result()
        else:
            answer = _pod_measure(engine_for(pod.host), [v.docker_name for v in volumes])
    except Exception as exc:  # a measurement never fails the action it follows
        reason = str(exc) if isinstance(exc, PanelError) else f"{type(exc).__name__}: {exc}"
        _log(operation, f"volume sizes not measured now ({reason}); the size schedule measures them")
        return
    now = timezone.now()
    measured = [v for v in volumes if v.docker_name in answer.sizes]
    for volume in measured:
        volume.size_bytes, volume.measured_at, volume.size_tried_at = answer.sizes[volume.docker_name], now, now
    PodVolume.objects.bulk_update(measured, ["size_bytes", "measured_at", "size_tried_at"])
    host_sample(pod.host)  # the chart shows the pod's bytes from now on, not 0 B until the schedule

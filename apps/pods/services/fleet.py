"""Work across the fleet of Docker hosts: every host at once, each within its own time limit,
and the database side in fixed-size batches, so a run costs what changed, not one query (or
one Docker call) per pod.

Only the Docker calls run on the hosts' threads; every read and write of the database stays
on the calling thread (one connection, one transaction at a time)."""

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, actor_parts
from apps.pods.docker_engine import VolumeInfo
from apps.pods.models import POD_LABEL, VOLUME_MOUNTS, VOLUME_PREFIX, DockerHost, Pod, volume_docker_name
from apps.pods.selectors import pods_busy
from controlpanel.errors import PanelError, Unreachable

# Rows read, locked, updated or created in one query.
BATCH = 500
# Volume names whose pods are looked up at once (two queries): a bigger batch, as a host's
# every volume is looked up on every reconcile.
LOOKUP_BATCH = 2000

T = TypeVar("T")


def batched(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass
class HostAnswer:
    host: DockerHost
    value: object = None
    error: PanelError | None = None


def hosts_each(
    hosts: list[DockerHost], work: Callable[[DockerHost], object], *, seconds: float
) -> Iterator[HostAnswer]:
    """Run `work(host)` (Docker calls only) for every host at once, on a thread each, and yield
    each host's answer as soon as it comes: one slow host never holds the others back. A host
    still silent after `seconds` is answered for as unreachable; its thread ends on its own
    when its engine's socket timeout fires (it is a daemon thread, nobody waits for it)."""
    answers: queue.Queue = queue.Queue()

    def run(host: DockerHost) -> None:
        try:
            answers.put(HostAnswer(host, value=work(host)))
        except PanelError as exc:
            answers.put(HostAnswer(host, error=exc))
        except Exception as exc:  # noqa: BLE001 - re-raised on the calling thread, traceback and all
            answers.put(HostAnswer(host, value=exc))

    waiting = {host.pk: host for host in hosts}
    for host in hosts:
        threading.Thread(target=run, args=(host,), name=f"docker-host-{host.name}", daemon=True).start()
    deadline = time.monotonic() + seconds
    while waiting:
        try:
            answer = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        waiting.pop(answer.host.pk, None)
        if isinstance(answer.value, Exception):
            raise answer.value
        yield answer
    for host in waiting.values():
        yield HostAnswer(host, error=Unreachable(f"Docker host {host.name!r} did not answer within {seconds:g} s"))


def reconcile_events(
    entries: list[tuple[str, str, str]],
    *,
    actor: Actor,
    operation: Operation | None,
    action: str = AuditAction.POD_RECONCILE,
) -> list[AuditEvent]:
    """One `pod.reconcile` (or `action`) audit event per (pod id, outcome, message), for one
    bulk_create in the same transaction as the pods' change (as `audit_record` writes one)."""
    user, name = actor_parts(actor)
    return [
        AuditEvent(
            actor_user=user,
            actor_name=name,
            action=action,
            target_type=TargetType.POD,
            target_id=pod_id,
            outcome=outcome,
            message=message[:4000],
            details={},
            operation=operation,
        )
        for pod_id, outcome, message in entries
    ]


# --- which volumes no pod needs ------------------------------------------------------------


def _pod_id_from_volume(volume: VolumeInfo) -> str:
    if volume.labels.get(POD_LABEL):
        return volume.labels[POD_LABEL]
    rest = volume.name.removeprefix(VOLUME_PREFIX)
    for name in VOLUME_MOUNTS:
        if rest.endswith(f"-{name}"):
            return rest[: -len(name) - 1]
    return ""


def orphans_find(*, host: DockerHost, volumes: list[VolumeInfo]) -> list[tuple[VolumeInfo, str, str]]:
    """(volume, pod id, reason) for each volume no pod needs. Pods at work are never orphans.
    The pods are looked up a batch of volumes at a time (two queries per batch)."""
    found = []
    for chunk in batched(volumes, LOOKUP_BATCH):
        pod_ids = {_pod_id_from_volume(v) for v in chunk}
        pods = {p.pod_id: p for p in Pod.objects.filter(pod_id__in=pod_ids).only("pod_id", "host_id", "status")}
        busy = set(pods_busy().filter(target_id__in=pod_ids))
        for volume in chunk:
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

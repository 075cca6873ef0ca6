"""The backup schedule (`pods.backups`, every few minutes): queues `pod.backup` for each
running pod that is due, and tells people once when a pod's recovery point is at risk.

- **Due**: each pod has a stable slot within its interval (from its id; `selectors_backup`),
  so a fleet's backups spread over the interval instead of all at once. A pod is due once its
  newest copy (stop or backup) is older than its latest slot; so never more than about one
  interval old; a pod with no copy yet is due at once.
- **At most POD_BACKUP_CONCURRENCY per Docker host** at once, backups under way counted; the
  pods furthest behind go first, the rest wait for the next turn.
- **Unchanged pods are skipped, cheaply** (no Docker call): reconcile's CPU samples of the pod's
  container (kept while POD_IDLE_STOP_HOURS is on) show it used no CPU at all since its newest
  copy began, up to a sample from the last few minutes. Nothing ran in it, so nothing in its
  volumes changed: its newest copy still holds it all (`backup_unchanged_at` is the new recovery
  point). Without such samples a pod counts as changed.
- **Recovery point at risk**: a pod whose recovery point is older than twice its interval is
  notified once (`backup_at_risk_at`); the mark clears when a copy catches up.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.audit import operations
from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.notify import notify
from apps.audit.services import Actor
from apps.pods.models import Pod
from apps.pods.selectors import pods_busy
from apps.pods.selectors_backup import hours_text, interval_hours, last_slot, recovery_point, with_newest_copy
from apps.pods.services.idle import STALE_SECONDS
from apps.pods.services.state import _log
from controlpanel.errors import PanelError
from controlpanel.formatting import plural


def pod_unchanged_since(pod: Pod, since, *, now) -> bool:
    """Reconcile's CPU samples of the pod's current container show no CPU used from `since`
    (a sample at or before it) to a sample of the last STALE_SECONDS."""
    samples = (pod.cpu_samples or {}).get("samples") or []
    if not samples or (pod.cpu_samples or {}).get("container") != pod.container_id or since is None:
        return False
    before = [cpu for at, cpu in samples if at <= since.timestamp()]
    newest_at, newest_cpu = samples[-1]
    return bool(before) and newest_at >= now.timestamp() - STALE_SECONDS and newest_cpu == before[-1]


def _at_risk(pod: Pod, *, age: timedelta, hours: float, now, operation) -> bool:
    """Notify once when the recovery point is older than twice the interval; clear when not."""
    if age <= timedelta(hours=2 * hours):
        if pod.backup_at_risk_at is not None:
            Pod.objects.filter(pk=pod.pk).update(backup_at_risk_at=None)
        return False
    if pod.backup_at_risk_at is None:
        notify(
            event="pod.backup-at-risk",
            subject=pod.pod_id,
            title=f"Pod {pod.pod_id}: recovery point at risk",
            body=f"Pod {pod.pod_id}'s newest copy is {age.total_seconds() / 3600:.1f} h old, over twice its backup "
            f"interval ({hours_text(hours)}); a lost disk would lose everything since.",
        )
        Pod.objects.filter(pk=pod.pk).update(backup_at_risk_at=now)
        _log(operation, f"{pod.pod_id}: recovery point at risk ({age.total_seconds() / 3600:.1f} h old); told")
    return True


def pods_backups(*, actor: Actor, operation: Operation | None = None) -> dict:
    """One turn: queue the due running pods' backups, at most POD_BACKUP_CONCURRENCY per host."""
    now = timezone.now()
    busy = set(pods_busy())
    running = with_newest_copy(Pod.objects.filter(status=Pod.Status.RUNNING).exclude(host__reachable=False))
    due, unchanged, at_risk = [], [], []
    for pod in running.select_related("host").iterator(chunk_size=500):
        hours = interval_hours(pod)
        if not hours:
            continue
        point = recovery_point(pod)
        age = now - (point or pod.created_at)
        if _at_risk(pod, age=age, hours=hours, now=now, operation=operation):
            at_risk.append(pod.pod_id)
        if pod.pod_id in busy or (point is not None and point >= last_slot(pod.pod_id, timedelta(hours=hours), now)):
            continue
        if point is not None and pod_unchanged_since(pod, pod.newest_copy_started_at, now=now):
            Pod.objects.filter(pk=pod.pk).update(backup_unchanged_at=now, backup_at_risk_at=None)
            unchanged.append(pod.pod_id)
            continue
        due.append((age, pod))
    # Backups under way on each host take its places first.
    under_way: dict[int, int] = {}
    for host_id in Pod.objects.filter(
        pod_id__in=Operation.objects.filter(kind=Kind.POD_BACKUP, status__in=Operation.ACTIVE).values("target_id")
    ).values_list("host_id", flat=True):
        under_way[host_id] = under_way.get(host_id, 0) + 1
    queued, waiting, refused = {}, [], {}
    for _age, pod in sorted(due, key=lambda item: item[0], reverse=True):
        if under_way.get(pod.host_id, 0) >= settings.POD_BACKUP_CONCURRENCY:
            waiting.append(pod.pod_id)
            continue
        try:
            asked = operations.request(Kind.POD_BACKUP, pod.pod_id, actor=actor)
        except PanelError as exc:  # work on it began meanwhile
            refused[pod.pod_id] = str(exc)
            continue
        under_way[pod.host_id] = under_way.get(pod.host_id, 0) + 1
        queued[pod.pod_id] = asked.pk
        _log(operation, f"{pod.pod_id}: backup queued as operation #{asked.pk}")
    if unchanged:
        _log(operation, f"unchanged since their newest copy, not backed up: {', '.join(unchanged[:20])}")
    return {"queued": queued, "waiting": waiting, "unchanged": unchanged, "at_risk": at_risk, "refused": refused}


def backups_sentence(result: dict) -> str:
    parts = [f"{plural(len(result['queued']), 'backup')} of running pods queued"]
    if result["waiting"]:
        parts.append(f"{plural(len(result['waiting']), 'pod')} waiting for a free place on its host")
    if result["unchanged"]:
        parts.append(f"{plural(len(result['unchanged']), 'pod')} unchanged since its newest copy")
    if result["at_risk"]:
        parts.append(f"{plural(len(result['at_risk']), 'pod')} with its recovery point at risk")
    return "; ".join(parts) + "."

"""Reads about backups of running pods: each pod's interval, its recovery point (the newest
copy, stop or backup, or the last time the schedule found it unchanged since), how old that
is against the interval, for the pod page, the overview and the schedule. Database only."""

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.overview import Attention
from apps.pods.models import Pod, Snapshot
from controlpanel.formatting import humanize_duration, plural


def interval_hours(pod: Pod) -> float:
    """Hours between backups of this running pod: its own setting, else POD_BACKUP_EVERY_HOURS; 0 = off."""
    hours = pod.backup_every_hours if pod.backup_every_hours is not None else settings.POD_BACKUP_EVERY_HOURS
    return max(0.0, float(hours))


def hours_text(hours: float) -> str:
    return f"{hours:g} h"


def with_newest_copy(pods: QuerySet[Pod]) -> QuerySet[Pod]:
    """Each pod with `newest_copy_at` and `newest_copy_started_at`: its newest complete snapshot's."""
    newest = Snapshot.objects.filter(pod=OuterRef("pk"), status=Snapshot.Status.COMPLETE).order_by(
        "-finished_at", "-id"
    )
    return pods.annotate(
        newest_copy_at=Subquery(newest.values("finished_at")[:1]),
        newest_copy_started_at=Subquery(newest.values("started_at")[:1]),
    )


def recovery_point(pod: Pod) -> datetime | None:
    """What a lost disk would roll the pod back to: its newest copy, or later, the last time the
    schedule found it unchanged since that copy. Needs `with_newest_copy`."""
    points = [at for at in (pod.newest_copy_at, pod.backup_unchanged_at) if at is not None]
    return max(points) if points else None


def slot_offset(pod_id: str, interval: timedelta) -> timedelta:
    """A stable place for the pod within its interval (from its id): pods spread over it."""
    return timedelta(seconds=zlib.crc32(pod_id.encode()) % max(1, int(interval.total_seconds())))


def last_slot(pod_id: str, interval: timedelta, now: datetime) -> datetime:
    """The pod's latest slot at or before `now`: its offset plus a whole number of intervals since 1970."""
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    since = (now - epoch - slot_offset(pod_id, interval)) // interval
    return epoch + slot_offset(pod_id, interval) + since * interval


@dataclass
class BackupState:
    """One running pod's backups as a page shows them."""

    interval_hours: float
    point: datetime | None
    age: timedelta | None
    newest: Snapshot | None
    last_pause_seconds: float | None

    @property
    def default_hours(self) -> float:
        return settings.POD_BACKUP_EVERY_HOURS

    @property
    def pause(self) -> bool:
        return settings.POD_BACKUP_PAUSE

    @property
    def off(self) -> bool:
        return not self.interval_hours

    @property
    def overdue(self) -> bool:
        return not self.off and (self.age is None or self.age > timedelta(hours=self.interval_hours))

    @property
    def at_risk(self) -> bool:
        return not self.off and self.age is not None and self.age > timedelta(hours=2 * self.interval_hours)


def backup_state(pod: Pod) -> BackupState:
    newest = pod.snapshots.filter(status=Snapshot.Status.COMPLETE).order_by("-finished_at", "-id").first()
    pod.newest_copy_at = newest.finished_at if newest else None
    point = recovery_point(pod)
    last = (
        Operation.objects.filter(kind=Kind.POD_BACKUP, target_id=pod.pod_id, status=Operation.Status.SUCCEEDED)
        .order_by("-finished_at")
        .values_list("result", flat=True)
        .first()
    )
    return BackupState(
        interval_hours=interval_hours(pod),
        point=point,
        age=timezone.now() - point if point else None,
        newest=newest,
        last_pause_seconds=(last or {}).get("paused_seconds"),
    )


# Running pods the overview names, the furthest behind their interval first.
SHOWN = 10


def backups_overview() -> tuple[list[tuple[str, str]], list[Attention]]:
    """The overview's rows (how many running pods are within their interval, and the ones
    furthest behind with their age against it) and an attention line for each pod whose
    recovery point is older than twice its interval."""
    now = timezone.now()
    rows, attention, behind = [], [], []
    running = with_newest_copy(Pod.objects.filter(status=Pod.Status.RUNNING)).only(
        "pod_id", "backup_every_hours", "backup_unchanged_at", "created_at"
    )
    within = total = 0
    for pod in running.iterator(chunk_size=500):
        hours = interval_hours(pod)
        if not hours:
            continue
        total += 1
        point = recovery_point(pod)
        age = now - (point or pod.created_at)
        ratio = age / timedelta(hours=hours)
        within += ratio <= 1
        behind.append((ratio, pod.pod_id, age, hours, point is None))
        if ratio > 2:
            attention.append(
                Attention(
                    f"pod {pod.pod_id}'s newest copy is {_age(age)} old, over twice its backup interval "
                    f"({hours_text(hours)}): recovery point at risk",
                    reverse("pods:detail", args=[pod.pod_id]),
                )
            )
    if not total:
        return [("backups of running pods", "off")], []
    rows.append(("backups of running pods", f"{within} of {plural(total, 'pod')} within their interval"))
    for _ratio, pod_id, age, hours, never in sorted(behind, reverse=True)[:SHOWN]:
        since = f"no copy yet, running {_age(age)}" if never else f"last {_age(age)} ago"
        rows.append((f"backup of {pod_id}", f"{since}, every {hours_text(hours)}"))
    return rows, attention[:SHOWN]


def _age(age: timedelta) -> str:
    """ "3 h 5 min", "2 d 1 h": read against "every 24 h" at a glance."""
    return humanize_duration(age.total_seconds())

"""The backup schedule over pod rows with a controlled clock: exactly the due running pods are
queued, at most POD_BACKUP_CONCURRENCY per host; an unchanged pod is skipped; a recovery
point at risk is told once; retention treats backups as it treats stops."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_scheduled
from apps.pods import services
from apps.pods.models import DockerHost, Pod, Snapshot
from apps.pods.selectors import overview_section
from apps.pods.selectors_backup import last_slot
from apps.pods.services.backup_schedule import pods_backups
from tests.pods.test_verify import pod_row, stored_snapshot

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 6, 11, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def running(pod_id: str, *, copied: datetime | None, host: DockerHost | None = None, **fields) -> Pod:
    pod = pod_row(pod_id, status=Pod.Status.RUNNING)
    Pod.objects.filter(pk=pod.pk).update(created_at=NOW - 10 * DAY, host=host or pod.host, **fields)
    if copied is not None:
        Snapshot.objects.create(
            pod=pod, store_url="file:///x", status=Snapshot.Status.COMPLETE, started_at=copied, finished_at=copied
        )
    return Pod.objects.get(pk=pod.pk)


def queued() -> list[str]:
    return sorted(Operation.objects.filter(kind=Kind.POD_BACKUP).values_list("target_id", flat=True))


def test_exactly_the_due_pods_are_queued_one_per_host_at_once(settings):
    settings.POD_BACKUP_EVERY_HOURS, settings.POD_BACKUP_CONCURRENCY = 24, 1
    other = DockerHost.objects.create(name="other", base_url="tcp://127.0.0.1:1")
    with time_machine.travel(NOW, tick=False):
        running("old-a", copied=NOW - 2 * DAY + timedelta(hours=1))  # older than its interval: due
        running("old-b", copied=NOW - 30 * timedelta(hours=1))  # due too, but behind old-a on the host
        running("fresh", copied=NOW)  # copied now: after any slot
        running("never", copied=None, host=other)  # no copy yet: due at its first slot
        running("off", copied=NOW - 5 * DAY, backup_every_hours=0)  # this pod's backups are off
        stopped = running("stopped", copied=NOW - 5 * DAY)
        Pod.objects.filter(pk=stopped.pk).update(status=Pod.Status.STOPPED)

        result = pods_backups(actor="schedule:backups")

    assert queued() == ["never", "old-a"]
    assert result["waiting"] == ["old-b"] and result["unchanged"] == []
    # A backup under way holds its host's one place: the next turn queues nothing more there.
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        again = pods_backups(actor="schedule:backups")
    assert again["queued"] == {} and sorted(again["waiting"]) == ["old-b"]
    settings.POD_BACKUP_CONCURRENCY = 2
    with time_machine.travel(NOW + timedelta(minutes=10), tick=False):
        assert list(pods_backups(actor="schedule:backups")["queued"]) == ["old-b"]


def test_a_pods_slot_spreads_it_over_the_interval_and_is_stable():
    interval = DAY
    slots = {pod_id: last_slot(pod_id, interval, NOW) for pod_id in ("a1", "b2", "c3", "d4")}
    assert all(NOW - interval < slot <= NOW for slot in slots.values())
    assert len(set(slots.values())) == 4  # different places within the day
    assert last_slot("a1", interval, NOW + interval) == slots["a1"] + interval


def test_a_pod_that_used_no_cpu_since_its_copy_is_skipped(settings):
    settings.POD_BACKUP_EVERY_HOURS = 24
    copied = NOW - 2 * DAY
    idle = {"container": "c-idle", "samples": [[copied.timestamp() - 60, 5.0], [NOW.timestamp() - 30, 5.0]]}
    busy = {"container": "c-busy", "samples": [[copied.timestamp() - 60, 5.0], [NOW.timestamp() - 30, 5.5]]}
    with time_machine.travel(NOW, tick=False):
        running("idle", copied=copied, container_id="c-idle", cpu_samples=idle)
        running("busy", copied=copied, container_id="c-busy", cpu_samples=busy)
        result = pods_backups(actor="schedule:backups")
    assert result["unchanged"] == ["idle"] and queued() == ["busy"]
    assert Pod.objects.get(pod_id="idle").backup_unchanged_at == NOW


def test_a_recovery_point_at_risk_is_told_once(settings, receiver):
    settings.POD_BACKUP_EVERY_HOURS, settings.NOTIFY_REPEAT_MINUTES = 24, 0
    with time_machine.travel(NOW, tick=False):
        running("risky", copied=NOW - 2 * DAY - timedelta(hours=1))
        running("fine", copied=NOW - DAY - timedelta(hours=1))
        first = run_scheduled(str(Kind.PODS_BACKUPS))
        section = overview_section()
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        Operation.objects.filter(kind=Kind.POD_BACKUP).delete()  # as if they failed: still at risk
        run_scheduled(str(Kind.PODS_BACKUPS))
    assert "1 pod with its recovery point at risk" in first
    assert [body["title"] for body in receiver.bodies] == ["Pod risky: recovery point at risk"]
    assert any("risky" in item.label and "recovery point at risk" in item.label for item in section.attention)
    assert ("backups of running pods", "0 of 2 pods within their interval") in section.rows
    assert ("backup of risky", "last 2 d 1 h ago, every 24 h") in section.rows
    # A copy catches up: the mark clears, and a later risk is told again.
    with time_machine.travel(NOW + timedelta(minutes=6), tick=False):
        Snapshot.objects.create(
            pod=Pod.objects.get(pod_id="risky"),
            store_url="file:///x",
            status=Snapshot.Status.COMPLETE,
            finished_at=NOW,
            started_at=NOW,
        )
        pods_backups(actor="schedule:backups")
    assert Pod.objects.get(pod_id="risky").backup_at_risk_at is None


def test_retention_keeps_last_daily_weekly_of_stops_and_backups_alike(settings):
    settings.SNAPSHOT_KEEP_LAST, settings.SNAPSHOT_KEEP_DAILY, settings.SNAPSHOT_KEEP_WEEKLY = 2, 2, 0
    pod = pod_row("mixed")  # stopped: its newest complete snapshot is what it starts from
    moments = [NOW - timedelta(hours=h) for h in (1, 2, 3, 25, 26)]
    kinds = [Snapshot.Kind.STOP, Snapshot.Kind.BACKUP, Snapshot.Kind.BACKUP, Snapshot.Kind.STOP, Snapshot.Kind.BACKUP]
    with time_machine.travel(NOW, tick=False):
        made = {}
        for moment, kind in zip(moments, kinds, strict=True):
            made[moment] = stored_snapshot(pod, volumes={"workspace": b"x" * 10}, finished=moment)
            Snapshot.objects.filter(pk=made[moment].pk).update(kind=kind)
        result = services.snapshots_apply_retention(actor="test")
    kept = set(pod.snapshots.filter(status=Snapshot.Status.COMPLETE).values_list("finished_at", "kind"))
    # The latest two (a stop, a backup), yesterday's newest (a stop); the rest purged, backups or not.
    assert kept == {(moments[0], "stop"), (moments[1], "backup"), (moments[3], "stop")}
    assert sorted(result["purged"]) == sorted([made[moments[2]].pk, made[moments[4]].pk])

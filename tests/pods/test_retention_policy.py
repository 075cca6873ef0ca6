"""Retention by policy over real snapshot rows and real objects in the file store, with a
controlled clock: keep last, the newest per UTC day and per ISO week, never the snapshot a
stopped pod needs, never a held one; the preview lists exactly what the run purges."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.audit.holds import hold_set
from apps.audit.names import TargetType
from apps.pods import services
from apps.pods.models import Snapshot
from tests.pods.test_verify import pod_row, stored_snapshot

pytestmark = pytest.mark.django_db
# A Wednesday, noon UTC.
NOW = datetime(2025, 6, 11, 12, 0, tzinfo=UTC)


def snapshots_at(pod, *moments: datetime) -> dict[datetime, Snapshot]:
    return {moment: stored_snapshot(pod, volumes={"workspace": b"x" * 10}, finished=moment) for moment in moments}


def remaining(pod) -> set[datetime]:
    return set(pod.snapshots.filter(status=Snapshot.Status.COMPLETE).values_list("finished_at", flat=True))


def test_keep_last_daily_and_weekly_keep_the_newest_of_each_period(settings):
    settings.SNAPSHOT_KEEP_LAST, settings.SNAPSHOT_KEEP_DAILY, settings.SNAPSHOT_KEEP_WEEKLY = 2, 3, 3
    pod = pod_row("policy")
    moments = [
        NOW - timedelta(hours=1),  # today, newest: last
        NOW - timedelta(hours=2),  # today: last
        NOW - timedelta(hours=3),  # today, third: past keep-last, not the day's newest
        NOW - timedelta(days=1),  # yesterday's newest: daily
        NOW - timedelta(days=1, hours=1),  # yesterday, older: purged
        NOW - timedelta(days=2),  # Monday this week: daily (third day)
        NOW - timedelta(days=3),  # Sunday: four days ago is past daily; newest of last week: weekly
        NOW - timedelta(days=4),  # Saturday of last week: purged
        NOW - timedelta(days=10),  # newest of the week before: weekly (third week)
        NOW - timedelta(days=17),  # three weeks before: past every rule
    ]
    with time_machine.travel(NOW, tick=False):
        snapshots_at(pod, *moments)
        preview = services.retention_preview()
        result = services.snapshots_apply_retention(actor="test")
    purged = {moments[i] for i in (2, 4, 7, 9)}
    assert remaining(pod) == set(moments) - purged
    assert len(result["purged"]) == 4 and len(preview.delete) == 4
    assert sorted(item.name.split("#")[1].split()[0] for item in preview.delete) == sorted(map(str, result["purged"]))
    assert "newest of each of the last 3 days" in preview.summary


def test_the_clock_moves_the_daily_window(settings):
    settings.SNAPSHOT_KEEP_LAST, settings.SNAPSHOT_KEEP_DAILY, settings.SNAPSHOT_KEEP_WEEKLY = 1, 2, 0
    pod = pod_row("moving")
    moments = [NOW - timedelta(hours=1), NOW - timedelta(days=1)]
    with time_machine.travel(NOW, tick=False):
        snapshots_at(pod, *moments)
        assert services.snapshots_to_retire() == []
    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        # Yesterday's is now two days old: past the two-day window.
        assert [s.finished_at for s in services.snapshots_to_retire()] == [moments[1]]


def test_never_the_snapshot_a_stopped_pod_needs_nor_a_held_one(settings):
    settings.SNAPSHOT_KEEP_LAST, settings.SNAPSHOT_KEEP_DAILY, settings.SNAPSHOT_KEEP_WEEKLY = 0, 0, 0
    pod = pod_row("needy")
    old = NOW - timedelta(days=300)
    with time_machine.travel(NOW, tick=False):
        made = snapshots_at(pod, old, old - timedelta(days=1), old - timedelta(days=2))
        held = made[old - timedelta(days=1)]
        hold_set(target_type=TargetType.SNAPSHOT, target_id=str(held.pk), reason="audit", actor="t")
        preview = services.retention_preview(keep=0)
        result = services.snapshots_apply_retention(actor="test", keep=0)
    assert remaining(pod) == {old, old - timedelta(days=1)}
    assert result["on_hold"] == [held.pk]
    assert [item.why for item in preview.keep] == ["on hold"]


def test_a_held_pod_keeps_all_its_snapshots(settings):
    settings.SNAPSHOT_KEEP_LAST = 1
    pod = pod_row("heldpod")
    with time_machine.travel(NOW, tick=False):
        snapshots_at(pod, NOW - timedelta(days=1), NOW - timedelta(days=2))
        hold_set(target_type=TargetType.POD, target_id=pod.pod_id, reason="legal", actor="t")
        assert services.snapshots_apply_retention(actor="test")["purged"] == []
    assert len(remaining(pod)) == 2

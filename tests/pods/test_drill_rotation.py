"""Restore drills on a schedule, on the real dockerd with a controlled clock: each turn of
the rotation queues one drill of the pod whose last drill is oldest (never drilled first),
only once that drill is POD_DRILL_EVERY_DAYS old; POD_DRILL_EVERY_DAYS=0 drills nothing."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now, run_scheduled
from apps.audit.schedules import collect_schedules
from apps.pods import services
from apps.pods.models import Pod

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def tiny_stopped_pod(new_pod_id) -> str:
    """A pod with nothing but its image's files, stopped: one small complete snapshot."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    return pod_id


def rotate(when, django_capture_on_commit_callbacks) -> Operation:
    """One turn of the schedule at `when`; the drill it queues runs inline once it commits."""
    with time_machine.travel(when, tick=False), django_capture_on_commit_callbacks(execute=True):
        run_scheduled(str(Kind.PODS_DRILL_ROTATION))
    return Operation.objects.filter(kind=Kind.PODS_DRILL_ROTATION).latest("pk")


def drilled(pod_id: str) -> list[Operation]:
    return list(Operation.objects.filter(kind=Kind.PODS_DRILL, target_id=pod_id).order_by("pk"))


def test_each_turn_drills_the_pod_whose_last_drill_is_oldest(
    new_pod_id, pods_settings, q_sync, django_capture_on_commit_callbacks
):
    pods_settings.POD_DRILL_EVERY_DAYS = 7
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=20), tick=False):
        first, second = tiny_stopped_pod(new_pod_id), tiny_stopped_pod(new_pod_id)
    # The pod made first was drilled by a person ten days ago; the other never was.
    with time_machine.travel(now - timedelta(days=10), tick=False):
        run_now(Kind.PODS_DRILL, first, actor="test")

    turns = [rotate(now + timedelta(hours=hour), django_capture_on_commit_callbacks) for hour in (0, 1, 2)]

    assert [turn.result.get("drilled") for turn in turns] == [second, first, None]
    assert turns[0].result["summary"] == f"Restore drill of pod {second} queued as operation #{drilled(second)[0].pk}."
    assert turns[2].result["summary"] == f"Every pod was drilled within 7 days; pod {second} is next."
    assert [op.status for op in drilled(second)] == [Operation.Status.SUCCEEDED]
    latest = drilled(first)[-1]
    assert len(drilled(first)) == 2 and latest.status == Operation.Status.SUCCEEDED
    assert latest.actor_name == "schedule:drill-rotation"
    assert Pod.objects.get(pod_id=first).proven_by.startswith("restore drill of snapshot #")
    # A week after the rotation drilled it, the first pod it took is due again.
    due = rotate(now + timedelta(days=7, minutes=1), django_capture_on_commit_callbacks)
    assert due.result["drilled"] == second


def test_no_drill_is_scheduled_when_off_or_with_nothing_to_drill(pods_settings):
    assert tuple(name for name, *_ in collect_schedules() if "drill" in name) == ("rotate restore drills",)
    pods_settings.POD_DRILL_EVERY_DAYS = 0
    off = run_scheduled(str(Kind.PODS_DRILL_ROTATION))
    assert off == "succeeded: Scheduled restore drills are off (POD_DRILL_EVERY_DAYS is 0)."
    pods_settings.POD_DRILL_EVERY_DAYS = 7
    none = run_scheduled(str(Kind.PODS_DRILL_ROTATION))
    assert none == "succeeded: No pod has a complete snapshot to drill."
    assert not Operation.objects.filter(kind=Kind.PODS_DRILL).exists()

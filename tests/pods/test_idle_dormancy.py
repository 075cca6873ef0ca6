"""Dormant pods on the real dockerd, with a controlled clock: a pod stopped (with its snapshot)
and not started for POD_DORMANT_DAYS is marked dormant and people are told; with
POD_DORMANT_DEPROVISION_DAYS it is warned a day before its time is up and deprovisioned
(snapshots kept) only once that warning is a day old; holds win; starting clears it all.
Notifications arrive at a real HTTP receiver on 127.0.0.1."""

from datetime import timedelta

import pytest
import time_machine

from apps.audit.holds import hold_release, hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_scheduled
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from apps.pods.selectors import overview_section
from apps.pods.snapshots import store_from_url
from tests.pods.conftest import run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


@pytest.fixture
def dormancy(pods_settings):
    pods_settings.POD_DORMANT_DAYS = 30
    pods_settings.POD_DORMANT_DEPROVISION_DAYS = 10
    return pods_settings


@pytest.fixture
def stopped_pod(docker_client, new_pod_id):
    """A pod with a file, stopped with a verified snapshot: (pod id, when it stopped)."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "echo dormant > /workspace/note")
    services.pod_stop(pod_id=pod_id, actor="test")
    return pod_id, Pod.objects.get(pod_id=pod_id).status_changed_at


def _dormancy_at(when, django_capture_on_commit_callbacks) -> Operation:
    """The schedule's turn at `when`; a deprovision it queues runs inline once it commits."""
    with time_machine.travel(when, tick=False), django_capture_on_commit_callbacks(execute=True):
        run_scheduled(str(Kind.PODS_DORMANCY))
    return Operation.objects.filter(kind=Kind.PODS_DORMANCY).latest("pk")


def test_dormant_then_warned_then_deprovisioned_only_after_a_day_old_warning(
    stopped_pod, dormancy, receiver, q_sync, django_capture_on_commit_callbacks
):
    pod_id, stopped_at = stopped_pod
    day = timedelta(days=1)

    early = _dormancy_at(stopped_at + 29 * day, django_capture_on_commit_callbacks)
    assert early.result["marked"] == [] and receiver.bodies == []

    marked = _dormancy_at(stopped_at + 30 * day + timedelta(hours=1), django_capture_on_commit_callbacks)
    assert marked.result["summary"] == (
        "1 pod marked dormant, 0 warned of deprovisioning, 0 being deprovisioned (snapshots kept)."
    )
    pod = Pod.objects.get(pod_id=pod_id)
    dormant_since = pod.dormant_since
    assert dormant_since is not None and pod.dormant_warned_at is None
    assert receiver.bodies[-1]["title"] == f"Pod {pod_id} is dormant"
    assert "deprovisioned (snapshots kept) after 10 more days" in receiver.bodies[-1]["message"]
    section = overview_section()
    assert ("dormant", 1) in section.rows
    assert any(item.label == "1 dormant pod (stopped, not started for 30 days)" for item in section.attention)

    # Not yet within a day of its time: no warning.
    _dormancy_at(dormant_since + 8 * day, django_capture_on_commit_callbacks)
    assert Pod.objects.get(pod_id=pod_id).dormant_warned_at is None
    assert len(receiver.bodies) == 1

    warned_at = dormant_since + 9 * day + timedelta(hours=1)
    warning = _dormancy_at(warned_at, django_capture_on_commit_callbacks)
    assert warning.result["warned"] == [pod_id]
    assert Pod.objects.get(pod_id=pod_id).dormant_warned_at == warned_at
    assert receiver.bodies[-1]["title"] == f"Pod {pod_id} will be deprovisioned in a day"
    assert f"From {warned_at + day:%Y-%m-%d %H:%M} UTC on" in receiver.bodies[-1]["message"]
    attention = [item.label for item in overview_section().attention]
    assert f"1 to be deprovisioned (snapshots kept) from {warned_at + day:%Y-%m-%d %H:%M} UTC" in attention[-1]

    # Its time is up, but the warning is not a day old yet.
    _dormancy_at(dormant_since + 10 * day, django_capture_on_commit_callbacks)
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    assert not Operation.objects.filter(kind=Kind.POD_DEPROVISION).exists()

    gone = _dormancy_at(warned_at + day + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert list(gone.result["deprovisioning"]) == [pod_id]
    deprovision = Operation.objects.get(kind=Kind.POD_DEPROVISION, target_id=pod_id)
    assert (deprovision.status, deprovision.actor_name) == (Operation.Status.SUCCEEDED, "schedule:dormancy")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.DEPROVISIONED
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    assert snapshot.status == Snapshot.Status.COMPLETE  # kept, and still in its store:
    store = store_from_url(snapshot.store_url)
    volumes = [entry for entry in snapshot.manifest.values() if isinstance(entry, dict) and "key" in entry]
    assert len(volumes) == 8
    for entry in volumes:
        store.verify(entry["key"], expected_bytes=entry["bytes"], expected_sha256=entry["sha256"])
    actions = list(AuditEvent.objects.filter(target_id=pod_id).values_list("action", flat=True).order_by("pk"))
    assert actions.count(AuditAction.POD_DORMANT) == 3  # marked, warned, deprovision queued
    assert AuditAction.POD_DEPROVISION in actions
    assert len(receiver.bodies) == 2  # dormant, then the warning: nothing else


def test_a_late_warning_still_gives_a_full_day(
    stopped_pod, dormancy, receiver, q_sync, django_capture_on_commit_callbacks
):
    pod_id, stopped_at = stopped_pod
    day = timedelta(days=1)
    _dormancy_at(stopped_at + 31 * day, django_capture_on_commit_callbacks)
    dormant_since = Pod.objects.get(pod_id=pod_id).dormant_since
    # The schedule did not run for weeks: the first run after the time is up only warns.
    late = dormant_since + 20 * day
    first = _dormancy_at(late, django_capture_on_commit_callbacks)
    assert first.result["warned"] == [pod_id] and first.result["deprovisioning"] == {}
    _dormancy_at(late + day - timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    _dormancy_at(late + day, django_capture_on_commit_callbacks)
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.DEPROVISIONED


def test_a_warning_that_did_not_go_out_is_not_a_warning(
    stopped_pod, dormancy, receiver, q_sync, django_capture_on_commit_callbacks
):
    pod_id, stopped_at = stopped_pod
    day = timedelta(days=1)
    _dormancy_at(stopped_at + 31 * day, django_capture_on_commit_callbacks)
    receiver.status = 500
    dormant_since = Pod.objects.get(pod_id=pod_id).dormant_since
    failed = _dormancy_at(dormant_since + 10 * day, django_capture_on_commit_callbacks)
    assert failed.result["warned"] == []
    assert Pod.objects.get(pod_id=pod_id).dormant_warned_at is None
    _dormancy_at(dormant_since + 12 * day, django_capture_on_commit_callbacks)  # fails again
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    assert AuditEvent.objects.filter(action=AuditAction.NOTIFY_FAILED).count() == 2


def test_holds_win_over_marking_and_deprovisioning(
    stopped_pod, dormancy, receiver, q_sync, django_capture_on_commit_callbacks
):
    pod_id, stopped_at = stopped_pod
    day = timedelta(days=1)
    hold_set(target_type=TargetType.POD, target_id=pod_id, reason="legal", actor="test")
    kept = _dormancy_at(stopped_at + 31 * day, django_capture_on_commit_callbacks)
    assert kept.result["held"] == [pod_id] and kept.result["marked"] == []
    assert kept.result["summary"].endswith("1 kept (on hold).")
    assert Pod.objects.get(pod_id=pod_id).dormant_since is None

    # Released, marked and warned; held again before its time: never deprovisioned.
    hold_release(target_type=TargetType.POD, target_id=pod_id, actor="test")
    _dormancy_at(stopped_at + 32 * day, django_capture_on_commit_callbacks)
    dormant_since = Pod.objects.get(pod_id=pod_id).dormant_since
    _dormancy_at(dormant_since + 9 * day + timedelta(hours=1), django_capture_on_commit_callbacks)
    assert Pod.objects.get(pod_id=pod_id).dormant_warned_at is not None
    with time_machine.travel(dormant_since + 9 * day + timedelta(hours=2), tick=False):
        hold_set(target_type=TargetType.POD, target_id=pod_id, reason="legal again", actor="test")
    held = _dormancy_at(dormant_since + 12 * day, django_capture_on_commit_callbacks)
    assert held.result["held"] == [pod_id] and held.result["deprovisioning"] == {}
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED


def test_starting_a_dormant_pod_clears_it_and_without_deprovision_days_it_stays(
    docker_client, stopped_pod, dormancy, receiver, q_sync, django_capture_on_commit_callbacks
):
    pod_id, stopped_at = stopped_pod
    dormancy.POD_DORMANT_DEPROVISION_DAYS = 0
    day = timedelta(days=1)
    _dormancy_at(stopped_at + 31 * day, django_capture_on_commit_callbacks)
    assert "Their snapshots are kept." in receiver.bodies[-1]["message"]
    _dormancy_at(stopped_at + 400 * day, django_capture_on_commit_callbacks)
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED and pod.dormant_warned_at is None  # never warned, never removed

    services.pod_start(pod_id=pod_id, actor="test")
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.RUNNING and pod.dormant_since is None
    assert run_in(docker_client, pod_id, "cat /workspace/note") == "dormant\n"
    assert ("dormant", 0) in overview_section().rows
    assert not [item for item in overview_section().attention if "dormant" in item.label]

"""Idle pods on the real dockerd: reconcile samples each running container's CPU from the
engine's stats; the idle schedule stops (with a verified snapshot) a pod that used less than
POD_IDLE_CPU_SECONDS over POD_IDLE_STOP_HOURS, never a busy one nor a held one, and tells
people at a real HTTP receiver. The window is crossed with a controlled clock."""

import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.holds import hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_scheduled
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot, container_name
from apps.pods.services.idle import idle_usage, samples_add
from tests.pods.conftest import container_exists, pod_volumes, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

HOUR = 3600.0


@pytest.fixture
def idle_settings(pods_settings):
    pods_settings.POD_IDLE_STOP_HOURS = 4
    pods_settings.POD_IDLE_CPU_SECONDS = 1.0
    return pods_settings


def _cpu(docker_client, pod_id: str) -> float:
    """CPU seconds the pod's container has used, as reconcile reads it."""
    container_id = docker_client.containers.get(container_name(pod_id)).id
    engine = services.engine_for(services.host_default())
    return engine.containers_cpu([container_id], seconds=10)[container_id]


def _watched_for_five_hours(pod_ids: list[str], *, meanwhile=None) -> None:
    """Provision the pods and reconcile five hours ago (by the clock), run `meanwhile` on the
    real clock, and reconcile now: two CPU samples five hours apart."""
    with time_machine.travel(timezone.now() - timedelta(hours=5), tick=False):
        for pod_id in pod_ids:
            services.pod_provision(pod_id=pod_id, actor="test")
        first = services.pods_reconcile(actor="test")
    assert first["hosts"]["local"]["cpu_sampled"] == len(pod_ids)
    if meanwhile:
        meanwhile()
    services.pods_reconcile(actor="test")


def _stop_idle(django_capture_on_commit_callbacks) -> Operation:
    """The schedule's own turn; the stops it queues run inline once it commits."""
    with django_capture_on_commit_callbacks(execute=True):
        run_scheduled(str(Kind.PODS_IDLE_STOP))
    return Operation.objects.filter(kind=Kind.PODS_IDLE_STOP).latest("pk")


def test_an_idle_pod_is_stopped_with_a_verified_snapshot_and_people_are_told(
    docker_client, new_pod_id, idle_settings, receiver, q_sync, django_capture_on_commit_callbacks
):
    pod_id = new_pod_id()
    _watched_for_five_hours([pod_id])
    run_in(docker_client, pod_id, "echo kept > /workspace/note")

    schedule = _stop_idle(django_capture_on_commit_callbacks)

    assert schedule.status == Operation.Status.SUCCEEDED, schedule.error
    assert schedule.result["summary"] == "1 running pod idle for 4 h: 1 pod being stopped with a snapshot."
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED, pod.last_error
    stop = Operation.objects.get(kind=Kind.POD_STOP, target_id=pod_id)
    assert (stop.status, stop.actor_name) == (Operation.Status.SUCCEEDED, "schedule:idle-stop")
    snapshot = Snapshot.objects.get(pod=pod)
    assert snapshot.status == Snapshot.Status.COMPLETE and snapshot.total_bytes > 0
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    idle_event = AuditEvent.objects.get(action=AuditAction.POD_IDLE, target_id=pod_id)
    assert idle_event.actor_name == "schedule:idle-stop" and f"operation #{stop.pk}" in idle_event.message
    assert AuditEvent.objects.get(action=AuditAction.POD_STOP, target_id=pod_id).actor_name == "schedule:idle-stop"
    titles = [body["title"] for body in receiver.bodies]
    assert titles == [f"Pod {pod_id} stopped after 4 h idle"]
    assert f"snapshot #{snapshot.pk}" in receiver.bodies[0]["message"]

    # The snapshot holds what the pod had: starting it restores the file.
    services.pod_start(pod_id=pod_id, actor="test")
    assert run_in(docker_client, pod_id, "cat /workspace/note") == "kept\n"


def test_a_busy_pod_and_a_held_idle_pod_keep_running(
    docker_client, new_pod_id, idle_settings, receiver, q_sync, django_capture_on_commit_callbacks
):
    busy, held = new_pod_id(), new_pod_id()

    def spin():
        # A CPU-bound loop in the busy pod: wait (bounded) until it has used more than the limit.
        docker_client.containers.get(container_name(busy)).exec_run(["sh", "-c", "yes > /dev/null"], detach=True)
        start = _cpu(docker_client, busy)
        for _ in range(100):
            if _cpu(docker_client, busy) - start > 2 * idle_settings.POD_IDLE_CPU_SECONDS:
                return
            time.sleep(0.1)
        raise AssertionError("the busy pod never used its CPU")

    hold_set(target_type=TargetType.POD, target_id=held, reason="customer demo", actor="test")
    _watched_for_five_hours([busy, held], meanwhile=spin)

    schedule = _stop_idle(django_capture_on_commit_callbacks)

    assert schedule.status == Operation.Status.SUCCEEDED, schedule.error
    assert schedule.result["held"] == [held]
    assert list(schedule.result["idle"]) == [held]  # the busy one is not idle
    assert (
        schedule.result["summary"]
        == "1 running pod idle for 4 h: 0 pods being stopped with a snapshot, 1 kept (on hold)."
    )
    assert Pod.objects.get(pod_id=busy).status == Pod.Status.RUNNING
    assert Pod.objects.get(pod_id=held).status == Pod.Status.RUNNING
    assert not Operation.objects.filter(kind=Kind.POD_STOP).exists()
    assert len(pod_volumes(docker_client, busy)) == 8 and len(pod_volumes(docker_client, held)) == 8
    assert receiver.bodies == []


def test_nothing_is_sampled_or_stopped_while_idle_stop_is_off(new_pod_id, pods_settings, monkeypatch):
    pods_settings.POD_IDLE_STOP_HOURS = 0

    def no_stats(*args, **kwargs):
        raise AssertionError("reconcile read stats while idle stop is off")

    monkeypatch.setattr(DockerEngine, "containers_cpu", no_stats)
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    report = services.pods_reconcile(actor="test")
    assert report["hosts"]["local"]["cpu_sampled"] == 0
    assert Pod.objects.get(pod_id=pod_id).cpu_samples == {}
    finished = run_scheduled(str(Kind.PODS_IDLE_STOP))
    assert finished == "succeeded: Idle stop is off (POD_IDLE_STOP_HOURS is 0)."


# --- the samples themselves (no Docker) ---------------------------------------------------------


def _fed(readings, window=4 * HOUR, container="c1"):
    samples = {}
    for at, cpu in readings:
        samples = samples_add(samples, container=container, at=at, cpu=cpu, window=window)
    return samples


def test_samples_stay_few_and_start_at_the_window():
    # Reconcile every minute for ten hours: about 16 samples per window are kept, the first
    # the newest one at least a window old.
    samples = _fed([(minute * 60.0, minute * 0.001) for minute in range(600)])["samples"]
    assert len(samples) <= 19
    now = 599 * 60.0
    assert samples[0][0] <= now - 4 * HOUR < samples[1][0]
    assert idle_usage({"samples": samples}, now=now, window=4 * HOUR) == pytest.approx(samples[-1][1] - samples[0][1])


def test_a_pod_not_watched_for_a_whole_window_is_not_idle_yet():
    samples = _fed([(0.0, 0.0), (3 * HOUR, 0.0)])
    assert idle_usage(samples, now=3 * HOUR, window=4 * HOUR) is None
    samples = _fed([(0.0, 0.0), (3 * HOUR, 0.0), (4 * HOUR, 0.1)])
    assert idle_usage(samples, now=4 * HOUR, window=4 * HOUR) == pytest.approx(0.1)


def test_a_reading_that_rounds_to_the_last_one_is_not_a_restart():
    samples = _fed([(0.0, 0.0228), (5 * HOUR, 0.0228)])["samples"]
    assert samples == [[0.0, 0.023], [5 * HOUR, 0.023]]


def test_old_news_a_new_container_or_a_restarted_counter_start_afresh():
    samples = _fed([(0.0, 5.0), (5 * HOUR, 5.1)])
    assert idle_usage(samples, now=6 * HOUR, window=4 * HOUR) is None  # no sample for an hour
    assert _fed([(0.0, 5.0), (5 * HOUR, 1.0)])["samples"] == [[5 * HOUR, 1.0]]  # counter went back
    moved = samples_add(samples, container="c2", at=6 * HOUR, cpu=9.0, window=4 * HOUR)
    assert moved == {"container": "c2", "samples": [[6 * HOUR, 9.0]]}


def test_any_change_of_status_forgets_the_samples():
    pod = Pod(pod_id="x", status=Pod.Status.RUNNING, cpu_samples=_fed([(0.0, 0.0), (5 * HOUR, 0.0)]))
    pod.transition(Pod.Status.PAUSED)
    assert pod.cpu_samples == {}

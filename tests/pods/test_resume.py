"""Which interrupted pods reconcile rolls forward: only those a killed worker left behind,
never one whose failure is waiting for a person, never one another operation holds.
(tests/reliability/test_killed_workers.py kills real workers; this pins the selection.)"""

import pytest

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.services import operation_create
from apps.pods import services
from apps.pods.models import DockerHost, Pod

pytestmark = pytest.mark.django_db


@pytest.fixture
def host():
    return DockerHost.objects.create(name="resume-host", base_url="unix:///nowhere.sock", reachable=True)


def make_pod(host, pod_id, status, last_error=""):
    return Pod.objects.create(pod_id=pod_id, host=host, image="img", status=status, last_error=last_error)


def test_only_pods_a_dead_worker_left_are_queued_again(host):
    make_pod(host, "killed-stop", Pod.Status.STOPPING)
    make_pod(host, "killed-restore", Pod.Status.STARTING)
    make_pod(host, "killed-delete", Pod.Status.DELETING)
    make_pod(host, "failed-stop", Pod.Status.STOPPING, last_error="volume is in use")
    make_pod(host, "held", Pod.Status.DEPROVISIONING)
    make_pod(host, "settled", Pod.Status.STOPPED)
    operation_create(kind=Kind.POD_DEPROVISION, target_type=TargetType.POD, target_id="held", actor="someone")

    resumed = services.pods_resume_interrupted(actor="schedule:reconcile-pods")

    assert set(resumed) == {"killed-stop", "killed-restore", "killed-delete"}
    queued = Operation.objects.filter(status=Operation.Status.PENDING, params__resumed=True)
    assert sorted(queued.values_list("kind", "target_id")) == [
        ("pod.delete", "killed-delete"),
        ("pod.start", "killed-restore"),
        ("pod.stop", "killed-stop"),
    ]
    assert AuditEvent.objects.filter(action=AuditAction.POD_RESUME).count() == 3
    # Asked again while those are queued: nothing more.
    assert services.pods_resume_interrupted(actor="schedule:reconcile-pods") == {}


def test_an_unreachable_host_gets_nothing_queued(host):
    host.reachable = False
    host.save()
    make_pod(host, "killed-stop", Pod.Status.STOPPING)
    assert services.pods_resume_interrupted(actor="schedule:reconcile-pods") == {}
    assert not Operation.objects.exists()

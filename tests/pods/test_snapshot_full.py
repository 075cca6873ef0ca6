"""A full snapshot store (#15 item 5), on a real 50 MB filesystem and a pod holding ~200 MB:
a stop that cannot fit is refused before the container stops, and a store that fills up
mid-stream fails the operation (not errors it) with one line; the volumes are kept."""

import os
import subprocess

import pytest
from django.db.models import Sum

from apps.audit import operations
from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.pods import services
from apps.pods.models import Pod, PodVolume, Snapshot
from controlpanel.errors import PanelError
from tests.parts import require_part
from tests.pods.conftest import container_exists, pod_volumes, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

FILL = "dd if=/dev/urandom of=/workspace/big.bin bs=1M count=200 2>/dev/null"


@pytest.fixture
def small_store(settings, tmp_path):
    root = tmp_path / "small-store"
    root.mkdir()
    if os.geteuid() != 0:
        require_part("a 50 MB filesystem", "mounting a tmpfs needs root", "Run the pods tests as root (CI does)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=50m", "tmpfs", str(root)], capture_output=True)
    if mounted.returncode != 0:
        require_part("a 50 MB filesystem", mounted.stderr.decode().strip(), "Run as root where mount works")
    settings.SNAPSHOT_STORE_URL = f"file://{root}"
    yield root
    subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)


def _stop(pod_id: str) -> Operation:
    with pytest.raises(PanelError):
        operations.run_now(Kind.POD_STOP, pod_id, actor="test")
    return Operation.objects.filter(kind=Kind.POD_STOP, target_id=pod_id).latest("pk")


def test_a_stop_that_cannot_fit_is_refused_before_the_container_is_stopped(docker_client, new_pod_id, small_store):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, FILL)
    # The last measurement: what reconcile (or the last snapshot) found the volumes hold.
    PodVolume.objects.filter(pod__pod_id=pod_id, name="workspace").update(size_bytes=200 * 1024 * 1024)

    operation = _stop(pod_id)

    assert operation.status == Operation.Status.FAILED
    assert "\n" not in operation.error
    assert f"snapshot store file://{small_store} has" in operation.error
    assert "free" in operation.error and "refused before anything was stopped" in operation.error
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert docker_client.containers.get(f"pinacle-pod-{pod_id}").status == "running"
    assert not Snapshot.objects.filter(pod__pod_id=pod_id).exists()
    assert list(small_store.iterdir()) == []


def test_a_store_that_fills_up_mid_stream_fails_the_stop_in_one_line_and_keeps_the_volumes(
    docker_client, new_pod_id, small_store
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, FILL)
    # Last measured at provision, before the files were written: nothing to refuse up front,
    # the store fills up while workspace streams.
    measured = PodVolume.objects.filter(pod__pod_id=pod_id).aggregate(total=Sum("size_bytes"))["total"]
    assert measured < 10 * 1024 * 1024

    operation = _stop(pod_id)

    assert operation.status == Operation.Status.FAILED  # an expected refusal, not a traceback
    assert "\n" not in operation.error and "Errno" not in operation.error
    assert f"snapshot store file://{small_store} is full" in operation.error
    assert "volume workspace stopped after" in operation.error and "MiB written" in operation.error
    assert "Make room in the store" in operation.error
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED
    assert len(pod_volumes(docker_client, pod_id)) == 8 and container_exists(docker_client, pod_id)
    assert Snapshot.objects.get(pod=pod).status == Snapshot.Status.FAILED
    # The partial object went with the failure: the store is not left full.
    assert not list(small_store.rglob("*.partial"))

"""A stop's progress tells the truth from its first second: its phase in words, and bytes so
far with no stale total (the last reconcile's sizes would show more done than the total)."""

import re

import pytest

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.pods.models import VOLUME_MOUNTS, PodVolume
from apps.pods.services import pod_provision
from tests.pods.conftest import run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def test_a_stop_says_its_phase_and_never_counts_past_a_stale_total(docker_client, new_pod_id):
    pod_id = new_pod_id()
    pod_provision(pod_id=pod_id, actor="test")
    # The last measurement says the volumes are tiny; then 3 MiB are written.
    PodVolume.objects.filter(pod__pod_id=pod_id).update(size_bytes=1024)
    run_in(docker_client, pod_id, "dd if=/dev/urandom of=/workspace/new.bin bs=1M count=3 2>/dev/null")

    stop = run_now(Kind.POD_STOP, pod_id, actor="test")

    assert stop.progress_total is None  # no stale total: bytes so far only
    assert stop.progress_done >= 3 * 2**20
    lines = [re.sub(r"^\S+ \S+ ", "", line) for line in stop.log.splitlines()]
    phases = [line for line in lines if line.startswith(("stopping the container", "streaming "))]
    expected = [f"stopping the container pinacle-pod-{pod_id}"] + [
        f"streaming {mount}, {number} of 8" for number, mount in enumerate(VOLUME_MOUNTS.values(), start=1)
    ]
    assert phases == expected
    # The phases come before what they lead to: stop, stream, verify, remove.
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(prefix))
        for prefix in ("stopping the container", "streaming /workspace", "verified workspace", "removed 8 volumes")
    ]
    assert order == sorted(order)


def test_a_stop_records_the_peak_it_streamed_and_the_drop_after(docker_client, new_pod_id):
    from apps.audit.models import StorageSample

    pod_id = new_pod_id()
    pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "dd if=/dev/urandom of=/workspace/new.bin bs=1M count=3 2>/dev/null")
    StorageSample.objects.all().delete()

    run_now(Kind.POD_STOP, pod_id, actor="test")

    samples = list(StorageSample.objects.filter(domain="pods").order_by("id").values_list("total_bytes", flat=True))
    # The host held at least the 3 MiB just streamed, then (this pod's volumes gone) less.
    assert len(samples) == 2, samples
    peak, after = samples
    assert peak >= 3 * 2**20
    assert after <= peak - 3 * 2**20


def test_deleting_a_pod_leaves_no_empty_folder_in_the_file_store(docker_client, new_pod_id, panel_paths):
    pod_id = new_pod_id()
    pod_provision(pod_id=pod_id, actor="test")
    run_now(Kind.POD_STOP, pod_id, actor="test")
    assert (panel_paths / "snapshots" / pod_id).is_dir()
    run_now(Kind.POD_DELETE, pod_id, actor="test")
    assert not (panel_paths / "snapshots" / pod_id).exists()
    assert (panel_paths / "snapshots").is_dir()  # the store's own root stays

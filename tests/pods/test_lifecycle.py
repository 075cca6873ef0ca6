"""The eight-volume life cycle on the real dockerd, with snapshots in a file store and in S3."""

import json
from pathlib import Path

import pytest

from apps.audit.models import AuditEvent
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def test_provision_creates_eight_labelled_volumes_and_a_running_container(docker_client, new_pod_id):
    pod_id = new_pod_id()
    result = services.pod_provision(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.RUNNING
    assert pod.container_id == result["container_id"]
    names = pod_volumes(docker_client, pod_id)
    assert len(names) == 8
    assert sorted(pod.volumes.values_list("docker_name", flat=True)) == names
    assert all(v.exists for v in pod.volumes.all())
    for name in names:
        assert docker_client.volumes.get(name).attrs["Labels"]["pinacle.pod"] == pod_id
    assert docker_client.containers.get(f"pinacle-pod-{pod_id}").status == "running"
    assert AuditEvent.objects.filter(action="pod.provision", target_id=pod_id, outcome="succeeded").exists()


def test_stop_deletes_volumes_only_after_verified_snapshot_and_start_restores_identically(
    docker_client, new_pod_id, panel_paths
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    before = listing(docker_client, pod_id)
    assert any("/workspace/proj/empty/deeper|" in line for line in before)
    assert any("'/workspace/proj/link' -> 'src/a.txt'" in line for line in before)

    services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED
    assert pod.container_id is None
    assert not container_exists(docker_client, pod_id)
    assert pod_volumes(docker_client, pod_id) == []
    snapshot = pod.snapshots.get()
    assert snapshot.status == Snapshot.Status.COMPLETE
    assert set(snapshot.manifest) == {"workspace", "home", "root", "etc", "usr-local", "opt", "var", "srv"}
    folder = Path(panel_paths / "snapshots" / pod_id / str(snapshot.pk))
    stored = json.loads((folder / "manifest.json").read_text())["volumes"]
    assert stored == snapshot.manifest
    assert snapshot.total_bytes == sum((folder / f"{name}.tar").stat().st_size for name in stored)
    assert snapshot.manifest["home"]["bytes"] > 200 * 1024
    event = AuditEvent.objects.get(action="pod.stop", target_id=pod_id)
    assert event.outcome == "succeeded"

    services.pod_start(pod_id=pod_id, actor="test")

    pod.refresh_from_db()
    assert pod.status == Pod.Status.RUNNING
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert listing(docker_client, pod_id) == before

    services.pod_deprovision(pod_id=pod_id, actor="test")
    pod.refresh_from_db()
    assert pod.status == Pod.Status.DEPROVISIONED
    assert not container_exists(docker_client, pod_id)
    assert pod_volumes(docker_client, pod_id) == []
    # Deprovision keeps snapshots; delete purges them.
    assert folder.exists()
    services.pod_delete(pod_id=pod_id, actor="test")
    assert not folder.exists()
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.DELETED
    assert Snapshot.objects.get(pk=snapshot.pk).status == Snapshot.Status.DELETED


@pytest.mark.s3
def test_life_cycle_through_s3_multipart_is_byte_identical(docker_client, new_pod_id, s3_server, s3_bucket, settings):
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    # Bigger than one 8 MiB part, so the multipart path really runs.
    run_in(docker_client, pod_id, "dd if=/dev/urandom of=/workspace/large.bin bs=1M count=12 2>/dev/null")
    before = listing(docker_client, pod_id)

    services.pod_stop(pod_id=pod_id, actor="test")

    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    objects = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix=f"snaps/{pod_id}/")["Contents"]
    sizes = {obj["Key"].rsplit("/", 1)[1]: obj["Size"] for obj in objects}
    assert sizes["workspace.tar"] == snapshot.manifest["workspace"]["bytes"] > 12 * 1024 * 1024
    assert "manifest.json" in sizes and len(sizes) == 9
    # Verified against the store's own checksum of what it holds (12 MiB → two 8 MiB parts).
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"snaps/{pod_id}/{snapshot.pk}/workspace.tar")
    assert head["ETag"].strip('"') == snapshot.manifest["workspace"]["etag"]
    assert snapshot.manifest["workspace"]["etag"].endswith("-2")
    assert pod_volumes(docker_client, pod_id) == []

    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

    services.pod_delete(pod_id=pod_id, actor="test")
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix=f"snaps/{pod_id}/").get("KeyCount") == 0
    assert pod_volumes(docker_client, pod_id) == []


def test_paused_pod_keeps_its_volumes_and_starts_again_with_its_data(docker_client, new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    before = listing(docker_client, pod_id)
    # The container dies without a user action, then is even removed by someone.
    docker_client.api.kill(f"pinacle-pod-{pod_id}")
    services.pods_reconcile(actor="test")
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED
    assert "without a user action" in pod.last_error
    assert len(pod_volumes(docker_client, pod_id)) == 8
    docker_client.api.remove_container(f"pinacle-pod-{pod_id}")
    services.pods_reconcile(actor="test")
    assert len(pod_volumes(docker_client, pod_id)) == 8

    services.pod_start(pod_id=pod_id, actor="test")

    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert listing(docker_client, pod_id) == before
    assert Snapshot.objects.filter(pod__pod_id=pod_id).count() == 0

"""Orphan sweep and snapshot retention. Each test only looks at volumes under its own
unique name prefix, so volumes of other tests on the same dockerd are never touched."""

import shutil
from datetime import timedelta
from pathlib import Path

import docker.errors
import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.services import operation_create
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import OrphanVolume, Pod, Snapshot
from apps.pods.snapshots import store_from_url
from controlpanel.errors import InvalidInput
from tests import parts

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


@pytest.fixture
def prefix(docker_client):
    """A unique `pinacle-vol-…` prefix; every volume under it is removed afterwards."""
    value = f"pinacle-vol-{parts.pod_id('s')}"
    yield value
    for volume in docker_client.volumes.list(filters={"name": value}):
        if volume.name.startswith(value):
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass


def make_volume(docker_client, name: str, pod_id: str | None = None, payload: bool = False) -> str:
    labels = {"pinacle.pod": pod_id} if pod_id else {}
    docker_client.volumes.create(name=name, labels=labels)
    if payload:
        docker_client.containers.run(
            "pinacle-base:test",
            ["sh", "-c", "dd if=/dev/zero of=/v/fill bs=1024 count=64 2>/dev/null"],
            volumes={name: {"bind": "/v", "mode": "rw"}},
            remove=True,
        )
    return name


def exists(docker_client, name: str) -> bool:
    try:
        docker_client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


def pod_row(pod_id: str, status: str) -> Pod:
    host = services.host_default()
    return Pod.objects.create(pod_id=pod_id, host=host, image="pinacle-base:test", status=status)


def test_sweep_removes_only_old_orphans_and_never_what_a_busy_pod_needs(docker_client, pods_settings, prefix):
    pods_settings.POD_ORPHAN_GRACE_MINUTES = 60
    suffix = prefix.removeprefix("pinacle-vol-")
    orphan = make_volume(docker_client, f"{prefix}a-workspace", payload=True)
    of_stopped = make_volume(docker_client, f"{prefix}b-home", pod_id=f"{suffix}b")
    of_stopping = make_volume(docker_client, f"{prefix}c-etc", pod_id=f"{suffix}c")
    of_running = make_volume(docker_client, f"{prefix}d-var", pod_id=f"{suffix}d")
    of_busy = make_volume(docker_client, f"{prefix}e-srv", pod_id=f"{suffix}e")
    pod_row(f"{suffix}b", Pod.Status.STOPPED)
    pod_row(f"{suffix}c", Pod.Status.STOPPING)
    pod_row(f"{suffix}d", Pod.Status.RUNNING)
    pod_row(f"{suffix}e", Pod.Status.STOPPED)
    operation_create(kind=Kind.POD_START, target_type=TargetType.POD, target_id=f"{suffix}e", actor="someone")

    # Younger than the grace period: nothing is even listed.
    young = services.orphans_sweep(actor="test", name_prefix=prefix)
    assert young["orphans"] == [] and young["removed"] == []

    with time_machine.travel(timezone.now() + timedelta(minutes=61), tick=False):
        preview = services.orphans_sweep(actor="test", dry_run=True, name_prefix=prefix)
        listed = {entry["name"]: entry for entry in preview["orphans"]}
        assert set(listed) == {orphan, of_stopped}
        assert listed[orphan]["bytes"] >= 64 * 1024
        assert listed[of_stopped]["reason"].endswith("is stopped")
        assert all(exists(docker_client, name) for name in listed)
        assert AuditEvent.objects.filter(action=AuditAction.PODS_SWEEP_ORPHANS, outcome="dry_run").exists()

        result = services.orphans_sweep(actor="test", name_prefix=prefix)

    assert set(result["removed"]) == {orphan, of_stopped}
    assert not exists(docker_client, orphan) and not exists(docker_client, of_stopped)
    assert exists(docker_client, of_stopping) and exists(docker_client, of_running) and exists(docker_client, of_busy)
    event = AuditEvent.objects.filter(action=AuditAction.PODS_SWEEP_ORPHANS, outcome="succeeded").first()
    assert event.bytes_reclaimed >= 64 * 1024


def test_sweep_refuses_a_prefix_outside_our_volumes(pods_settings):
    with pytest.raises(InvalidInput, match="must start with 'pinacle-vol-'"):
        services.orphans_sweep(actor="test", name_prefix="important-")


def test_reconcile_reports_orphans_and_leftover_volumes_of_stopped_pods(docker_client, pods_settings, prefix):
    suffix = prefix.removeprefix("pinacle-vol-")
    make_volume(docker_client, f"{prefix}x-opt")
    make_volume(docker_client, f"{prefix}y-workspace", pod_id=f"{suffix}y")
    pod_row(f"{suffix}y", Pod.Status.DELETED)

    services.pods_reconcile(actor="test")

    rows = {row.docker_name: row for row in OrphanVolume.objects.filter(docker_name__startswith=prefix)}
    assert set(rows) == {f"{prefix}x-opt", f"{prefix}y-workspace"}
    assert rows[f"{prefix}y-workspace"].reason == f"pod {suffix}y is deleted"
    assert exists(docker_client, f"{prefix}x-opt")  # reported, never removed by reconcile


def make_snapshot(pod: Pod, *, age_hours: int, status: str = Snapshot.Status.COMPLETE) -> Snapshot:
    store = store_from_url()
    finished = timezone.now() - timedelta(hours=age_hours)
    snapshot = Snapshot.objects.create(
        pod=pod, store_url=store.url, status=status, total_bytes=5, finished_at=finished, created_at=finished
    )
    store.put_small(f"{snapshot.prefix}/workspace.tar", b"12345")
    return snapshot


def test_retention_keeps_the_latest_complete_snapshots_and_purges_the_rest(pods_settings, panel_paths):
    pod = pod_row("retained", Pod.Status.STOPPED)
    newest, second, third, oldest = (make_snapshot(pod, age_hours=h) for h in (1, 2, 3, 4))
    failed = make_snapshot(pod, age_hours=0, status=Snapshot.Status.FAILED)

    result = services.snapshots_apply_retention(actor="test", keep=2)

    assert set(result["purged"]) == {third.pk, oldest.pk, failed.pk}
    assert result["bytes"] == 15
    statuses = dict(Snapshot.objects.values_list("pk", "status"))
    assert statuses[newest.pk] == statuses[second.pk] == Snapshot.Status.COMPLETE
    assert statuses[third.pk] == statuses[oldest.pk] == statuses[failed.pk] == Snapshot.Status.DELETED
    root = panel_paths / "snapshots" / "retained"
    assert sorted(p.name for p in root.iterdir()) == sorted([str(newest.pk), str(second.pk)])


def test_retention_never_takes_the_snapshot_a_stopped_pod_needs(pods_settings):
    pod = pod_row("needy", Pod.Status.STOPPED)
    only = make_snapshot(pod, age_hours=100)
    assert services.snapshots_apply_retention(actor="test", keep=0)["purged"] == []
    assert Snapshot.objects.get(pk=only.pk).status == Snapshot.Status.COMPLETE


def test_a_volume_whose_folder_is_going_has_no_age_and_is_never_past_its_grace(docker_client, pods_settings, prefix):
    """While Docker removes a volume its folder goes first, and Docker then says it was created
    in year 1: read as such, every volume another operation was removing showed on the sweep's
    page as an orphan long past its grace period."""
    pods_settings.POD_ORPHAN_GRACE_MINUTES = 60
    name = make_volume(docker_client, f"{prefix}a-workspace")
    folder = Path(docker_client.api.inspect_volume(name)["Mountpoint"]).parent
    shutil.rmtree(folder)  # what Docker's removal does first
    [volume] = DockerEngine(host_name="local", base_url=pods_settings.DOCKER_HOST).volumes_list(name_prefix=prefix)
    assert volume.created_at is None
    assert services.orphans_plan(name_prefix=prefix) == []

"""Restore drills on the real dockerd: a stopped pod's latest snapshot restores into
temporary labelled volumes, every file is checked against the manifest's per-file list,
nothing of the drill remains, and the pod's own volumes are never touched."""

import json
from datetime import timedelta

import docker.errors
import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import run_now
from apps.audit.services import operation_claim, operation_create, operation_reap_stale
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from apps.pods.selectors import overview_section
from apps.pods.services.drill import DRILL_LABEL, DRILL_PREFIX, drill_volume_name
from controlpanel.errors import PanelError
from tests.pods.conftest import WRITE_SCRIPT, listing, pod_volumes, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def drill_leftovers(docker_client, pod_id: str) -> list[str]:
    volumes = [v.name for v in docker_client.volumes.list(filters={"label": DRILL_LABEL})]
    containers = [c.name for c in docker_client.containers.list(all=True, filters={"label": DRILL_LABEL})]
    return sorted(name for name in volumes + containers if name.startswith(f"{DRILL_PREFIX}{pod_id}"))


def stopped_pod(docker_client, new_pod_id) -> str:
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    return pod_id


def test_a_drill_checks_every_file_of_the_latest_snapshot_and_leaves_nothing(docker_client, new_pod_id, panel_paths):
    pod_id = stopped_pod(docker_client, new_pod_id)
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE)
    written = json.loads((panel_paths / "snapshots" / snapshot.prefix / "manifest.json").read_text())
    by_path = {path: (size, sha) for path, size, sha, *_ in written["files"]["workspace"]}
    assert by_path["workspace/proj/src/a.txt"][0] == len("hello pod\n")
    assert snapshot.manifest["home"]["files"] >= 1

    operation = run_now(Kind.PODS_DRILL, pod_id, actor="test")

    assert operation.result["files"] == sum(len(files) for files in written["files"].values())
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.proven_at is not None and pod.proven_by == f"restore drill of snapshot #{snapshot.pk}"
    assert pod.drill_error == ""
    assert drill_leftovers(docker_client, pod_id) == []
    assert pod_volumes(docker_client, pod_id) == []  # a stopped pod's volumes stay gone


def test_a_drill_of_a_running_pod_never_touches_its_volumes(docker_client, new_pod_id):
    pod_id = stopped_pod(docker_client, new_pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "printf 'after the snapshot' > /workspace/new.txt")
    before = listing(docker_client, pod_id)

    run_now(Kind.PODS_DRILL, pod_id, actor="test")

    assert listing(docker_client, pod_id) == before
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert docker_client.containers.get(Pod.objects.get(pod_id=pod_id).container_name).status == "running"


def test_a_file_that_differs_from_the_list_fails_the_drill_notifies_and_shows(
    docker_client, new_pod_id, panel_paths, receiver
):
    pod_id = stopped_pod(docker_client, new_pod_id)
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE)
    manifest_path = panel_paths / "snapshots" / snapshot.prefix / "manifest.json"
    written = json.loads(manifest_path.read_text())
    for entry in written["files"]["workspace"]:
        if entry[0] == "workspace/proj/src/a.txt":
            entry[2] = "0" * 64  # the list says other bytes than the archive restores
    manifest_path.write_text(json.dumps(written))

    with pytest.raises(PanelError, match="workspace/proj/src/a.txt"):
        run_now(Kind.PODS_DRILL, pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.proven_at is None and "workspace/proj/src/a.txt" in pod.drill_error
    assert pod.drill_error.endswith(f"will not restore as it is: run Verify on pod {pod_id}'s snapshots")
    assert drill_leftovers(docker_client, pod_id) == []
    assert any("Restore drill" in body["title"] and "a.txt" in body["message"] for body in receiver.bodies)
    assert f"restore drill of pod {pod_id} failed" in [item.label for item in overview_section().attention]


def test_a_drill_killed_midway_leaves_nothing_after_the_next_reconcile(docker_client, new_pod_id, pod_image):
    pod_id = new_pod_id()
    services.host_default()
    killed = operation_create(kind=Kind.PODS_DRILL, target_type=TargetType.POD, target_id=pod_id, actor="t")
    with time_machine.travel(timezone.now() - timedelta(hours=2), tick=False):
        operation_claim(operation_id=killed.pk)  # its worker was killed two hours ago
    operation_reap_stale()
    killed.refresh_from_db()
    # Nothing runs a drill again by itself: the error says so, and who removes what it left.
    assert killed.status == Operation.Status.ERRORED and "the next run will finish" not in killed.error
    assert "removes what a drill left" in killed.error and "(a drill included) must be run again" in killed.error
    live = operation_create(kind=Kind.PODS_DRILL, target_type=TargetType.POD, target_id=pod_id + "x", actor="t")
    left = drill_volume_name(pod_id, "workspace")
    running = drill_volume_name(pod_id + "x", "workspace")
    docker_client.volumes.create(name=left, labels={DRILL_LABEL: str(killed.pk)})
    docker_client.volumes.create(name=running, labels={DRILL_LABEL: str(live.pk)})
    docker_client.containers.create(pod_image, name=f"{DRILL_PREFIX}{pod_id}", labels={DRILL_LABEL: str(killed.pk)})
    try:
        report = services.pods_reconcile(actor="test")
        assert report["drill_leftovers"] == [f"{DRILL_PREFIX}{pod_id}", left]
        assert drill_leftovers(docker_client, pod_id) == [running]  # a drill at work keeps its volumes
    finally:
        docker_client.api.remove_volume(running, force=True)
        for remove, name in (
            (docker_client.api.remove_container, f"{DRILL_PREFIX}{pod_id}"),
            (docker_client.api.remove_volume, left),
        ):
            try:
                remove(name, force=True)
            except docker.errors.NotFound:  # already gone, as it should be
                pass


def test_a_drill_is_refused_without_a_complete_snapshot(new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    with pytest.raises(PanelError, match="no complete snapshot"):
        run_now(Kind.PODS_DRILL, pod_id, actor="test")
    assert not Operation.objects.filter(kind=Kind.PODS_DRILL).exists()

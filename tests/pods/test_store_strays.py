"""Objects a stopped worker's restic helper saved under a snapshot that retention had already
purged (`services.store_strays`), on the real restic 0.14: previewed, kept while the pod is
held, forgotten by the next retention run, the pod's live snapshot still reading back whole; objects under a
prefix no snapshot row names are never touched."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import os
import subprocess

import pytest
from django.urls import reverse

from apps.audit.holds import hold_release, hold_set
from apps.audit.names import TargetType
from apps.audit.services import Progress
from apps.pods import services
from apps.pods.models import Snapshot
from apps.pods.services.verify import snapshot_verify
from apps.pods.snapshots import store_from_url
from apps.pods.stores.dedup import FOLDER_LAYOUT, HOST
from tests.pods.conftest import WRITE_SCRIPT, run_in
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def late_save(store, tmp_path, *tags: str) -> None:
    """What the helper of a dead worker does after the purge: a restic snapshot under the tags."""
    folder = tmp_path / f"late-{len(os.listdir(tmp_path))}"
    folder.mkdir()
    (folder / "data.bin").write_bytes(os.urandom(256 * 1024))
    command = ["backup", "--host", HOST, "--tag", FOLDER_LAYOUT]
    for tag in tags:
        command += ["--tag", tag]
    subprocess.run(store.command(*command, str(folder)), env=store.env(), check=True, capture_output=True)


def test_objects_saved_under_a_purged_snapshot_are_previewed_held_and_then_forgotten(
    docker_client, new_pod_id, dedup_file, tmp_path, staff_client
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_backup(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    services.pod_backup(pod_id=pod_id, actor="test")
    first, second = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("pk")
    services.snapshots_apply_retention(actor="test", keep=1)
    first.refresh_from_db()
    assert first.status == Snapshot.Status.DELETED

    store = store_from_url()
    late_save(store, tmp_path, f"{first.prefix}/workspace.tar", f"{first.prefix}/home.tar")
    late_save(store, tmp_path, "ghost/999999/workspace.tar")  # no row names it: never touched
    assert f"{first.prefix}/workspace.tar" in store.keys_present()

    preview = services.retention_preview(keep=1)
    wanted = f"2 objects under purged snapshot #{first.pk} of pod {pod_id}"
    assert [item.name for item in preview.delete if wanted in item.name]
    assert not [item for item in preview.delete if "ghost" in item.name]
    page = staff_client.get(reverse("pods:retention")).content.decode()
    assert wanted in page and "Purge these snapshots" in page

    hold_set(target_type=TargetType.POD, target_id=pod_id, reason="legal asked", actor="test")
    held = services.snapshots_apply_retention(actor="test", keep=1)
    assert held["strays_on_hold"] == [first.prefix] and held["strays_forgotten"] == []
    assert f"{first.prefix}/workspace.tar" in store.keys_present()
    assert [item.name for item in services.retention_preview(keep=1).keep if wanted in item.name]

    hold_release(target_type=TargetType.POD, target_id=pod_id, actor="test")
    done = services.snapshots_apply_retention(actor="test", keep=1)
    assert done["strays_forgotten"] == [first.prefix] and done["bytes"] > 0
    present = store.keys_present()
    assert f"{first.prefix}/workspace.tar" not in present and f"{first.prefix}/home.tar" not in present
    assert "ghost/999999/workspace.tar" in present
    assert not [item for item in services.retention_preview(keep=1).delete if wanted in item.name]

    # The pod's live snapshot is whole: every object of it reads back as its manifest says.
    second.refresh_from_db()
    assert second.status == Snapshot.Status.COMPLETE
    assert snapshot_verify(snapshot=second, progress=Progress(None)) == ""


def test_objects_a_live_snapshot_points_at_stay_and_only_the_purged_pods_own_prefix_counts(
    docker_client, new_pod_id, dedup_file, tmp_path, stream_engine
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    services.pod_start(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    first, second = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("pk")
    # The stream engine's second stop wrote only what changed: it points at the first's objects.
    reused = {e["key"] for e in second.manifest.values() if e["key"].startswith(f"{first.prefix}/")}
    assert reused
    services.snapshots_apply_retention(actor="test", keep=1)
    first.refresh_from_db()
    assert first.status == Snapshot.Status.DELETED

    store = store_from_url()
    late_save(store, tmp_path, f"{first.prefix}/late.tar")
    late_save(store, tmp_path, f"other{pod_id}/{first.pk}/workspace.tar")  # the same number, another pod
    hold_set(target_type=TargetType.SNAPSHOT, target_id=str(first.pk), reason="evidence", actor="test")
    assert services.snapshots_apply_retention(actor="test", keep=1)["strays_on_hold"] == [first.prefix]
    hold_release(target_type=TargetType.SNAPSHOT, target_id=str(first.pk), actor="test")

    done = services.snapshots_apply_retention(actor="test", keep=1)
    assert done["strays_forgotten"] == [first.prefix]
    present = store.keys_present()
    assert f"{first.prefix}/late.tar" not in present
    assert reused <= present and f"other{pod_id}/{first.pk}/workspace.tar" in present
    second.refresh_from_db()
    assert snapshot_verify(snapshot=second, progress=Progress(None)) == ""

"""A stop, deprovision or delete supersedes a running backup on the real dockerd: the backup
gives up (its snapshot failed "superseded by a stop", nothing of it complete), the action is not
held up by it; a stop's own snapshot restores the pod, a delete leaves nothing of the backup in
the store. A backup whose worker is reaped is failed by reconcile. Threads write on their own
connections: rows are committed."""

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.audit.services import operation_reap_stale
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot
from apps.pods.services import lifecycle
from controlpanel.errors import PanelError
from tests.pods.conftest import container_exists, listing, pod_volumes, pod_with_files

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def backup_held_mid_volume(
    monkeypatch, pod_id: str, claimed: threading.Event | None = None
) -> tuple[threading.Thread, list[PanelError]]:
    """A backup of `pod_id` on its own thread, held in its first volume until a stop, deprovision
    or delete claims the pod (and marks it superseded), or `claimed` is set; returned once it streams."""
    streaming, claimed = threading.Event(), claimed or threading.Event()
    read, supersede = DockerEngine.archive_read, lifecycle.backups_supersede

    def archive_read(self, *, container, path):
        chunks = read(self, container=container, path=path)
        if streaming.is_set() or pod_id not in container:  # another test's thread left running
            return chunks
        streaming.set()

        def held_mid_volume():
            first = next(chunks)
            yield first
            claimed.wait(timeout=60)  # the backup is mid-volume when the stop takes the pod
            yield from chunks

        return held_mid_volume()

    def superseding(pod, *, by):
        superseded = supersede(pod, by=by)
        if pod.pod_id == pod_id:
            claimed.set()
        return superseded

    monkeypatch.setattr(DockerEngine, "archive_read", archive_read)
    monkeypatch.setattr(lifecycle, "backups_supersede", superseding)
    refused: list[PanelError] = []

    def backup() -> None:
        try:
            run_now(Kind.POD_BACKUP, pod_id, actor="test")
        except PanelError as exc:
            refused.append(exc)
        finally:
            connection.close()

    backing_up = threading.Thread(target=backup)
    backing_up.start()
    assert streaming.wait(timeout=60)
    return backing_up, refused


def test_a_stop_supersedes_a_running_backup_and_is_not_held_up(docker_client, new_pod_id, monkeypatch):
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    backing_up, refused = backup_held_mid_volume(monkeypatch, pod_id)
    # Asked for while the backup runs: not refused as busy, and done without waiting for it.
    stop = run_now(Kind.POD_STOP, pod_id, actor="test")
    backing_up.join(timeout=120)
    assert not backing_up.is_alive()

    assert stop.status == Operation.Status.SUCCEEDED
    assert [str(exc) for exc in refused] == ["superseded by a stop"]
    backup_op = Operation.objects.get(kind=Kind.POD_BACKUP)
    assert backup_op.status == Operation.Status.FAILED and backup_op.error == "superseded by a stop"
    snapshots = {s.kind: s for s in Snapshot.objects.filter(pod__pod_id=pod_id)}
    assert snapshots["backup"].status == Snapshot.Status.FAILED and snapshots["backup"].error == "superseded by a stop"
    assert snapshots["stop"].status == Snapshot.Status.COMPLETE
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED and pod_volumes(docker_client, pod_id) == []

    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


@pytest.mark.parametrize("kind", [Kind.POD_DEPROVISION, Kind.POD_DELETE])
def test_a_deprovision_or_delete_supersedes_a_running_backup(docker_client, new_pod_id, monkeypatch, settings, kind):
    pod_id, _ = pod_with_files(docker_client, new_pod_id)
    backing_up, refused = backup_held_mid_volume(monkeypatch, pod_id)
    by = kind.split(".")[1]
    # Asked for while the backup runs: not refused as busy, and done without waiting for it.
    removal = run_now(kind, pod_id, actor="test")
    backing_up.join(timeout=120)
    assert not backing_up.is_alive()

    assert removal.status == Operation.Status.SUCCEEDED
    assert [str(exc) for exc in refused] == [f"superseded by a {by}"]
    backup_op = Operation.objects.get(kind=Kind.POD_BACKUP)
    assert backup_op.status == Operation.Status.FAILED and backup_op.error == f"superseded by a {by}"
    backup = Snapshot.objects.get(pod__pod_id=pod_id)
    assert backup.kind == Snapshot.Kind.BACKUP and backup.error == f"superseded by a {by}"
    assert backup.finished_at is not None and not backup.manifest
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    store = Path(settings.SNAPSHOT_STORE_URL.removeprefix("file://"))
    left = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file() and pod_id in str(p))
    if kind == Kind.POD_DEPROVISION:
        assert pod.status == Pod.Status.DEPROVISIONED and backup.status == Snapshot.Status.FAILED
    else:  # the half-written backup purged with the pod's snapshots, and nothing written after
        assert pod.status == Pod.Status.DELETED and backup.status == Snapshot.Status.DELETED
        assert left == []


def test_reconcile_fails_the_snapshot_of_a_backup_whose_worker_died(
    docker_client, new_pod_id, monkeypatch, staff_client
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id)
    release = threading.Event()
    backing_up, refused = backup_held_mid_volume(monkeypatch, pod_id, claimed=release)
    try:
        backup = Snapshot.objects.get(pod__pod_id=pod_id)
        assert backup.status == Snapshot.Status.UPLOADING
        # Its worker stops beating (killed): the reaper marks the operation errored, then reconcile
        # runs. The held thread's own heartbeat may land just as the reaper looks: a cutoff a
        # minute ahead counts every beat so far as the dead worker's last.
        assert operation_reap_stale(older_than=timedelta(seconds=-60)) == 1
        report = services.pods_reconcile(actor="test")
    finally:
        release.set()
        backing_up.join(timeout=120)
    assert not backing_up.is_alive()

    assert report["backups_interrupted"] == [backup.pk]
    backup.refresh_from_db()
    # No page shows it in progress; retention may purge it; the pod itself is left running.
    assert backup.status == Snapshot.Status.FAILED and backup.error == "interrupted: its worker died"
    assert backup.finished_at is not None and not backup.manifest
    assert backup.pk in {s.pk for s in services.snapshots_to_retire()}
    snapshots = staff_client.get(f"/pods/{pod_id}/?part=snapshots").content.decode()
    assert "interrupted: its worker died" in snapshots and "<progress" not in snapshots
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    # A worker that was only lost, not dead, gives up when it looks again: never complete.
    assert [str(exc) for exc in refused] == ["interrupted: its worker died"]
    assert Snapshot.objects.get(pk=backup.pk).status == Snapshot.Status.FAILED
    assert services.pods_reconcile(actor="test")["backups_interrupted"] == []

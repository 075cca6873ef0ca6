"""Faults: the store going away mid-snapshot, Docker refusing removals, provisioning that
fails, bad input and unreachable hosts. Nothing is deleted that was not safely stored, and
retrying the same action finishes the job."""

from datetime import timedelta

import pytest

from apps.audit import operations
from apps.audit.models import AuditEvent
from apps.audit.names import Kind, TargetType
from apps.audit.services import operation_create
from apps.pods import services
from apps.pods.docker_engine import DockerEngine, DockerFailure
from apps.pods.models import DockerHost, Pod, Snapshot
from apps.pods.snapshots import S3Store, StoreError, _S3Writer
from controlpanel.errors import Busy, IllegalTransition, InvalidInput, NotFound, PanelError, Unreachable
from tests.parts import free_port
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


@pytest.mark.s3
def test_s3_refusing_mid_snapshot_leaves_every_volume_and_retry_completes(
    docker_client, new_pod_id, s3_server, s3_bucket, settings, monkeypatch
):
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    before = listing(docker_client, pod_id)

    original_writer = S3Store.writer
    opened = []

    def writer_then_outage(self, key):
        opened.append(key)
        if len(opened) == 3:
            s3_server.stop()  # the store goes away while the third volume is being sent
        return original_writer(self, key)

    monkeypatch.setattr(S3Store, "writer", writer_then_outage)
    with pytest.raises(Unreachable, match="unreachable"):
        services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED
    assert "unreachable" in pod.last_error
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert container_exists(docker_client, pod_id)
    assert Snapshot.objects.get(pod=pod).status == Snapshot.Status.FAILED
    assert AuditEvent.objects.filter(action="pod.stop", target_id=pod_id, outcome="failed").exists()

    # The store comes back (moto empty, SeaweedFS with what it had), the same stop is asked again.
    monkeypatch.setattr(S3Store, "writer", original_writer)
    s3_server.start()
    if s3_bucket not in {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}:
        s3_server.client().create_bucket(Bucket=s3_bucket)  # moto keeps nothing; SeaweedFS keeps its data
    services.pod_stop(pod_id=pod_id, actor="test")

    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    assert pod_volumes(docker_client, pod_id) == []
    assert Snapshot.objects.filter(pod=pod, status=Snapshot.Status.COMPLETE).count() == 1
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


@pytest.mark.s3
def test_an_object_the_store_changed_after_upload_fails_verification_and_nothing_is_removed(
    docker_client, new_pod_id, s3_server, s3_bucket, settings, monkeypatch
):
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    original_close = _S3Writer.close

    def close_then_corrupt(self):
        original_close(self)
        if self.key.endswith("/home.tar"):
            # Same length, different bytes: only a checksum can tell.
            head = self.store.client.head_object(Bucket=self.store.bucket, Key=self.full_key)
            body = b"x" * head["ContentLength"]
            self.store.client.put_object(Bucket=self.store.bucket, Key=self.full_key, Body=body)

    monkeypatch.setattr(_S3Writer, "close", close_then_corrupt)
    with pytest.raises(StoreError, match="home.tar checksum .* differs"):
        services.pod_stop(pod_id=pod_id, actor="test")

    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.PAUSED
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert Snapshot.objects.get(pod__pod_id=pod_id).status == Snapshot.Status.FAILED


def test_unreachable_store_refuses_the_stop_before_anything_is_removed(docker_client, new_pod_id, settings):
    settings.SNAPSHOT_STORE_URL = "s3://nowhere-bucket/snaps"
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")

    with pytest.raises(Unreachable, match="snapshot store s3://nowhere-bucket/snaps unreachable"):
        services.pod_stop(pod_id=pod_id, actor="test")

    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.PAUSED
    assert len(pod_volumes(docker_client, pod_id)) == 8
    # The pod is recoverable: start reattaches its volumes.
    services.pod_start(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING


def test_docker_refusing_a_volume_removal_keeps_the_pod_stopping_and_retry_finishes(
    docker_client, new_pod_id, monkeypatch
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    before = listing(docker_client, pod_id)
    original_remove = DockerEngine.volume_remove

    def refuse_etc(self, name):
        if name.endswith("-etc"):
            raise DockerFailure(f"Docker host 'local' refused removing volume {name}: volume is in use")
        return original_remove(self, name)

    monkeypatch.setattr(DockerEngine, "volume_remove", refuse_etc)
    with pytest.raises(DockerFailure, match="volume is in use"):
        services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPING
    assert "volume is in use" in pod.last_error
    assert pod_volumes(docker_client, pod_id) == [f"pinacle-vol-{pod_id}-etc"]
    snapshot = Snapshot.objects.get(pod=pod)
    assert snapshot.status == Snapshot.Status.COMPLETE
    # A stopping pod cannot be started: its volumes are half gone.
    with pytest.raises(IllegalTransition):
        services.pod_start(pod_id=pod_id, actor="test")

    monkeypatch.setattr(DockerEngine, "volume_remove", original_remove)
    services.pod_stop(pod_id=pod_id, actor="test")

    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    assert pod_volumes(docker_client, pod_id) == []
    assert list(Snapshot.objects.filter(pod=pod).values_list("pk", flat=True)) == [snapshot.pk]
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_corrupt_snapshot_is_refused_before_the_pod_runs(docker_client, new_pod_id, panel_paths):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    tar = panel_paths / "snapshots" / pod_id / str(snapshot.pk) / "root.tar"
    data = bytearray(tar.read_bytes())
    where = data.index(b"root secret")
    data[where] = ord("R")  # one changed byte inside a file: a valid tar, wrong contents
    tar.write_bytes(bytes(data))

    with pytest.raises(PanelError, match="sha256"):
        services.pod_start(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED
    assert "sha256" in pod.last_error
    assert pod_volumes(docker_client, pod_id) == []
    assert not container_exists(docker_client, pod_id)


def test_provision_failure_removes_what_was_created_and_marks_the_pod_failed(docker_client, new_pod_id, settings):
    pod_id = new_pod_id()
    with pytest.raises(PanelError, match="provisioning pod .* failed"):
        services.pod_provision(pod_id=pod_id, actor="test", image="pinacle-missing:nope")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.FAILED
    assert "pinacle-missing" in pod.last_error
    assert pod_volumes(docker_client, pod_id) == []
    assert not container_exists(docker_client, pod_id)
    # A failed pod may be provisioned again.
    services.pod_provision(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "..", "", "x" * 200, "pod id"])
def test_bad_pod_ids_are_refused_and_touch_nothing(docker_client, pods_settings, bad_id):
    with pytest.raises(InvalidInput, match="pod id"):
        services.pod_provision(pod_id=bad_id, actor="test")
    for action in (services.pod_stop, services.pod_start, services.pod_deprovision, services.pod_delete):
        with pytest.raises(InvalidInput):
            action(pod_id=bad_id, actor="test")
    assert Pod.objects.count() == 0


def test_unknown_pod_and_illegal_transitions_say_what_is_wrong(docker_client, new_pod_id):
    with pytest.raises(NotFound, match="pod 'nope' does not exist"):
        services.pod_stop(pod_id="nope", actor="test")
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    with pytest.raises(IllegalTransition, match=f"pod '{pod_id}' is running; it cannot go to starting"):
        services.pod_start(pod_id=pod_id, actor="test")
    with pytest.raises(InvalidInput, match="already exists and is running"):
        services.pod_provision(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING


def test_second_stop_while_one_is_running_is_refused(docker_client, new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    operations.request(Kind.POD_STOP, pod_id, actor="admin-1")
    with pytest.raises(Busy, match="already has pod.stop in progress"):
        operations.request(Kind.POD_STOP, pod_id, actor="admin-2")
    with pytest.raises(Busy):
        operation_create(kind=Kind.POD_STOP, target_type=TargetType.POD, target_id=pod_id, actor="admin-3")


def test_unreachable_host_is_refused_marks_pods_unknown_and_recovers(docker_client, new_pod_id, settings):
    DockerHost.objects.create(name="gone", base_url=f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(Unreachable, match="Docker host 'gone' unreachable"):
        services.pod_provision(pod_id=new_pod_id(), actor="test", host_name="gone")
    assert Pod.objects.count() == 0

    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    local = DockerHost.objects.get(name="local")
    real_url = local.base_url
    DockerHost.objects.filter(pk=local.pk).update(base_url=f"tcp://127.0.0.1:{free_port()}")

    report = services.pods_reconcile(actor="test")

    assert report["hosts"]["local"]["reachable"] is False
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.UNKNOWN
    assert "Docker host 'local' unreachable" in pod.last_error
    assert DockerHost.objects.get(name="local").reachable is False
    assert len(pod_volumes(docker_client, pod_id)) == 8
    with pytest.raises(IllegalTransition):
        services.pod_stop(pod_id=pod_id, actor="test")

    DockerHost.objects.filter(pk=local.pk).update(base_url=real_url)
    services.pods_reconcile(actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert DockerHost.objects.get(name="local").reachable is True


def test_provision_interrupted_by_a_killed_worker_is_finished_by_provisioning_again(docker_client, new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    # The worker died after creating everything but before recording it.
    Pod.objects.filter(pod_id=pod_id).update(status=Pod.Status.PROVISIONING, container_id=None)

    with pytest.raises(PanelError, match="provisioning pod .* failed"):
        services.pod_provision(pod_id=pod_id, actor="test")  # the leftover container is in the way
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.FAILED
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)

    services.pod_provision(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING


def test_a_resumed_stop_reads_its_snapshot_back_again_before_removing_what_is_left(
    docker_client, new_pod_id, monkeypatch, panel_paths
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    original_remove = DockerEngine.volume_remove

    def refuse_etc(self, name):
        if name.endswith("-etc"):
            raise DockerFailure(f"Docker host 'local' refused removing volume {name}: volume is in use")
        return original_remove(self, name)

    monkeypatch.setattr(DockerEngine, "volume_remove", refuse_etc)
    with pytest.raises(DockerFailure):
        services.pod_stop(pod_id=pod_id, actor="test")
    monkeypatch.setattr(DockerEngine, "volume_remove", original_remove)
    # The only copy of /etc's bytes is now that volume and the stored archive; the archive decays.
    (archive,) = (panel_paths / "snapshots").rglob("etc.tar")
    with open(archive, "r+b") as damaged:
        damaged.seek(600)
        damaged.write(b"\xff" * 16)

    with pytest.raises(StoreError):
        services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPING and "etc" in pod.last_error
    assert pod_volumes(docker_client, pod_id) == [f"pinacle-vol-{pod_id}-etc"]  # not removed on trust


def test_a_resumed_stop_never_takes_a_backup_of_the_running_pod_for_its_copy(docker_client, new_pod_id):
    """A backup may finish just as a stop begins, with the pod still running and writing: a
    stop resumed after its worker died copies the volumes again instead of relying on it."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    backup = Snapshot.objects.get(pk=services.pod_backup(pod_id=pod_id, actor="test")["snapshot"])
    run_in(docker_client, pod_id, "echo after-the-backup > /workspace/late.txt")
    # The worker that began the stop died before its copy: the pod is `stopping`, and the
    # backup finished after that began.
    Pod.objects.filter(pod_id=pod_id).update(
        status=Pod.Status.STOPPING, status_changed_at=backup.finished_at - timedelta(seconds=1)
    )
    services.pod_stop(pod_id=pod_id, actor="test")
    assert Snapshot.objects.filter(pod__pod_id=pod_id, kind=Snapshot.Kind.STOP).count() == 1
    services.pod_start(pod_id=pod_id, actor="test")
    assert run_in(docker_client, pod_id, "cat /workspace/late.txt") == "after-the-backup\n"

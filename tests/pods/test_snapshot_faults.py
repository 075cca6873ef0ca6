"""Faults inside one volume's stream and inside the file store: the error names the volume
that failed, and an object changed on disk after it was written fails verification."""

import pytest

from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot
from apps.pods.stores import files
from apps.pods.stores.base import StoreError
from controlpanel.errors import PanelError, Unreachable
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, pod_with_files, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def _daemon_dies_while_streaming(monkeypatch, failing: str, *, cut_short: bool) -> None:
    """The daemon goes away while `failing` streams: that stream ends early (cut short, no
    error) or raises; every volume asked for after it fails at once, as against a dead daemon."""
    original = DockerEngine.archive_read
    dead = []

    def archive_read(self, *, container, path):
        if dead:
            raise Unreachable(f"Docker host 'local' unreachable while reading {path} of {container}: refused")
        if path != failing:
            return original(self, container=container, path=path)

        def first_half():
            stream = original(self, container=container, path=path)
            yield next(iter(stream))[:1000]  # part of the first chunk, then nothing
            dead.append(path)
            if not cut_short:
                raise Unreachable(f"Docker host 'local' unreachable while reading {path} of {container}: reset")

        return first_half()

    monkeypatch.setattr(DockerEngine, "archive_read", archive_read)


@pytest.mark.parametrize("cut_short", [True, False], ids=["stream-cut-short", "stream-raises"])
@pytest.mark.parametrize("failing", ["/workspace", "/etc"])
def test_a_failed_stream_names_the_volume_that_failed(docker_client, new_pod_id, monkeypatch, failing, cut_short):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT)
    _daemon_dies_while_streaming(monkeypatch, failing, cut_short=cut_short)

    with pytest.raises(PanelError) as failed:
        services.pod_stop(pod_id=pod_id, actor="test")

    assert failing in str(failed.value)
    later = [p for p in ["/home", "/root", "/usr/local", "/srv"] if p != failing]
    assert not any(f"reading {path} " in str(failed.value) for path in later)
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED and failing in pod.last_error
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert Snapshot.objects.get(pod=pod).status == Snapshot.Status.FAILED


def test_a_file_changed_in_the_store_after_it_was_written_fails_verification(
    docker_client, new_pod_id, monkeypatch, panel_paths
):
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    original_close = files._FileWriter.close

    def close_then_change(self):
        original_close(self)
        if self.key.endswith("/home.tar"):
            # Same length, other bytes: only the read-back's sha256 can tell.
            self.path.write_bytes(b"x" * self.path.stat().st_size)

    monkeypatch.setattr(files._FileWriter, "close", close_then_change)
    with pytest.raises(StoreError, match=r"home\.tar holds \d+ bytes \(sha256"):
        services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED
    assert len(pod_volumes(docker_client, pod_id)) == 8 and container_exists(docker_client, pod_id)
    assert Snapshot.objects.get(pod=pod).status == Snapshot.Status.FAILED
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_a_volume_changed_in_the_store_after_the_stop_fails_the_restore_and_nothing_is_left(
    docker_client, new_pod_id, panel_paths
):
    """Volumes restore as one stream per parent folder; a tar in the middle of it that reads
    other bytes than its manifest stops the restore, the pod goes back to stopped with no
    volume left, and once the store holds the right bytes again the restore is whole."""
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    etc = panel_paths / "snapshots" / pod_id / str(snapshot.pk) / "etc.tar"
    good = etc.read_bytes()
    assert b"pod=yes" in good
    etc.write_bytes(good.replace(b"pod=yes", b"pod=no!"))  # same length, other bytes

    with pytest.raises(StoreError, match=rf"snapshot #{snapshot.pk} etc: read {len(good)} bytes .* manifest says"):
        services.pod_start(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED and "etc" in pod.last_error
    assert pod.last_error.endswith(f"#{snapshot.pk} will not restore as it is: run Verify on pod {pod_id}'s snapshots")
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    etc.write_bytes(good)
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_a_volume_the_engine_stopped_reading_before_its_end_fails_the_restore(
    docker_client, new_pod_id, panel_paths, monkeypatch
):
    """The engine answers 200 after reading only part of a stream (a tar that ends early
    inside, then the send fails quietly): the volumes whose end was never read were never
    checked, so the restore fails and the pod goes back to stopped with nothing left."""
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    original = DockerEngine.archive_write

    def stops_reading_early(self, *, container, path, chunks):
        if path == "/":
            next(iter(chunks))  # the first chunk, then nothing more is asked for
            return None
        return original(self, container=container, path=path, chunks=chunks)

    monkeypatch.setattr(DockerEngine, "archive_write", stops_reading_early)
    unread = rf"snapshot #{snapshot.pk}: the engine stopped reading before the end of workspace, .*srv;"
    with pytest.raises(StoreError, match=unread):
        services.pod_start(pod_id=pod_id, actor="test")
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)

    monkeypatch.setattr(DockerEngine, "archive_write", original)
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

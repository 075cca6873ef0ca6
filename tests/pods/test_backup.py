"""Backups of running pods on the real dockerd: the pod keeps running while a process inside
writes, the copy reads back as its manifest says, a stop and start afterwards still restore
it; a pause is measured; an archive cut short is read again, never stored as complete."""

import pytest

from apps.audit.holds import hold_set
from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import run_now
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot, container_name
from apps.pods.services.verify import snapshots_to_verify
from controlpanel.errors import PanelError
from tests.pods.conftest import listing, pod_volumes, pod_with_files, run_in
from tests.pods.test_verify import use_dedup

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

WRITER = "while true; do date >> /workspace/log; done"


def container_state(docker_client, pod_id: str) -> tuple[str, str, str]:
    attrs = docker_client.api.inspect_container(container_name(pod_id))
    return attrs["Id"], attrs["State"]["Status"], attrs["State"]["StartedAt"]


def writing(docker_client, pod_id: str, script: str = WRITER) -> None:
    docker_client.containers.get(container_name(pod_id)).exec_run(["sh", "-c", script], detach=True)


def without_log(lines: list[str]) -> list[str]:
    return [line for line in lines if "/workspace/log" not in line]


def backed_up_twice_then_stopped_and_started(docker_client, new_pod_id) -> None:
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    writing(docker_client, pod_id)
    running = container_state(docker_client, pod_id)

    first = run_now(Kind.POD_BACKUP, pod_id, actor="test")
    second = run_now(Kind.POD_BACKUP, pod_id, actor="test")

    # The pod never stopped: the same container, started once, still running, volumes all there.
    assert container_state(docker_client, pod_id) == running and running[1] == "running"
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    snapshots = list(Snapshot.objects.filter(pod__pod_id=pod_id).order_by("pk"))
    assert [(s.kind, s.status) for s in snapshots] == [(Snapshot.Kind.BACKUP, Snapshot.Status.COMPLETE)] * 2
    assert [first.result["snapshot"], second.result["snapshot"]] == [s.pk for s in snapshots]
    assert "not yet proven" in second.result["summary"] and second.result["paused_seconds"] is None
    # Not read back at once (it removed nothing): the verify schedule takes it, then proves it.
    assert all(s.verified_at is None for s in snapshots)
    assert {s.pk for s in snapshots} <= {s.pk for s in snapshots_to_verify()}
    verified = services.snapshots_verify(actor="test", pod_id=pod_id)
    assert verified["verified"] == [snapshots[1].pk] and verified["failed"] == {}
    # The writer kept writing between the two backups: the log grew.
    assert snapshots[1].manifest["workspace"]["bytes"] >= snapshots[0].manifest["workspace"]["bytes"]

    services.pod_stop(pod_id=pod_id, actor="test")
    stop = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("-pk").first()
    assert stop.kind == Snapshot.Kind.STOP and pod_volumes(docker_client, pod_id) == []
    services.pod_start(pod_id=pod_id, actor="test")
    assert without_log(listing(docker_client, pod_id)) == without_log(before)
    assert run_in(docker_client, pod_id, "wc -l < /workspace/log").strip() != "0"


def test_running_pod_backed_up_twice_while_writing_keeps_running_and_restores(docker_client, new_pod_id):
    backed_up_twice_then_stopped_and_started(docker_client, new_pod_id)


def test_running_pod_backed_up_twice_into_a_dedup_store(docker_client, new_pod_id, settings, tmp_path):
    use_dedup(settings, tmp_path)
    backed_up_twice_then_stopped_and_started(docker_client, new_pod_id)


def test_pause_is_measured_and_the_pod_runs_on_held_or_not(docker_client, new_pod_id, settings):
    settings.POD_BACKUP_PAUSE = True
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    # A backup deletes nothing: a held pod is backed up all the same.
    hold_set(target_type=TargetType.POD, target_id=pod_id, reason="legal asked", actor="test")
    # Rewritten in a loop: a file shrinking while Docker archives it would cut the archive short.
    writing(docker_client, pod_id, "while true; do head -c 300000 /dev/urandom > /workspace/big; done")

    operation = run_now(Kind.POD_BACKUP, pod_id, actor="test")

    assert operation.result["consistency"] == "paused" and operation.result["paused_seconds"] > 0
    assert "paused" in operation.result["summary"] and "unpaused" in operation.log
    assert container_state(docker_client, pod_id)[1] == "running"
    assert Snapshot.objects.get(pk=operation.result["snapshot"]).status == Snapshot.Status.COMPLETE


def cut_short(monkeypatch, *, times: int, keep=lambda whole: len(whole) - 1024 - 100) -> list[str]:
    """/workspace's archive comes out without its end the first `times` reads (what a file
    shrinking under Docker's tar writer does, found on dockerd 20.10): `keep(whole)` bytes of it."""
    read, cuts = DockerEngine.archive_read, []

    def archive_read(self, *, container, path):
        chunks = read(self, container=container, path=path)
        if path != "/workspace" or len(cuts) >= times:
            return chunks
        cuts.append(path)
        whole = b"".join(chunks)
        return iter([whole[: keep(whole)]])

    monkeypatch.setattr(DockerEngine, "archive_read", archive_read)
    return cuts


def test_an_archive_cut_short_is_read_again(docker_client, new_pod_id, monkeypatch):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    cuts = cut_short(monkeypatch, times=2)

    operation = run_now(Kind.POD_BACKUP, pod_id, actor="test")

    assert cuts == ["/workspace", "/workspace"]
    assert operation.log.count("came out cut short") == 2
    assert Snapshot.objects.get(pk=operation.result["snapshot"]).status == Snapshot.Status.COMPLETE


def test_an_archive_cut_inside_a_file_of_zeros_is_caught_too(docker_client, new_pod_id, monkeypatch):
    """Cut on a block boundary inside zeros it ends in 1,024 zero bytes, like a whole archive
    (seen on dockerd 20.10 with `head -c 3000000 /dev/zero > file` in a loop): its headers tell."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "head -c 8192 /dev/zero > /workspace/zeros")
    cuts = cut_short(monkeypatch, times=1, keep=lambda whole: len(whole) - 1024 - 4096)

    operation = run_now(Kind.POD_BACKUP, pod_id, actor="test")

    assert cuts == ["/workspace"] and operation.log.count("came out cut short") == 1
    snapshot = Snapshot.objects.get(pk=operation.result["snapshot"])
    assert ["workspace/zeros", 8192] in [entry[:2] for entry in _file_list(snapshot, "workspace")]


def _file_list(snapshot: Snapshot, volume: str) -> list:
    import json

    from apps.pods.snapshots import store_from_url

    return json.loads(store_from_url(snapshot.store_url).get_small(f"{snapshot.prefix}/manifest.json"))["files"][volume]


def test_an_archive_cut_short_every_time_fails_the_backup_and_suggests_a_pause(docker_client, new_pod_id, monkeypatch):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    cut_short(monkeypatch, times=99)

    with pytest.raises(PanelError, match="cut short 3 times.*POD_BACKUP_PAUSE=1"):
        run_now(Kind.POD_BACKUP, pod_id, actor="test")

    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    assert snapshot.status == Snapshot.Status.FAILED and "POD_BACKUP_PAUSE=1" in snapshot.error
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert len(pod_volumes(docker_client, pod_id)) == 8


def test_backup_refused_unless_running_and_alone(docker_client, new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    busy = Operation.objects.create(kind=Kind.POD_STOP, target_type="pod", target_id=pod_id, actor_name="t")
    with pytest.raises(PanelError, match=r"already has pod.stop in progress"):
        run_now(Kind.POD_BACKUP, pod_id, actor="test")
    busy.delete()
    Pod.objects.filter(pod_id=pod_id).update(status=Pod.Status.PAUSED)
    with pytest.raises(PanelError, match=r"is paused; only a running pod can be backed up"):
        run_now(Kind.POD_BACKUP, pod_id, actor="test")
    assert not Snapshot.objects.filter(pod__pod_id=pod_id).exists()


def test_a_container_left_paused_by_a_dead_backup_starts_again(docker_client, new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    # A backup's worker killed while POD_BACKUP_PAUSE froze the container; reconcile saw it not running.
    docker_client.api.pause(container_name(pod_id))
    Pod.objects.filter(pod_id=pod_id).update(status=Pod.Status.PAUSED)

    services.pod_start(pod_id=pod_id, actor="test")

    assert container_state(docker_client, pod_id)[1] == "running"
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING

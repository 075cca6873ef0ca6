"""SNAPSHOT_ENGINE=beside on the real dockerd and Debian's restic: restic runs in a helper
container next to the pod's volumes (an image the panel imports itself), backs up folders with
the pod's last snapshot as parent, every volume is read back before any is removed, and a
start writes the files straight into the new volumes, checked by restic, before the pod runs.
On `dedup+file://` (bind-mounted) and `dedup+s3://` on SeaweedFS (the helper on the host's
network)."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import json
import re
import stat
import time
from pathlib import Path

import pytest

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.audit.services import Progress
from apps.pods import services
from apps.pods.docker_engine import HELPER_LABEL
from apps.pods.models import VOLUME_MOUNTS, DockerHost, Pod, Snapshot, container_name
from apps.pods.restic_helper import POD_OF_HELPER, SECRETS, image_ensure
from apps.pods.services.beside import helper_restic, helper_setup
from apps.pods.services.hosts import engine_for, host_default
from apps.pods.services.snapshot_files import file_read, snapshot_entries, snapshot_select
from apps.pods.services.verify import snapshot_verify
from apps.pods.snapshots import store_from_url
from apps.pods.stores import restic_working
from controlpanel.errors import PanelError
from tests.e2e.test_any_hour_any_file import store  # noqa: F401 - a fixture: dedup+file, dedup+s3
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, pod_with_files, run_in
from tests.pods.test_backup import writing
from tests.pods.test_dedup_locks import going_lock, gone_at_restart, lock_files
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401
from tests.pods.test_snapshot_readback import first_blob_under, flip_blob

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

MIB = 1024 * 1024
SCRIPT = WRITE_SCRIPT + "dd if=/dev/urandom of=/workspace/data.bin bs=1M count=6 2>/dev/null\n"


@pytest.fixture
def beside(settings):
    settings.SNAPSHOT_ENGINE = "beside"
    return settings


def helpers_left(docker_client, pod_id: str) -> list[str]:
    """The restic helpers of this pod (its own, or its drill's) still on the daemon; other
    tests' pods may have theirs running at the same time on the shared dockerd."""
    found = docker_client.containers.list(all=True, filters={"label": f"{HELPER_LABEL}=restic"})
    return [c.name for c in found if pod_id in c.labels.get(POD_OF_HELPER, "")]


def log_of(snapshot: Snapshot) -> str:
    return Operation.objects.get(pk=snapshot.operation_id).log


def test_a_stop_beside_the_volumes_reads_every_volume_back_and_a_start_brings_every_file_back(
    docker_client,
    new_pod_id,
    store,
    beside,
):
    pod_id, before = pod_with_files(docker_client, new_pod_id, SCRIPT)
    operation = run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    assert Operation.objects.get(pk=operation.pk).status == Operation.Status.SUCCEEDED
    assert first.status == Snapshot.Status.COMPLETE
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    # One restic snapshot holds the eight folders; each volume was read back as restic's tar.
    entries = first.manifest.values()
    assert {entry["folder"] for entry in entries} == {name.rsplit("/", 1)[-1] for name in VOLUME_MOUNTS.values()}
    assert len({entry["store_id"] for entry in entries}) == 1
    assert first.total_bytes > 6 * MIB and first.stored_bytes > 6 * MIB
    log = log_of(first)
    assert "backing up the volumes beside them with restic" in log and "(parent" not in log
    assert all(f"read back {volume.docker_name}" in log for volume in Pod.objects.get(pod_id=pod_id).volumes.all())
    assert helpers_left(docker_client, pod_id) == []

    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before
    assert helpers_left(docker_client, pod_id) == []
    # Rewritten in place after the start, its size unchanged: only its time says it changed.
    run_in(docker_client, pod_id, "dd if=/dev/urandom of=/home/dev/blob.bin bs=1024 count=1 conv=notrunc 2>/dev/null")
    edited = listing(docker_client, pod_id)
    assert edited != before

    # The second stop names the first as parent. The start wrote the volumes from it (new
    # inodes and ctimes everywhere), so files are compared by size and time: the edited file
    # is read again, the others are not, and what it adds is that file's new chunk and metadata.
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    second = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("-pk").first()
    assert second.pk != first.pk and second.status == Snapshot.Status.COMPLETE
    assert f"(parent {first.manifest['workspace']['store_id'][:8]})" in log_of(second)
    assert f"restored from snapshot #{first.pk}: files compared by size and time" in log_of(second)
    counts = re.search(r"(\d+) new, (\d+) changed, (\d+) unchanged files", log_of(second))
    assert counts and int(counts[2]) <= 3 and int(counts[3]) >= sum(e["files"] for e in entries) - 3
    assert second.stored_bytes < MIB
    # Read back as one dump of the eight: the edit shows in its sha256, not in any size.
    assert second.manifest["home"]["sha256"] != first.manifest["home"]["sha256"]
    assert [second.manifest[name]["bytes"] for name in VOLUME_MOUNTS] == [
        first.manifest[name]["bytes"] for name in VOLUME_MOUNTS
    ]

    # Everything that reads a snapshot reads this one: a verify, the files page, a download.
    assert snapshot_verify(snapshot=second, progress=Progress(None)) == ""
    shown = {entry.name: entry.size for entry in snapshot_entries(pod_id=pod_id, number=second.pk, path="/home/dev")}
    assert shown["blob.bin"] == 200 * 1024
    # Read through the file's offset in restic's tar of /workspace, its sha256 checked on the way.
    data = b"".join(file_read(snapshot_select(pod_id=pod_id, number=second.pk, path="/workspace/data.bin")))
    assert len(data) == 6 * MIB
    # A restore drill writes restic's tars into temporary volumes and checks every file.
    assert services.pod_drill(pod_id=pod_id, actor="test")["files"] == sum(e["files"] for e in entries)

    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == edited


def test_a_file_repository_is_refused_for_a_pod_on_another_host_before_it_changes(
    docker_client,
    new_pod_id,
    dedup_file,
    beside,
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id)
    remote = DockerHost.objects.create(name="far", base_url="tcp://192.0.2.1:2376")
    Pod.objects.filter(pod_id=pod_id).update(host=remote)
    with pytest.raises(PanelError, match="cannot reach: use a dedup\\+s3:// store"):
        services.pod_stop(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert not Snapshot.objects.filter(pod__pod_id=pod_id).exists()


def test_backups_of_a_running_pod_beside_it_skip_unchanged_files_and_pause_only_while_restic_scans(
    docker_client, new_pod_id, dedup_file, beside
):
    beside.POD_BACKUP_PAUSE = True
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    writing(docker_client, pod_id, "while true; do date >> /workspace/log; sleep 0.02; done")
    first = run_now(Kind.POD_BACKUP, pod_id, actor="test").result
    second = run_now(Kind.POD_BACKUP, pod_id, actor="test").result
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert docker_client.containers.get(container_name(pod_id)).status == "running"
    assert 0 < second["paused_seconds"] < 30
    snapshot = Snapshot.objects.get(pk=second["snapshot"])
    assert snapshot.kind == Snapshot.Kind.BACKUP and snapshot.status == Snapshot.Status.COMPLETE
    # The second names the first as parent: only the growing log is read again.
    earlier = Snapshot.objects.get(pk=first["snapshot"])
    restic_line = next(line for line in log_of(snapshot).splitlines() if "restic snapshot" in line)
    assert f"(parent {earlier.manifest['workspace']['store_id'][:8]})" in log_of(snapshot)
    assert "unchanged files" in restic_line and not restic_line.split(" changed, ")[1].startswith("0 unchanged")
    assert second["stored_bytes"] < 256 * 1024
    assert helpers_left(docker_client, pod_id) == []
    # The log as the backup saw it comes back, checked against its sha256.
    log = b"".join(file_read(snapshot_select(pod_id=pod_id, number=snapshot.pk, path="/workspace/log")))
    assert log and log.endswith(b"\n")


def test_a_restic_helper_a_dead_worker_left_on_the_pod_goes_before_the_stop_needs_its_volumes(
    docker_client, new_pod_id, dedup_file, beside
):
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    engine = engine_for(Pod.objects.get(pod_id=pod_id).host)
    # What a worker killed mid-backup leaves: a helper holding the pod's volumes (created, as
    # one that had not started yet; Docker refuses to remove a volume any container names).
    left = docker_client.containers.create(
        image_ensure(engine),
        ["/usr/bin/restic", "version"],
        labels={HELPER_LABEL: "restic", POD_OF_HELPER: pod_id},
        volumes={v.name: {"bind": f"/pod/{v.name}", "mode": "ro"} for v in pod_volumes_of(docker_client, pod_id)},
    )
    operation = run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    assert f"removed restic helpers a stopped worker left on pod {pod_id}: {left.name}" in operation.log
    assert pod_volumes(docker_client, pod_id) == [] and helpers_left(docker_client, pod_id) == []
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_a_helper_whose_restic_meets_a_lock_going_starts_again_at_once(
    docker_client, new_pod_id, dedup_file, beside, monkeypatch
):
    """restic 0.14 in a helper retries reading a lock that went for 45-55 s, as the panel's own
    restics do (restic/restic#4520): the helper's stderr is followed, and it is stopped and run
    again as soon as restic says so, for a stop's backup and a start's restore alike."""
    pod_id, before = pod_with_files(docker_client, new_pod_id)
    going = going_lock(dedup_file)
    started_again = gone_at_restart(monkeypatch, going)
    began = time.monotonic()
    operation = run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    assert Operation.objects.get(pk=operation.pk).status == Operation.Status.SUCCEEDED
    assert time.monotonic() - began < 30  # restic alone: 45-55 s more
    assert len(started_again) == 1 and not going.exists()
    assert f"restic met a lock that went as it read it (backing up pod {pod_id}): started again" in operation.log

    going.mkdir()
    began = time.monotonic()
    services.pod_start(pod_id=pod_id, actor="test")
    assert time.monotonic() - began < 30
    assert len(started_again) == 2 and not going.exists()
    # Each helper's restic is known by its PID and the name of the Docker host it ran on.
    assert {host for _, host in started_again} == {docker_client.info()["Name"]}
    assert listing(docker_client, pod_id) == before
    assert helpers_left(docker_client, pod_id) == [] and lock_files(dedup_file) == []


def test_the_helpers_secrets_are_files_never_in_its_configuration_and_go_with_it(store, beside, monkeypatch):
    """On this machine the key (and S3 credentials) are a private folder in memory, bind-mounted
    read-only, removed with the helper; on another host (a dedup+s3 store) they are written into
    the created container. Neither shows in `docker inspect`, and restic opens the store both ways."""
    opened = store_from_url()
    opened.repository_ensure()
    engine = engine_for(host_default())
    password = helper_setup(opened, engine)[1]["key"]
    seen, real_start = [], engine.client.api.start

    def start(helper):
        real_start(helper)
        seen.append(engine.client.api.inspect_container(helper))
        bound = [m["Source"] for m in seen[-1]["Mounts"] if m["Destination"] == SECRETS]
        seen[-1]["kept"] = {p.name: stat.S_IMODE(p.stat().st_mode) for b in bound for p in Path(b).iterdir()}
        seen[-1]["kept_mode"] = [stat.S_IMODE(Path(b).stat().st_mode) for b in bound]

    monkeypatch.setattr(engine.client.api, "start", start)
    dead = restic_working._kept_folder("helpers") / f"helper-999999999-1-{'0' * 16}"  # left by a worker that died
    dead.mkdir()
    ways = [True] if store.url.startswith("dedup+file") else [True, False]
    for here in ways:
        monkeypatch.setattr(type(engine), "on_this_machine", property(lambda self, here=here: here))
        result = helper_restic(
            opened, engine, owner="secrets", operation=None, command=["cat", "config"], volumes={}, doing="a test"
        )
        assert result.exit_code == 0 and '"chunker_polynomial"' in "".join(result.lines)
        shown = seen[-1]
        assert password.decode() not in json.dumps(shown, default=str)
        mounts = [m for m in shown["Mounts"] if m["Destination"] == SECRETS]
        if here:
            assert [(m["Type"], m["RW"]) for m in mounts] == [("bind", False)] and shown["kept_mode"] == [0o700]
            want = {"key": 0o400} if store.url.startswith("dedup+file") else {"key": 0o400, "aws": 0o400}
            assert shown["kept"] == want
            assert not Path(mounts[0]["Source"]).exists()  # gone with the helper
        else:
            assert mounts == []
    assert helpers_left(engine.client, "secrets") == [] and not dead.exists()


def pod_volumes_of(docker_client, pod_id: str) -> list:
    return [docker_client.volumes.get(name) for name in pod_volumes(docker_client, pod_id)]


def test_a_backup_of_a_pod_that_changed_nothing_takes_its_parents_reading_and_verifies(
    docker_client, new_pod_id, dedup_file, beside
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id)
    first = Snapshot.objects.get(pk=run_now(Kind.POD_BACKUP, pod_id, actor="test").result["snapshot"])
    second = Snapshot.objects.get(pk=run_now(Kind.POD_BACKUP, pod_id, actor="test").result["snapshot"])
    assert f"the same folders as snapshot #{first.pk} (restic's tree is unchanged): not read again" in log_of(second)
    assert second.manifest["home"]["store_id"] != first.manifest["home"]["store_id"]
    assert {n: e["sha256"] for n, e in second.manifest.items()} == {n: e["sha256"] for n, e in first.manifest.items()}
    # Its files are there to browse and read, and the verify schedule's read-back proves it.
    shown = {entry.name: entry.size for entry in snapshot_entries(pod_id=pod_id, number=second.pk, path="/home/dev")}
    assert shown["blob.bin"] == 200 * 1024
    assert len(b"".join(file_read(snapshot_select(pod_id=pod_id, number=second.pk, path="/home/dev/blob.bin")))) == (
        200 * 1024
    )
    assert snapshot_verify(snapshot=second, progress=Progress(None)) == ""


def test_a_backup_whose_parents_manifest_is_gone_is_read_back_instead(
    docker_client, new_pod_id, dedup_file, beside, caplog
):
    """The parent's manifest is read while restic backs up; one that cannot be read costs the
    parent's reading, not the backup: its own bytes are read back, as a first backup's are."""
    pod_id, _ = pod_with_files(docker_client, new_pod_id)
    first = Snapshot.objects.get(pk=run_now(Kind.POD_BACKUP, pod_id, actor="test").result["snapshot"])
    store = store_from_url()
    [manifest] = store._snapshots(f"{first.prefix}/manifest.json")
    store.run("forget", manifest["id"], doing="test")  # what someone with restic could do by hand
    with caplog.at_level("INFO", logger="apps.pods.services.capture_folders"):
        second = Snapshot.objects.get(pk=run_now(Kind.POD_BACKUP, pod_id, actor="test").result["snapshot"])
    assert second.status == Snapshot.Status.COMPLETE
    # Its tree was the parent's (nothing changed), so the parent's manifest was asked for.
    assert f"snapshot #{first.pk}'s manifest gave no file lists" in caplog.text
    assert "not read again" not in log_of(second) and "read back" in log_of(second)
    assert {n: e["sha256"] for n, e in second.manifest.items()} != {}


def test_a_stop_beside_the_volumes_over_a_decayed_pack_keeps_every_volume_and_says_what_to_do(
    docker_client, new_pod_id, dedup_file, beside, receiver
):
    pod_id, before = pod_with_files(docker_client, new_pod_id, SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    store = store_from_url()
    pack, _ = flip_blob(
        store, first_blob_under(store, first.manifest["workspace"]["store_id"], "workspace"), dedup_file
    )

    # The unchanged files are the parent's chunks, the decayed one among them: the read-back
    # of the new restic snapshot fails, and nothing is removed.
    with pytest.raises(PanelError) as failed:
        run_now(Kind.POD_STOP, pod_id, actor="test")
    message = str(failed.value)
    second = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert second.pk != first.pk and second.status == Snapshot.Status.FAILED
    assert f"snapshot #{second.pk} of pod {pod_id}: its eight volumes do not read back" in message
    assert f"snapshot #{first.pk}, whose chunks it shares, marked as failing verification" in message
    assert "start it to go on working" in message and "restic rebuild-index" in message and "\n" not in message
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED and pod.last_error == message
    assert len(pod_volumes(docker_client, pod_id)) == len(VOLUME_MOUNTS) and container_exists(docker_client, pod_id)
    assert Snapshot.objects.get(pk=first.pk).verify_error
    assert any(pod_id in body["title"] and "do not read back" in body["message"] for body in receiver.bodies)
    assert helpers_left(docker_client, pod_id) == []
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

    # What the sentence says to do works: the pack removed, the index rebuilt, the next stop
    # (no parent now) writes the lost chunks again, reads everything back and completes.
    (dedup_file / "data" / pack[:2] / pack).unlink()
    store.run("rebuild-index", doing="test")
    run_now(Kind.POD_STOP, pod_id, actor="test")
    third = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert third.status == Snapshot.Status.COMPLETE and "(parent" not in log_of(third)
    assert pod_volumes(docker_client, pod_id) == []
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_a_start_beside_the_volumes_shows_its_progress_while_restic_restores(
    docker_client, new_pod_id, dedup_file, beside, monkeypatch
):
    big = WRITE_SCRIPT + "dd if=/dev/urandom of=/workspace/big.bin bs=1M count=160 2>/dev/null\n"
    pod_id, before = pod_with_files(docker_client, new_pod_id, big)
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    seen = []
    advance = Progress.advance

    def watched(self, amount):
        advance(self, amount)
        seen.append((self.done, self.total))

    monkeypatch.setattr(Progress, "advance", watched)
    services.pod_start(pod_id=pod_id, actor="test")

    # restic 0.14 prints nothing while it restores: the bar follows the volumes filling up,
    # so it moves before the end, never back, and ends at the snapshot's bytes.
    assert seen and seen[-1] == (snapshot.total_bytes, snapshot.total_bytes)
    assert any(0 < done < total for done, total in seen[:-1]), seen
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert listing(docker_client, pod_id) == before


def test_a_helper_whose_followed_output_ended_early_still_gives_restics_summary(
    docker_client, new_pod_id, dedup_file, beside, monkeypatch
):
    # Under a full run's load a followed log stream once ended before restic's last line: the
    # backup's summary was lost and the stop failed. What the follower missed is read whole.
    from apps.pods import restic_helper

    monkeypatch.setattr(restic_helper, "_follow", lambda engine, helper, run, on_line: None)
    pod_id, before = pod_with_files(docker_client, new_pod_id, SCRIPT)
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    assert snapshot.status == Snapshot.Status.COMPLETE
    assert re.search(r"restic snapshot [0-9a-f]{8}: \d+ new", log_of(snapshot))
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

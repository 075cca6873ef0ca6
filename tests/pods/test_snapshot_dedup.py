"""Deduplicated snapshots (`dedup+file://`, `dedup+s3://`) on the real dockerd and Debian's
real restic: what changed is what a stop costs, pods from one image share their base, every
promise of the tar stores holds (verified before removal, restore checked, purge reclaims)."""

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import VOLUME_MOUNTS, Pod, Snapshot
from apps.pods.selectors import pod_as_dict, unreferenced_leaks
from apps.pods.snapshots import DedupStore, StoreError, store_from_url
from apps.pods.stores import restic_writer
from controlpanel.errors import PanelError
from tests.parts import require_part
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, pod_with_files, run_in
from tests.restic_keys import restic_key_make_fast

pytestmark = [pytest.mark.django_db, pytest.mark.docker, pytest.mark.usefixtures("stream_engine")]

MIB = 1024 * 1024
DATA_SCRIPT = WRITE_SCRIPT + (
    "dd if=/dev/urandom of=/workspace/data.bin bs=1M count=12 2>/dev/null\n"
    "dd if=/dev/urandom of=/home/dev/more.bin bs=1M count=3 2>/dev/null\n"
)


@pytest.fixture(scope="session")
def restic_template(tmp_path_factory) -> tuple[Path, str]:
    """An empty repository made once (`restic init` calibrates its key derivation, a second
    or so) and its key, copied for each test; its key opens fast (`tests.restic_keys`)."""
    if shutil.which("restic") is None:
        require_part("restic", "no restic binary", "Install Debian's restic: apt-get install restic")
    folder, secret = tmp_path_factory.mktemp("restic-template"), uuid.uuid4().hex
    (folder / "key").write_text(secret)
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": str(folder / "repo"),
        "RESTIC_PASSWORD_FILE": str(folder / "key"),
        "RESTIC_CACHE_DIR": str(folder / "cache"),
    }
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True, timeout=120)
    restic_key_make_fast(folder / "repo", secret)
    return folder / "repo", secret


@pytest.fixture
def restic(settings, tmp_path, restic_template):
    key = tmp_path / "snapshot.key"
    key.write_text(restic_template[1])
    settings.SNAPSHOT_KEY_FILE = str(key)
    return key


@pytest.fixture
def dedup_file(restic, settings, tmp_path, restic_template) -> Path:
    repository = tmp_path / "dedup-repo"
    shutil.copytree(restic_template[0], repository)
    settings.SNAPSHOT_STORE_URL = f"dedup+file://{repository}"
    return repository


def repository_bytes(repository: Path) -> int:
    return sum(path.stat().st_size for path in repository.rglob("*") if path.is_file())


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The volumes (`home`, `manifest`, …) read back from a dedup store, in order."""
    read, names = DedupStore.read, []

    def counted(self, key):
        names.append(key.rsplit("/", 1)[-1].removesuffix(".tar").removesuffix(".json"))
        yield from read(self, key)

    monkeypatch.setattr(DedupStore, "read", counted)
    return names


def test_second_stop_of_an_unchanged_pod_adds_almost_nothing_and_restores_byte_identical(
    docker_client, new_pod_id, dedup_file, reads
):
    pod_id, before = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)

    services.pod_stop(pod_id=pod_id, actor="test")
    # The first stop reads every volume back, and the manifest.
    assert sorted(reads) == sorted([*VOLUME_MOUNTS, "manifest"])

    first = Snapshot.objects.get(pod__pod_id=pod_id)
    assert first.status == Snapshot.Status.COMPLETE
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    assert first.total_bytes > 15 * MIB
    # Random data does not compress: the first stop stores about what it read.
    assert first.stored_bytes > 0.9 * first.total_bytes
    assert all(len(entry["store_id"]) == 8 for entry in first.manifest.values())
    grown = repository_bytes(dedup_file)

    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before
    reads.clear()
    services.pod_stop(pod_id=pod_id, actor="test")

    second = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("-pk").first()
    assert second.pk != first.pk and second.status == Snapshot.Status.COMPLETE
    # Every volume but /etc is the same bytes as the first snapshot's: the new manifest points
    # at those objects, nothing else is written; every one is read back all the same, since
    # what was read then proves nothing about the store now.
    # (/etc holds the hostname and hosts files Docker writes anew for each container.)
    assert sorted(reads) == sorted([*VOLUME_MOUNTS, "manifest"])
    unchanged = {name: entry for name, entry in second.manifest.items() if name != "etc"}
    assert {entry["same_as"] for entry in unchanged.values()} == {first.pk}
    assert {name: entry["key"] for name, entry in unchanged.items()} == {
        name: first.manifest[name]["key"] for name in unchanged
    }
    assert all(entry["reused"] and entry["stored_bytes"] == 0 for entry in unchanged.values())
    assert second.total_bytes == pytest.approx(first.total_bytes, rel=0.01)
    assert second.stored_bytes <= 0.02 * second.total_bytes
    assert repository_bytes(dedup_file) - grown <= 0.02 * second.total_bytes
    shown = pod_as_dict(Pod.objects.get(pod_id=pod_id))["last_snapshot"]
    assert shown["stored_bytes"] == second.stored_bytes and shown["total_bytes"] == second.total_bytes

    # Retention purges the first snapshot: the objects the second points at stay, and it
    # restores; deleting the pod then leaves no object behind.
    store = store_from_url()
    services.snapshots_apply_retention(actor="test", keep=1)
    assert Snapshot.objects.get(pk=first.pk).status == Snapshot.Status.DELETED
    assert store.keys_present() == {e["key"] for e in second.manifest.values()} | {f"{second.prefix}/manifest.json"}

    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

    services.pod_delete(pod_id=pod_id, actor="test")
    assert store.keys_present() == set()


def test_a_changed_volume_or_a_failed_re_read_is_read_back_again(docker_client, new_pod_id, dedup_file, reads):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "printf 'changed\\n' > /workspace/proj/src/a.txt")
    # A reference from before block digests were kept: /home is written again, no new chunk.
    manifest = first.manifest
    del manifest["home"]["blocks"]
    Snapshot.objects.filter(pk=first.pk).update(manifest=manifest)
    reads.clear()

    stop = run_now(Kind.POD_STOP, pod_id, actor="test")

    second = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert "/workspace changed since the last snapshot: streaming it again, to the store" in stop.log
    # The changed volume is written (and /etc, which Docker rewrites); every volume is read back...
    assert sorted(reads) == sorted([*VOLUME_MOUNTS, "manifest"])
    assert "same_as" not in second.manifest["workspace"]
    assert second.manifest["workspace"]["key"].startswith(f"{second.prefix}/")
    # ... /home, written, equal bytes and no new chunk, is read back too ...
    home = second.manifest["home"]
    assert home["key"].startswith(f"{second.prefix}/") and home["new_chunks"] == 0
    assert home["same_as"] == first.pk and "reused" not in home
    assert f"verified home: the same bytes as snapshot #{first.pk}" in stop.log
    # ... and the small unchanged ones are not even written.
    assert second.manifest["var"]["reused"] and second.manifest["var"]["key"] == first.manifest["var"]["key"]

    # A snapshot of this store failed its last re-read: its chunks may be shared, so the next
    # stop writes every volume again.
    Snapshot.objects.filter(pk=first.pk).update(verify_error="home.tar: ciphertext verification failed")
    services.pod_start(pod_id=pod_id, actor="test")
    reads.clear()
    services.pod_stop(pod_id=pod_id, actor="test")
    assert sorted(reads) == sorted([*VOLUME_MOUNTS, "manifest"])
    third = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert third.status == Snapshot.Status.COMPLETE
    assert not any("same_as" in entry or entry.get("reused") for entry in third.manifest.values())


def _image_with_base(docker_client, pod_image: str, payload: bytes) -> str:
    """An image whose /opt holds `payload`: pods made from it get it copied into their volume."""
    tag = f"pinacle-dedup-base:{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.create(pod_image, command=["/bin/sh"])
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("opt/base.bin")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
        container.put_archive("/", buffer.getvalue())
        container.commit(repository=tag.split(":")[0], tag=tag.split(":")[1])
    finally:
        container.remove(force=True)
    return tag


def test_two_pods_from_the_same_image_share_their_base(docker_client, new_pod_id, pod_image, dedup_file):
    image = _image_with_base(docker_client, pod_image, os.urandom(16 * MIB))
    try:
        first, second = new_pod_id(), new_pod_id()
        for pod_id in (first, second):
            services.pod_provision(pod_id=pod_id, actor="test", image=image)
            run_in(docker_client, pod_id, "dd if=/dev/urandom of=/workspace/own.bin bs=1M count=1 2>/dev/null")
            services.pod_stop(pod_id=pod_id, actor="test")

        one = Snapshot.objects.get(pod__pod_id=first)
        two = Snapshot.objects.get(pod__pod_id=second)
        assert one.manifest["opt"]["bytes"] > 16 * MIB
        assert one.stored_bytes > 16 * MIB
        # The second pod adds its own MiB and the few content-defined chunks its tar headers and
        # small files change (restic's chunks average 1 MiB, up to 8 MiB), not the 16 MiB base.
        assert two.stored_bytes < 8 * MIB < two.total_bytes / 2
        # The bound: the store holds at most 1.5× the distinct data (16 + 2 × 1 MiB).
        assert repository_bytes(dedup_file) < 1.5 * 18 * MIB
    finally:
        docker_client.images.remove(image, force=True)


def test_a_wrong_or_missing_key_is_refused_in_one_line_and_nothing_changes(
    docker_client, new_pod_id, dedup_file, restic, settings
):
    stopped = new_pod_id()
    services.pod_provision(pod_id=stopped, actor="test")
    services.pod_stop(pod_id=stopped, actor="test")
    restic.write_text("not the key")

    with pytest.raises(StoreError, match="refused the key in SNAPSHOT_KEY_FILE") as refused:
        services.pod_start(pod_id=stopped, actor="test")
    assert "\n" not in str(refused.value)
    assert Pod.objects.get(pod_id=stopped).status == Pod.Status.STOPPED
    assert pod_volumes(docker_client, stopped) == []

    running = new_pod_id()
    services.pod_provision(pod_id=running, actor="test")
    with pytest.raises(StoreError, match="refused the key"):
        services.pod_stop(pod_id=running, actor="test")
    # Refused before the container was stopped: the pod runs on, untouched.
    assert Pod.objects.get(pod_id=running).status == Pod.Status.RUNNING
    assert docker_client.containers.get(f"pinacle-pod-{running}").status == "running"

    settings.SNAPSHOT_KEY_FILE = str(restic.with_name("missing.key"))
    with pytest.raises(StoreError, match="SNAPSHOT_KEY_FILE .*missing.key cannot be read"):
        services.pod_stop(pod_id=running, actor="test")
    settings.SNAPSHOT_KEY_FILE = ""
    with pytest.raises(StoreError, match="set SNAPSHOT_KEY_FILE"):
        services.pod_stop(pod_id=running, actor="test")
    assert Pod.objects.get(pod_id=running).status == Pod.Status.RUNNING
    assert len(pod_volumes(docker_client, running)) == 8


def test_a_corrupted_pack_fails_verification_and_nothing_is_removed(docker_client, new_pod_id, dedup_file, monkeypatch):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, DATA_SCRIPT)
    original_close = restic_writer.ResticWriter.close

    def packs() -> set[Path]:
        return {path for path in (dedup_file / "data").rglob("*") if path.is_file()}

    def close_then_corrupt(self):
        earlier = packs()
        original_close(self)
        if self.key.endswith("/home.tar"):
            # The pack home's backup wrote, same length, other bytes: only restic's MACs tell.
            pack = max(packs() - earlier, key=lambda p: p.stat().st_size)
            data = bytearray(pack.read_bytes())
            for at in range(100, len(data) - 1000, 4096):
                data[at] ^= 0xFF
            pack.write_bytes(bytes(data))

    monkeypatch.setattr(restic_writer.ResticWriter, "close", close_then_corrupt)
    with pytest.raises(StoreError, match="home.tar"):
        services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED
    assert "home.tar" in pod.last_error
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert container_exists(docker_client, pod_id)
    assert Snapshot.objects.get(pod=pod).status == Snapshot.Status.FAILED


def _restic_backups_running(tag_prefix: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"backup" in words and any(w.startswith(tag_prefix.encode()) for w in words):
            found.append(b" ".join(words).decode(errors="replace"))
    return found


def test_a_stop_failing_mid_stream_leaves_no_backup_of_the_volume_prepared_after_it(
    docker_client, new_pod_id, dedup_file, monkeypatch
):
    """Each volume's restic backup starts while the volume before it streams; when a volume
    fails, the backup made early for the next one is interrupted: no snapshot of it exists and
    no restic process is left waiting."""
    from apps.pods.docker_engine import DockerEngine

    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, DATA_SCRIPT)
    original = DockerEngine.archive_read

    def archive_read(self, *, container, path):
        if path == "/etc":
            raise StoreError("the engine failed reading /etc (planted)")
        return original(self, container=container, path=path)

    monkeypatch.setattr(DockerEngine, "archive_read", archive_read)
    with pytest.raises(StoreError, match="planted"):
        services.pod_stop(pod_id=pod_id, actor="test")

    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    assert snapshot.status == Snapshot.Status.FAILED
    store = store_from_url()
    tags = {tag for found in store._snapshots() for tag in found.get("tags") or []}
    # Before /etc: backed up, unreferenced now (the leak report counts them); from /etc on: nothing.
    assert tags == {f"{snapshot.prefix}/{name}.tar" for name in ["workspace", "home", "root"]}
    assert _restic_backups_running(snapshot.prefix) == []
    assert list((dedup_file / "locks").iterdir()) == []  # nothing interrupted left its lock
    assert len(pod_volumes(docker_client, pod_id)) == 8


def test_only_the_lock_of_our_own_exited_restic_is_removed(dedup_file):
    """The lock an interrupted backup of ours left behind goes; a live restic's lock stays
    (`restic unlock` would judge by host name and PID alone)."""
    import json
    import time

    store = store_from_url()
    store.repository_ensure()

    def backup() -> subprocess.Popen:
        return subprocess.Popen(
            store.command("backup", "--stdin", "--stdin-filename", "x.tar"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=store.env(),
        )

    def locks() -> dict[int, str]:
        found = {}
        for path in (dedup_file / "locks").iterdir():
            try:
                found[json.loads(store.run("cat", "lock", path.name, "--no-lock", doing="test"))["pid"]] = path.name
            except (StoreError, ValueError):
                continue
        return found

    live, killed = backup(), backup()
    try:
        deadline = time.monotonic() + 60
        while {live.pid, killed.pid} - set(locks()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {live.pid, killed.pid} <= set(locks())
        killed.kill()  # dies holding its lock, like one interrupted while writing it
        killed.wait()

        store.own_lock_remove(killed.pid)

        assert set(locks()) == {live.pid}
    finally:
        live.kill()
        live.wait()
        killed.kill()


def test_purge_forgets_and_prunes_and_a_prune_deferred_under_a_stop_is_reported_as_a_leak(
    docker_client, new_pod_id, dedup_file
):
    keep, drop = new_pod_id(), new_pod_id()
    for pod_id in (keep, drop):
        services.pod_provision(pod_id=pod_id, actor="test")
        run_in(docker_client, pod_id, f"dd if=/dev/urandom of=/workspace/{pod_id}.bin bs=1M count=6 2>/dev/null")
        services.pod_stop(pod_id=pod_id, actor="test")
    full = repository_bytes(dedup_file)
    # A stop is writing to the store: the purge forgets, but leaves the prune for later.
    writing = Snapshot.objects.create(
        pod=Pod.objects.get(pod_id=keep),
        store_url=store_from_url().url,
        status=Snapshot.Status.UPLOADING,
        operation=Operation.objects.create(kind="pod.stop", target_type="pod", target_id=keep, status="running"),
    )

    services.pod_delete(pod_id=drop, actor="test")

    assert repository_bytes(dedup_file) > full - MIB
    [leak] = unreferenced_leaks()
    assert leak.bytes > 5 * MIB and "unreferenced" in leak.label

    Snapshot.objects.filter(pk=writing.pk).update(status=Snapshot.Status.FAILED)
    Operation.objects.filter(pk=writing.operation_id).update(status=Operation.Status.FAILED)
    kept = Snapshot.objects.get(pod__pod_id=keep, status=Snapshot.Status.COMPLETE)
    # The stop is over (its attempt failed): the next purge, here retention's, prunes.
    services.snapshots_apply_retention(actor="test")
    assert Snapshot.objects.get(pk=writing.pk).status == Snapshot.Status.DELETED
    assert repository_bytes(dedup_file) < full - 5 * MIB
    assert unreferenced_leaks() == []
    # What another pod needs is still whole.
    store = store_from_url()
    assert isinstance(store, DedupStore)
    store.remember(kept.manifest)
    for entry in kept.manifest.values():
        store.verify(entry["key"], expected_bytes=entry["bytes"], expected_sha256=entry["sha256"])


@pytest.mark.s3
def test_dedup_on_s3_stops_and_restores_byte_identical(
    docker_client, new_pod_id, restic, s3_server, s3_bucket, settings, tmp_path
):
    settings.SNAPSHOT_STORE_URL = f"dedup+s3://{s3_bucket}/repo"
    client = s3_server.client()
    # The panel creates the repository on the empty bucket (restic init, its key calibrated to
    # half a second of CPU) and its working key, which the ~30 restic processes below open fast.
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket, Prefix="repo/")
    assert store_from_url().repository_ensure() == []
    assert len(client.list_objects_v2(Bucket=s3_bucket, Prefix="repo/keys/")["Contents"]) == 2
    pod_id, before = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)

    services.pod_stop(pod_id=pod_id, actor="test")

    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="repo/")["Contents"]]
    assert "repo/config" in keys and any(k.startswith("repo/data/") for k in keys)
    assert snapshot.stored_bytes > 10 * MIB
    assert pod_volumes(docker_client, pod_id) == []
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_a_volume_cut_short_while_compared_fails_the_stop_and_keeps_every_volume(
    docker_client, new_pod_id, dedup_file, monkeypatch
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    original, cut = DockerEngine.archive_read, []

    def archive_read(self, *, container, path):
        stream = original(self, container=container, path=path)
        if path != "/home" or cut:
            return stream
        cut.append(path)

        def first_piece():  # the daemon goes away after a piece of the first chunk
            yield next(iter(stream))[:1000]

        return first_piece()

    monkeypatch.setattr(DockerEngine, "archive_read", archive_read)
    with pytest.raises(PanelError, match="archive of /home ended early"):
        services.pod_stop(pod_id=pod_id, actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED and len(pod_volumes(docker_client, pod_id)) == 8
    failed = Snapshot.objects.filter(pod=pod).latest("pk")
    assert failed.status == Snapshot.Status.FAILED
    assert Snapshot.objects.get(pk=first.pk).status == Snapshot.Status.COMPLETE

    # The daemon is back: the stop is tried again and completes, comparing /home whole.
    services.pod_stop(pod_id=pod_id, actor="test")
    again = Snapshot.objects.filter(pod=pod).latest("pk")
    assert again.status == Snapshot.Status.COMPLETE
    assert again.manifest["home"]["reused"] and again.manifest["home"]["sha256"] == first.manifest["home"]["sha256"]

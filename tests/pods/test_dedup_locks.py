"""Restic's repository locks on a real repository (Debian's restic 0.14): a reader the panel
lets go of removes its own lock, a lock whose restic is gone (killed, or a zombie) is removed
before any wait, a live restic's lock is waited for and named, never removed; short reads take
no lock, and one a prune raced is read again under the lock once the prune has ended."""

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot
from apps.pods.services.beside import helper_restic
from apps.pods.services.hosts import engine_for, host_default
from apps.pods.snapshots import StoreError, store_from_url
from apps.pods.stores.dedup import DedupStore
from tests.faults import panel_files_changed, panel_files_snapshot
from tests.pods.conftest import pod_volumes, pod_with_files
from tests.pods.test_snapshot_dedup import DATA_SCRIPT, dedup_file, restic, restic_template  # noqa: F401
from tests.restic_keys import prune_at_work, restic_lock_write

pytestmark = [pytest.mark.django_db]

MIB = 1024 * 1024
# A purge that meets only locks of gone restics finishes in seconds; one that waits for them
# waits the whole SNAPSHOT_LOCK_WAIT_SECONDS and fails.
PROMPT_SECONDS = 30


def lock_files(repository: Path) -> list[str]:
    return sorted(path.name for path in (repository / "locks").iterdir())


def restic_processes(word: str) -> list[int]:
    """PIDs of restic processes with `word` among their arguments."""
    found = []
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            words = (folder / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(words[0].decode(errors="replace")).name == "restic" and word.encode() in words:
            found.append(int(folder.name))
    return found


def stored(store, key: str, size: int) -> str:
    writer = store.writer(key)
    for _ in range(size // MIB):
        writer.write(os.urandom(MIB))
    writer.close()
    return writer.store_id


def test_a_read_stream_let_go_midway_leaves_no_lock_and_the_purge_runs_at_once(dedup_file, settings):  # noqa: F811
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = PROMPT_SECONDS
    store = store_from_url()
    store.repository_ensure()
    snapshot_id = stored(store, "p1/workspace.tar", 24 * MIB)

    chunks = store.read("p1/workspace.tar")
    next(chunks)
    time.sleep(0.5)  # restic fills the pipe and waits on it
    assert lock_files(dedup_file) != []
    chunks.close()  # what a restore does with the read-ahead of a volume it no longer needs

    assert lock_files(dedup_file) == []
    assert restic_processes(snapshot_id) == []
    started = time.monotonic()
    store.delete_prefix("p1")
    assert time.monotonic() - started < PROMPT_SECONDS
    assert store.keys_present() == set()


def test_a_killed_dumps_lock_is_removed_before_waiting_and_a_live_restics_is_named_and_kept(
    dedup_file,  # noqa: F811
    settings,
    harm,
):
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = 3
    store = store_from_url()
    store.repository_ensure()
    snapshot_id = stored(store, "p1/workspace.tar", 16 * MIB)
    dump = subprocess.Popen(
        store.command("dump", snapshot_id, "/workspace.tar"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=store.env(),
    )
    try:
        dump.stdout.read(MIB)
        dump.send_signal(signal.SIGKILL)
        time.sleep(0.2)
        # Not waited for yet: a zombie, whose lock restic's own `unlock` would take for live.
        assert Path(f"/proc/{dump.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        assert len(lock_files(dedup_file)) == 1

        started = time.monotonic()
        store.delete_prefix("p1")
        assert time.monotonic() - started < PROMPT_SECONDS
    finally:
        dump.wait()
        dump.stdout.close()
    assert lock_files(dedup_file) == [] and store.keys_present() == set()

    # A live restic (a backup reading its stdin) holds its shared lock: a forget waits for it,
    # then fails naming it, and the lock stays.
    snapshot_id = stored(store, "p2/home.tar", MIB)
    live = subprocess.Popen(
        store.command("backup", "--stdin", "--stdin-filename", "x.tar"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=store.env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not lock_files(dedup_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        held = lock_files(dedup_file)
        # A live restic's lock removed, or the forget run past it, changes the repository's files.
        panel = panel_files_snapshot()
        with pytest.raises(StoreError) as refused:
            store.run("forget", snapshot_id, doing="forgetting p2")
        touched = panel_files_changed(panel)
        harm("restic locks", "a forget while a live restic holds its lock", panel_touched=touched)
        message = str(refused.value)
        assert f"restic PID {live.pid} on {socket.gethostname()} (`restic backup --stdin" in message
        assert "while forgetting p2" in message and "\n" not in message
        assert lock_files(dedup_file) == held
    finally:
        live.send_signal(signal.SIGINT)
        live.wait()


@pytest.mark.usefixtures("stream_engine")
def test_a_restore_failing_on_its_first_volume_lets_the_next_read_go_and_the_pod_deletes_at_once(
    docker_client,
    new_pod_id,
    dedup_file,  # noqa: F811
    settings,
):
    """The issue's case: the first volume read back is not what the manifest says, the restore
    stops while the next volume's `restic dump` is already reading ahead; the pod's delete then
    purges its snapshot without waiting."""
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = PROMPT_SECONDS
    pod_id, _ = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    manifest = snapshot.manifest
    manifest["workspace"]["sha256"] = "0" * 64  # what a decayed first volume reads as
    Snapshot.objects.filter(pk=snapshot.pk).update(manifest=manifest)

    with pytest.raises(StoreError, match="workspace"):
        services.pod_start(pod_id=pod_id, actor="test")

    assert lock_files(dedup_file) == []
    assert [pid for entry in manifest.values() for pid in restic_processes(entry["store_id"])] == []
    started = time.monotonic()
    services.pod_delete(pod_id=pod_id, actor="test")
    assert time.monotonic() - started < PROMPT_SECONDS
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.DELETED
    assert store_from_url().keys_present() == set() and pod_volumes(docker_client, pod_id) == []


def test_listings_and_manifests_are_read_while_a_prune_holds_the_repository(
    dedup_file,  # noqa: F811
    restic_template,  # noqa: F811
    settings,
):
    """Short reads take no lock: a prune at work does not hold them up (restic 0.14 also stalls
    45-55 s when a lock it listed is gone before it reads it, restic/restic#4520)."""
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = PROMPT_SECONDS
    store = store_from_url()
    store.put_small("p1/1/manifest.json", b'{"volumes": {}}')
    with prune_at_work(store, dedup_file, restic_template[1]):
        started = time.monotonic()
        fresh = store_from_url()  # knows no restic id: the manifest is looked for by its tag
        assert fresh.get_small("p1/1/manifest.json") == b'{"volumes": {}}'
        assert fresh.keys_present() == {"p1/1/manifest.json"}
        assert time.monotonic() - started < 10  # under the lock: PROMPT_SECONDS, then refused
        settings.SNAPSHOT_LOCK_WAIT_SECONDS = 3
        # (restic names whichever lock it read first: the prune's, or its restic's own)
        with pytest.raises(StoreError, match="is locked by restic PID"):
            fresh.run("forget", "--keep-last", "1", doing="forgetting")  # a writer still waits


def test_a_read_a_prune_raced_is_read_again_under_the_lock_once_the_prune_ends(
    dedup_file,  # noqa: F811
    restic_template,  # noqa: F811
    settings,
):
    """A manifest read without the lock that finds its snapshot unreadable (a prune rewrote what
    it listed) waits for the prune's lock to go, then reads under the lock: the right bytes."""
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = PROMPT_SECONDS
    store = store_from_url()
    store.put_small("p1/1/manifest.json", b'{"volumes": {"home": 1}}')
    [snapshot_file] = (dedup_file / "snapshots").iterdir()
    whole = snapshot_file.read_bytes()
    shutil.rmtree(store.env()["RESTIC_CACHE_DIR"], ignore_errors=True)  # restic reads the repository
    commands = []
    real_popen = subprocess.Popen

    def popen(command, **kwargs):
        commands.append(command[1:])
        return real_popen(command, **kwargs)

    with prune_at_work(store, dedup_file, restic_template[1]) as prune_end:
        snapshot_file.write_bytes(b"rewritten by a prune")

        def prune_ends() -> None:
            time.sleep(2)
            snapshot_file.write_bytes(whole)
            prune_end()

        ending = threading.Thread(target=prune_ends)
        ending.start()
        started = time.monotonic()
        try:
            with mock.patch("apps.pods.stores.dedup.subprocess.Popen", popen):
                assert store_from_url().get_small("p1/1/manifest.json") == b'{"volumes": {"home": 1}}'
        finally:
            ending.join()
        waited = time.monotonic() - started
    assert 2 <= waited < PROMPT_SECONDS
    dumps = [command for command in commands if command[0] == "dump"]
    assert [("--no-lock" in command) for command in dumps] == [True, False]


def going_lock(repository: Path) -> Path:
    """What restic meets when a lock goes between its listing and its read (its restic ended):
    a lock it lists and then cannot read. A folder named like a lock, until the test removes it."""
    going = repository / "locks" / ("f" * 64)
    going.mkdir()
    return going


def gone_at_restart(monkeypatch, going: Path) -> list[tuple[int, str | None]]:
    """(PID, host name given) of each restic the panel stopped to start again; the lock is gone
    by then (the next restic lists it no more), as a lock that went is."""
    started_again, real = [], DedupStore.own_lock_remove

    def gone_by_then(self, pid, **where):
        assert isinstance(pid, int) and pid > 1  # the restic that stalled, whose lock goes
        started_again.append((pid, where.get("hostname")))
        shutil.rmtree(going, ignore_errors=True)
        return real(self, pid, **where)

    monkeypatch.setattr(DedupStore, "own_lock_remove", gone_by_then)
    return started_again


def test_a_read_that_meets_a_lock_going_starts_again_at_once(dedup_file, settings, monkeypatch):  # noqa: F811
    """restic 0.14 retries reading a lock that went for 45-55 s (restic/restic#4520): the panel
    stops that restic as soon as it says so, and reads again."""
    store = store_from_url()
    store.repository_ensure()
    stored(store, "p1/workspace.tar", 2 * MIB)
    going = going_lock(dedup_file)
    started_again = gone_at_restart(monkeypatch, going)
    started = time.monotonic()
    assert len(b"".join(store_from_url().read("p1/workspace.tar"))) == 2 * MIB
    assert time.monotonic() - started < 15  # restic alone: 45-55 s
    assert len(started_again) == 1 and not going.exists() and lock_files(dedup_file) == []


def test_the_panels_look_at_the_locks_skips_one_going_at_once(dedup_file, settings):  # noqa: F811
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = PROMPT_SECONDS
    store = store_from_url()
    store.repository_ensure()
    going = going_lock(dedup_file)
    started = time.monotonic()
    assert store.locks() == [] and store.locks_clear() == []
    store.preflight(needed_bytes=None, what="stopping pod p1")
    assert time.monotonic() - started < 15  # restic alone: 45-55 s for each look
    assert going.exists()  # not a lock the panel read: never removed by it


def test_a_forget_that_meets_a_lock_going_starts_again_at_once(dedup_file, monkeypatch):  # noqa: F811
    """The same for a command that takes the lock (a forget, a prune): stopped before it took
    it, so nothing was changed, and run again."""
    store = store_from_url()
    store.repository_ensure()
    snapshot_id = stored(store, "p1/workspace.tar", MIB)
    going = going_lock(dedup_file)
    started_again = gone_at_restart(monkeypatch, going)
    started = time.monotonic()
    store.run("forget", snapshot_id, doing="forgetting p1")
    assert time.monotonic() - started < 15  # restic alone: 45-55 s
    assert len(started_again) == 1 and store.keys_present() == set() and lock_files(dedup_file) == []


def test_a_writer_that_meets_a_lock_going_starts_again_and_loses_no_byte(dedup_file, monkeypatch):  # noqa: F811
    """`restic backup --stdin` reads its input only once it holds its lock: what was written
    into the stalled restic's pipe is given again to the one started after it, whole, for an
    object that fits in the pipe (a manifest) and for one that fills it (a volume's tar)."""
    store = store_from_url()
    store.repository_ensure()
    going = going_lock(dedup_file)
    started_again = gone_at_restart(monkeypatch, going)
    small, large = os.urandom(5000), os.urandom(3 * MIB)
    for key, body, restarts in [("p1/manifest.json", small, 1), ("p1/workspace.tar", large, 2)]:
        going.mkdir(exist_ok=True)
        started = time.monotonic()
        writer = store.writer(key)
        for at in range(0, len(body), 256 * 1024):
            writer.write(body[at : at + 256 * 1024])
        writer.close()
        assert time.monotonic() - started < 15  # restic alone: 45-55 s
        assert len(started_again) == restarts and not going.exists()
        assert b"".join(store_from_url().read(key)) == body
    assert lock_files(dedup_file) == []


def test_only_the_lock_of_the_restic_named_by_pid_and_host_is_removed(dedup_file, restic_template):  # noqa: F811
    """A helper's restic runs on its Docker host: its lock is known by that host's name and the
    PID there. The same PID on another host (this machine's own restic) keeps its lock."""
    store = store_from_url()
    store.repository_ensure()
    password = restic_template[1]
    here = restic_lock_write(dedup_file, password, pid=4242, hostname=socket.gethostname())
    there = restic_lock_write(dedup_file, password, pid=4242, hostname="docker-host-2", exclusive=False)
    store.own_lock_remove(4242, hostname="docker-host-2")
    assert lock_files(dedup_file) == [here]
    store.own_lock_remove(4243)
    assert lock_files(dedup_file) == [here]
    store.own_lock_remove(4242)
    assert lock_files(dedup_file) == [] and there != here


class _Stalling:
    """A stand-in for `restic backup --stdin`, recording what it is given: one that stalls says
    it retries a lock that went, takes `room` bytes (what its pipe holds) and then nothing until
    the panel stops it; one that does not takes everything and ends well."""

    made: list = []

    def __init__(self, room: int | None, stdout):
        self.pid, self.returncode, self.stdout_file = 4000 + len(_Stalling.made), None, stdout
        self.stopped, self.taken, self.room = threading.Event(), bytearray(), room
        said = (
            b"Load(<lock/ab12cd34ef>, 0, 0) returned error, retrying after 552ms: gone\n" if room is not None else b""
        )
        self.stderr, self.stdin = io.BytesIO(said), self
        _Stalling.made.append(self)

    def fileno(self):
        raise OSError("not a pipe")

    def write(self, chunk):
        if self.room is not None and len(self.taken) + len(chunk) > self.room:
            # Its pipe is full: nothing more until the panel stops it, or it waited the lock out.
            if self.stopped.wait(1):
                raise BrokenPipeError("restic ended")
            self.room = None
        self.taken += chunk

    def flush(self):
        pass

    def close(self):
        pass

    def send_signal(self, _signal):
        self.returncode = 130
        self.stopped.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.room is not None and self.stopped.wait(1):
            return self.returncode
        self.stdout_file.write(b'{"message_type":"summary","snapshot_id":"' + b"f" * 64 + b'","data_added":1}\n')
        self.returncode = 0
        return 0


def written_through_stand_ins(monkeypatch, *, rooms: list[int | None]):
    """A writer given A, B and C (10 bytes each) and closed, its restics the stand-ins made with
    `rooms` in turn (`_Stalling.made`); the panel's other restics (its look at the locks) real."""
    store = store_from_url()
    store.repository_ensure()
    _Stalling.made, left, real = [], iter(rooms), subprocess.Popen

    def popen(command, **given):
        if "--stdin" not in command:
            return real(command, **given)
        return _Stalling(next(left), given["stdout"])

    monkeypatch.setattr(subprocess, "Popen", popen)
    writer = store.writer("p1/manifest.json")
    for chunk in (b"A" * 10, b"B" * 10, b"C" * 10):
        writer.write(chunk)
    writer.close()
    return writer


def test_a_writer_whose_next_restic_stalls_while_it_is_given_the_bytes_gives_them_once_in_order(
    dedup_file,  # noqa: F811
    monkeypatch,
):
    """Two restics in a row stall on their lock, the second while it is being given what the
    first took: the third gets every byte once, in order (not the replay and the chunk again)."""
    writer = written_through_stand_ins(monkeypatch, rooms=[15, 5, None])
    first, second, third = _Stalling.made
    assert bytes(first.taken) == b"A" * 10 and bytes(second.taken) == b""
    assert bytes(third.taken) == b"A" * 10 + b"B" * 10 + b"C" * 10
    assert writer.restarts == 2 and writer.store_id == "f" * 64


def test_a_writer_leaves_its_last_restic_to_wait_a_lock_out_as_restic_alone_would(
    dedup_file,  # noqa: F811
    monkeypatch,
):
    """Once the restarts are spent, the next restic is not stopped when it says it retries: it
    waits the lock out (45-55 s with restic 0.14) and takes everything, as restic alone would."""
    monkeypatch.setattr("apps.pods.stores.restic_writer.STALL_RESTARTS", 1)
    writer = written_through_stand_ins(monkeypatch, rooms=[15, 5])
    first, last = _Stalling.made
    assert first.stopped.is_set() and not last.stopped.is_set()
    assert bytes(last.taken) == b"A" * 10 + b"B" * 10 + b"C" * 10 and writer.restarts == 1


@pytest.mark.docker
def test_a_helpers_lock_is_left_to_age_when_its_docker_host_does_not_say_its_name(
    dedup_file,  # noqa: F811
    monkeypatch,
):
    """A stalled helper's lock is known by its PID and its host's name: a host that does not
    say its name gets no lock removed (the same PID here could be a live restic's)."""
    store = store_from_url()
    store.repository_ensure()
    going = going_lock(dedup_file)
    removed = gone_at_restart(monkeypatch, going)

    def nameless(self):
        shutil.rmtree(going, ignore_errors=True)  # the lock is gone by the restart, as one going is
        return

    monkeypatch.setattr(DockerEngine, "host_hostname", nameless)
    began = time.monotonic()
    result = helper_restic(
        store,
        engine_for(host_default()),
        owner="nameless",
        operation=None,
        command=["snapshots"],
        volumes={},
        doing="a test",
    )
    assert result.exit_code == 0 and time.monotonic() - began < 15
    assert removed == [] and not going.exists()

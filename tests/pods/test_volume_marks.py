"""A copy of a pod whose files did not change since its last folder snapshot, told from this
machine by their metadata (`services.volume_marks`), on real dockerd and restic 0.14: no
restic backup runs, the parent's restic snapshot is pointed at, and every reader, a purge, a
stop and a start still find every byte. Any change, even one that keeps a file's size and
modification time, and any file written too recently to trust, runs restic as before."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import os
import subprocess
import time

import pytest

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.audit.services import Progress
from apps.pods import services
from apps.pods.models import VOLUME_MOUNTS, Pod, Snapshot
from apps.pods.services import volume_marks
from apps.pods.services.backup import backed_up_sentence
from apps.pods.services.hosts import engine_for
from apps.pods.services.retention import snapshots_apply_retention
from apps.pods.services.snapshot_files import file_read, snapshot_entries, snapshot_select
from apps.pods.services.snapshotting import _snapshot_purge
from apps.pods.services.verify import snapshot_verify
from apps.pods.snapshots import store_from_url
from apps.pods.stores.dedup import FOLDER_LAYOUT
from controlpanel.errors import PanelError
from tests.pods.conftest import WRITE_SCRIPT, listing, pod_volumes, pod_with_files, run_in
from tests.pods.test_snapshot_beside import beside, log_of  # noqa: F401
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

SCRIPT = WRITE_SCRIPT + (
    "mkfifo /workspace/pipe\n"
    "printf 'one\\n' > /home/dev/notes.txt\n"
    # A modification time in the future (an unpacked archive's, say) is the pod's to set.
    "touch /srv/future && touch -d '2031-01-01 00:00:00' /srv/future\n"
)
NOTHING_CHANGED = "nothing changed since snapshot #{}"


@pytest.fixture
def marks(monkeypatch):
    """Marks count for files written before the copy began (the suite's default trusts none)."""
    monkeypatch.setattr(volume_marks, "QUIET_SECONDS", 0.0)


def backup(pod_id: str) -> Snapshot:
    return Snapshot.objects.get(pk=run_now(Kind.POD_BACKUP, pod_id, actor="test").result["snapshot"])


def restic_ids(store) -> set[str]:
    return {found["short_id"] for found in store._snapshots() if FOLDER_LAYOUT in (found.get("tags") or [])}


def read(pod_id: str, snapshot: Snapshot, path: str) -> bytes:
    return b"".join(file_read(snapshot_select(pod_id=pod_id, number=snapshot.pk, path=path)))


def backed_up_unchanged(docker_client, new_pod_id) -> tuple[str, list[str], Snapshot, Snapshot]:
    """A running pod with files, backed up twice with nothing changed between: (pod id, its
    listing, the first backup, the second, which reused the first's restic snapshot)."""
    pod_id, before = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    second = backup(pod_id)
    assert NOTHING_CHANGED.format(first.pk) in log_of(second)
    return pod_id, before, first, second


def test_a_backup_of_an_unchanged_pod_runs_no_restic_and_points_at_its_parents_snapshot(
    docker_client, new_pod_id, dedup_file, beside, marks
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    store = store_from_url()
    made = restic_ids(store)
    assert all(entry["mark"] for entry in first.manifest.values())  # a FIFO among the files

    result = run_now(Kind.POD_BACKUP, pod_id, actor="test").result
    second = Snapshot.objects.get(pk=result["snapshot"])
    assert result["unchanged_since"] == first.pk
    assert f"nothing had changed since snapshot #{first.pk}); not yet proven" in backed_up_sentence(result)
    assert NOTHING_CHANGED.format(first.pk) in log_of(second)
    assert "backing up the volumes beside them" not in log_of(second)
    assert restic_ids(store) == made  # no restic snapshot of the folders was made
    for field in ("store_id", "key", "sha256"):
        assert {n: e[field] for n, e in second.manifest.items()} == {n: e[field] for n, e in first.manifest.items()}
    assert all(entry["reused"] and entry["same_as"] == first.pk for entry in second.manifest.values())
    assert second.stored_bytes < 256 * 1024  # its manifest only
    # Every reader finds its files: the page's listing, one file, the verify schedule, a drill.
    shown = {entry.name: entry.size for entry in snapshot_entries(pod_id=pod_id, number=second.pk, path="/home/dev")}
    assert shown["notes.txt"] == 4 and shown["blob.bin"] == 200 * 1024
    assert read(pod_id, second, "/home/dev/notes.txt") == b"one\n"
    assert snapshot_verify(snapshot=second, progress=Progress(None)) == ""
    assert services.pod_drill(pod_id=pod_id, actor="test")["files"] == sum(e["files"] for e in first.manifest.values())


def test_any_change_runs_restic_even_one_that_keeps_the_files_size_and_time(
    docker_client, new_pod_id, dedup_file, beside, marks
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    # Same size, its modification time set back: only the change time (the kernel's) moved.
    run_in(
        docker_client,
        pod_id,
        "stamp=$(stat -c %Y /home/dev/notes.txt); printf 'two\\n' > /home/dev/notes.txt; "
        'touch -d "@$stamp" /home/dev/notes.txt',
    )
    second = backup(pod_id)
    assert NOTHING_CHANGED.format(first.pk) not in log_of(second)
    assert second.manifest["home"]["store_id"] != first.manifest["home"]["store_id"]
    assert read(pod_id, second, "/home/dev/notes.txt") == b"two\n"
    assert read(pod_id, first, "/home/dev/notes.txt") == b"one\n"
    # A new file, a removed one: the same.
    run_in(docker_client, pod_id, "rm /home/dev/notes.txt")
    third = backup(pod_id)
    assert NOTHING_CHANGED.format(second.pk) not in log_of(third)
    assert "notes.txt" not in {e.name for e in snapshot_entries(pod_id=pod_id, number=third.pk, path="/home/dev")}


def test_files_written_just_before_a_copy_get_no_mark_and_the_next_copy_runs_restic(
    docker_client, new_pod_id, dedup_file, beside, monkeypatch
):
    """A write in the same tick as the mark would not move a coarse clock's times: a volume with
    any time that recent is not marked, so the copy after it asks restic."""
    monkeypatch.setattr(volume_marks, "QUIET_SECONDS", 3600.0)
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    assert [entry["mark"] for entry in first.manifest.values()] == [None] * len(VOLUME_MOUNTS)
    second = backup(pod_id)
    assert "backing up the volumes beside them with restic (parent" in log_of(second)
    assert second.manifest["home"]["store_id"] != first.manifest["home"]["store_id"]


def test_a_folder_that_cannot_be_listed_from_here_leaves_the_comparison_to_restic(
    docker_client, new_pod_id, dedup_file, beside, marks, monkeypatch
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    real = volume_marks._Walk.mark

    def vanishing(walk, root):  # the folder removed as the walk reaches it
        if root.endswith("-home/_data"):
            raise FileNotFoundError(2, "No such file or directory", root)
        return real(walk, root)

    monkeypatch.setattr(volume_marks._Walk, "mark", vanishing)
    second = backup(pod_id)
    assert "the volumes' files were not listed from here" in log_of(second) and "restic compares them" in log_of(second)
    assert "backing up the volumes beside them with restic (parent" in log_of(second)
    assert second.status == Snapshot.Status.COMPLETE and all(e["mark"] is None for e in second.manifest.values())
    assert first.manifest["home"]["mark"]


def test_another_host_or_a_volume_that_is_not_a_plain_folder_gets_no_marks(
    docker_client, new_pod_id, dedup_file, beside, marks, monkeypatch
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    pod = Pod.objects.get(pod_id=pod_id)
    volumes, engine = list(pod.volumes.all()), engine_for(pod.host)
    assert set(volume_marks.volume_marks(engine=engine, volumes=volumes)) == set(VOLUME_MOUNTS)
    monkeypatch.setattr(type(engine), "on_this_machine", property(lambda self: False))
    assert volume_marks.volume_marks(engine=engine, volumes=volumes) == {}
    monkeypatch.undo()
    monkeypatch.setattr(volume_marks, "QUIET_SECONDS", 0.0)
    # A volume of the local driver with options is mounted only while a container uses it.
    victim = volumes[0]
    docker_client.api.remove_container(f"pinacle-pod-{pod_id}", force=True)
    docker_client.api.remove_volume(victim.docker_name)
    docker_client.volumes.create(victim.docker_name, driver_opts={"type": "tmpfs", "device": "tmpfs"})
    assert volume_marks.volume_marks(engine=engine, volumes=volumes) == {}


def test_a_stop_of_an_unchanged_pod_reads_its_parents_snapshot_back_and_a_purge_keeps_what_it_points_at(
    docker_client, new_pod_id, dedup_file, beside, marks
):
    pod_id, before, first, second = backed_up_unchanged(docker_client, new_pod_id)
    store = store_from_url()
    restic_id = second.manifest["home"]["store_id"]

    # The stop finds nothing changed since the backup: no restic backup, but every byte of the
    # restic snapshot it points at read back before a volume goes.
    operation = run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    assert Operation.objects.get(pk=operation.pk).status == Operation.Status.SUCCEEDED
    stopped = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("-pk").first()
    assert NOTHING_CHANGED.format(second.pk) in log_of(stopped)
    assert "read back" in log_of(stopped) and pod_volumes(docker_client, pod_id) == []
    assert stopped.manifest["home"]["store_id"] == restic_id
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

    # The two backups go (a prune: every index file rewritten); the stop's copy still points
    # at their restic snapshot, which stays, and reads whole.
    services.snapshots_apply_retention(actor="test", keep=1)
    assert set(Snapshot.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)) == {
        Snapshot.Status.DELETED
    }
    assert restic_id in restic_ids(store)
    assert read(pod_id, stopped, "/home/dev/notes.txt") == b"one\n"
    assert snapshot_verify(snapshot=stopped, progress=Progress(None)) == ""
    # The start gave every file a new inode and change time: the next copy asks restic.
    third = backup(pod_id)
    assert NOTHING_CHANGED.format(stopped.pk) not in log_of(third)
    # The restic snapshot goes with the last snapshot that points at it.
    _snapshot_purge(snapshot=stopped, actor="test", operation=None)
    assert restic_id not in restic_ids(store)


def test_a_rebuilt_index_makes_the_next_copy_ask_restic_which_fails_at_once_on_missing_chunks(
    docker_client, new_pod_id, dedup_file, beside, marks
):
    """A pack lost and the index rebuilt (what DEDUP_REPAIR tells an operator to do) takes
    chunks out of the index: restic's backup notices, a mark cannot. The index files the parent
    saw are gone, so the copy asks restic; restic cannot read the parent's chunks (exit 3), and
    the backup fails with its sentence, its restic snapshot forgotten, without waiting on the
    lock of the manifest's writer it started ahead."""
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    store = store_from_url()
    packs = sorted((dedup_file / "data").glob("*/*"), key=lambda pack: pack.stat().st_size)
    packs[-1].unlink()  # the largest: blob.bin's chunks
    store.run("rebuild-index", doing="test")
    with pytest.raises(PanelError, match="restic could not read every file of pod"):
        backup(pod_id)
    failed = Snapshot.objects.filter(pod__pod_id=pod_id).order_by("-pk").first()
    assert failed.pk != first.pk and failed.status == Snapshot.Status.FAILED
    assert "backing up the volumes beside them with restic (parent" in log_of(failed)
    assert NOTHING_CHANGED.format(first.pk) not in log_of(failed)
    assert restic_ids(store) == {first.manifest["home"]["store_id"]}


def walked(folder) -> tuple[str | None, int]:
    walk = volume_marks._Walk(since_ns=2**62, deadline=time.monotonic() + 60)
    return walk.mark(str(folder)), walk.entries


def test_the_walk_never_follows_a_link_nor_a_folder_swapped_for_one(tmp_path, monkeypatch):
    fds_before = len(os.listdir("/proc/self/fd"))
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "file").write_bytes(b"x")
    (volume / "outside").symlink_to("/usr")
    mark, entries = walked(volume)
    assert mark and entries == 3  # sub, outside (the link itself) and sub/file: nothing of /usr
    real = volume_marks._Walk._listed

    def swapping(walk, fd, parts, *, swap):  # `sub` replaced once the root is listed
        below = real(walk, fd, parts)
        if parts == ():
            (volume / "sub").rename(tmp_path / f"moved-{swap}")
            if swap == "link":
                (volume / "sub").symlink_to("/usr")
            else:
                (volume / "sub").mkdir()  # another folder by the same name: not the one listed
        return below

    monkeypatch.setattr(volume_marks._Walk, "_listed", lambda walk, fd, parts: swapping(walk, fd, parts, swap="link"))
    with pytest.raises(OSError):  # O_NOFOLLOW: the link is never opened
        walked(volume)
    (volume / "sub").unlink()
    (volume / "sub").mkdir()
    monkeypatch.setattr(volume_marks._Walk, "_listed", lambda walk, fd, parts: swapping(walk, fd, parts, swap="dir"))
    with pytest.raises(volume_marks.Unmarkable, match="changed while listed"):
        walked(volume)
    assert len(os.listdir("/proc/self/fd")) == fds_before  # every folder it opened, closed


def test_a_walk_too_deep_too_long_or_too_large_gives_up(tmp_path, monkeypatch):
    deep = tmp_path / "volume"
    (deep / "a" / "b" / "c" / "d").mkdir(parents=True)
    monkeypatch.setattr(volume_marks, "MOST_DEPTH", 3)
    with pytest.raises(volume_marks.Unmarkable, match="nested deeper than 3"):
        walked(deep)
    monkeypatch.setattr(volume_marks, "MOST_DEPTH", 256)
    monkeypatch.setattr(volume_marks, "MOST_ENTRIES", 2)
    with pytest.raises(volume_marks.Unmarkable, match="more than 2 files"):
        walked(deep)
    monkeypatch.setattr(volume_marks, "MOST_ENTRIES", 200_000)
    walk = volume_marks._Walk(since_ns=2**62, deadline=time.monotonic() - 1)
    with pytest.raises(volume_marks.Unmarkable, match="took over"):
        walk.mark(str(deep))


def test_with_a_restic_that_keeps_old_index_files_nothing_is_reused(
    docker_client, new_pod_id, dedup_file, beside, marks, monkeypatch
):
    """restic 0.17 and later rewrite only the index files a prune changed: the index files a
    copy saw would no longer tell that no chunk left the index since."""
    monkeypatch.setattr(volume_marks, "_restic_seen", {"whole": False})
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    first = backup(pod_id)
    second = backup(pod_id)
    assert NOTHING_CHANGED.format(first.pk) not in log_of(second)
    assert second.manifest["home"]["store_id"] != first.manifest["home"]["store_id"]


def test_a_restic_that_does_not_tell_its_version_reuses_nothing(monkeypatch):
    monkeypatch.setattr(volume_marks, "_restic_seen", {})

    def hanging(*args, **kwargs):
        raise subprocess.TimeoutExpired("restic", 30)

    monkeypatch.setattr(volume_marks.subprocess, "run", hanging)
    assert volume_marks.index_files(None) == []  # never listed: no copy is reused


def test_a_copy_under_way_keeps_retention_off_the_snapshot_it_may_reuse(
    docker_client, new_pod_id, dedup_file, beside, marks
):
    """A copy that reuses its parent holds no restic snapshot of its own until it is recorded:
    retention, which reads the pod's copies under way at the moment of each purge, leaves the
    parent until a later run; a copy whose parent was purged meanwhile runs restic instead."""
    pod_id, _before, first, second = backed_up_unchanged(docker_client, new_pod_id)
    store = store_from_url()
    under_way = Snapshot.objects.create(
        pod=first.pod, kind=Snapshot.Kind.BACKUP, store_url=first.store_url, status=Snapshot.Status.UPLOADING
    )
    operation = Operation.objects.create(kind="snapshots.retention", target_type="pod", target_id="*", actor_name="t")
    result = snapshots_apply_retention(actor="test", keep=1, operation=operation)
    operation.refresh_from_db()
    assert first.pk not in result["purged"]
    assert f"kept snapshot #{first.pk} for now: a copy of pod {pod_id} into its store is under way" in operation.log
    assert Snapshot.objects.get(pk=first.pk).status == Snapshot.Status.COMPLETE
    under_way.delete()
    assert first.pk in snapshots_apply_retention(actor="test", keep=1)["purged"]
    # A parent purged between its choice and the copy's look under the lock is not reused.
    pod = Pod.objects.get(pod_id=pod_id)
    assert volume_marks.parent_kept(pod=pod, store=store, parent=second)
    Snapshot.objects.filter(pk=second.pk).update(status=Snapshot.Status.DELETED)
    assert not volume_marks.parent_kept(pod=pod, store=store, parent=second)


def test_a_file_changed_after_a_start_and_dated_back_is_read_again_not_trusted(
    docker_client, new_pod_id, dedup_file, beside
):
    """After a start, restic compares files by size and modification time (every change time is
    new): a file rewritten at the same size and dated back to its old time, to the nanosecond
    (`cp -p`, `rsync -a`, `touch -r` with coreutils), would look unchanged. Its change time,
    later than the restore, tells it: restic reads every file again, the stop keeps the new bytes."""
    pod_id, _before = pod_with_files(docker_client, new_pod_id, SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    services.pod_start(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).restored_at is not None
    home = docker_client.volumes.get(f"pinacle-vol-{pod_id}-home").attrs["Mountpoint"]
    notes = os.path.join(home, "dev", "notes.txt")
    was = os.stat(notes)
    with open(notes, "r+b") as body:  # what `cp -p` does on this machine's file system
        body.write(b"two\n")
    os.utime(notes, ns=(was.st_atime_ns, was.st_mtime_ns))
    assert os.stat(notes).st_size == was.st_size and os.stat(notes).st_mtime_ns == was.st_mtime_ns
    operation = run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    assert "restic reads every file again: /home/dev/notes.txt changed since the start" in operation.log
    services.pod_start(pod_id=pod_id, actor="test")
    assert run_in(docker_client, pod_id, "cat /home/dev/notes.txt") == "two\n"
    # Written as a write dates it: compared by size and time, as before.
    run_in(docker_client, pod_id, "printf 'six\\n' > /home/dev/notes.txt")
    operation = run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    assert "files compared by size and time" in operation.log
    services.pod_start(pod_id=pod_id, actor="test")
    assert run_in(docker_client, pod_id, "cat /home/dev/notes.txt") == "six\n"
    # A backup of the running pod: a file could be dated back while restic reads it.
    assert "restic reads every file again: the pod runs while restic reads" in log_of(backup(pod_id))

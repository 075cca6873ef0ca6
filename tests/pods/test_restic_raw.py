"""A preflight that needs no key derivation (`apps.pods.stores.restic_raw`): a repository our
restic opened with this very key before is checked by listing its files; a new key in it, a
rewritten key file, a lock or a missing restic snapshot are still seen, on the real restic 0.14
(and a start with a missing one touches nothing), on a folder and on SeaweedFS."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from apps.pods import services
from apps.pods.models import Pod, Snapshot
from apps.pods.services.restoring import _restore_precheck
from apps.pods.snapshots import store_from_url
from apps.pods.stores import restic_raw
from apps.pods.stores.base import StoreError
from apps.pods.stores.dedup import DedupStore
from tests.e2e.test_any_hour_any_file import store  # noqa: F401 - a fixture: dedup+file, dedup+s3
from tests.pods.conftest import container_exists, pod_volumes
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401
from tests.restic_keys import prune_at_work, restic_lock_write

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def restic_runs(monkeypatch) -> list[tuple]:
    """The restic commands `DedupStore.run` starts from now on."""
    runs, real = [], DedupStore.run

    def counted(self, *args, **kwargs):
        runs.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DedupStore, "run", counted)
    return runs


@contextmanager
def restic_at_work(store) -> Iterator[list[str]]:
    """A live restic (a backup reading its stdin) holding its shared lock; the lock ids."""
    holder = subprocess.Popen(
        store.command("backup", "--stdin", "--host", "elsewhere"), stdin=subprocess.PIPE, env=store.env()
    )
    try:
        deadline = time.monotonic() + 30
        while not restic_raw.names(store, "locks") and time.monotonic() < deadline:
            time.sleep(0.05)
        yield restic_raw.names(store, "locks")
    finally:
        holder.communicate(b"", timeout=60)


def test_a_repository_opened_with_this_key_before_is_checked_by_its_listing(store, restic, restic_runs, tmp_path):
    store = store_from_url()
    assert store.repository_ensure() == []
    assert restic_runs == [("list", "locks", "--no-lock")]  # the first time: restic opens it

    restic_runs.clear()
    assert store.repository_ensure() == []
    assert restic_runs == []  # the same key file, keys and config: no restic started

    # A restic at work holds a lock: its file is seen in the listing, still without restic.
    with restic_at_work(store) as held:
        assert held and store.repository_ensure() == held
        assert restic_runs == []

    # Another key added to the repository: only restic can tell whether ours still opens it.
    other = tmp_path / "other.key"
    other.write_text("another key")
    subprocess.run(
        store.command("key", "add", "--new-password-file", str(other)), env=store.env(), check=True, capture_output=True
    )
    assert store.repository_ensure() == []
    assert restic_runs == [("list", "locks", "--no-lock")]

    # The key file written again with the same bytes (same size): its times changed, so restic
    # is asked again; then, recorded anew, it is not.
    restic_runs.clear()
    restic.write_text(restic.read_text())
    assert store.repository_ensure() == [] and store.repository_ensure() == []
    assert restic_runs == [("list", "locks", "--no-lock")]

    # The key file rewritten: restic is asked, and refuses a key that is not the repository's
    # (no working key is made from it: it opens none of the repository's keys).
    restic_runs.clear()
    restic.write_text("not the key, and longer than it was")
    with pytest.raises(StoreError, match="refused the key in SNAPSHOT_KEY_FILE"):
        store.repository_ensure()
    assert [run[:2] for run in restic_runs] == [("list", "locks")]


def test_a_start_looks_for_its_restic_snapshot_by_name_only_while_no_lock_is_there_and_a_gone_one_is_refused(
    docker_client, new_pod_id, dedup_file, restic_runs
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    restic_id = next(iter(snapshot.manifest.values()))["store_id"]
    store = store_from_url()
    assert restic_raw.snapshot_present(store, restic_id)
    restic_runs.clear()
    _restore_precheck(snapshot=snapshot)
    assert restic_runs == []  # found by its file's name: no restic started

    # While a restic holds a lock, restic is asked: its locks listed and read (a dead prune's
    # would go, a live one's be waited out), then the snapshot looked for.
    with restic_at_work(store):
        _restore_precheck(snapshot=snapshot)
        assert [run[0] for run in restic_runs] == ["list", "snapshots"]
    subprocess.run(store.command("forget", restic_id), env=store.env(), check=True, capture_output=True)
    assert not restic_raw.snapshot_present(store, restic_id)

    restic_runs.clear()
    with pytest.raises(StoreError, match=rf"snapshot #{snapshot.pk} of pod {pod_id} is not whole"):
        services.pod_start(pod_id=pod_id, actor="test")
    # Not found by its file name, the snapshot was looked for by restic itself, then refused.
    assert [run[0] for run in restic_runs] == ["snapshots"]
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)


def test_a_manifest_read_is_not_held_up_by_a_dead_restics_exclusive_lock_and_the_next_stop_clears_it(
    dedup_file, restic_template
):
    store = store_from_url()
    store.put_small("p1/1/manifest.json", b'{"volumes": {}}')
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock_id = restic_lock_write(dedup_file, restic_template[1], pid=gone.pid, hostname=socket.gethostname())
    fresh = store_from_url()  # knows no restic id: the manifest is looked for by its tag
    assert fresh.get_small("p1/1/manifest.json") == b'{"volumes": {}}'
    assert lock_id in restic_raw.names(fresh, "locks")  # read without taking a lock, so never met
    fresh.preflight(needed_bytes=None, what="stopping pod p1")  # before a stop's restics take the lock
    assert lock_id not in restic_raw.names(fresh, "locks")
    fresh.put_small("p1/2/manifest.json", b'{"volumes": {}}')


def test_a_start_clears_a_dead_prunes_lock_before_its_restore_takes_the_lock(
    docker_client, new_pod_id, dedup_file, restic_template, settings
):
    """The start's listing takes no lock, so it never meets a killed prune's: the start removes
    it itself before the restore, which takes the lock, would be refused by it. A live prune's
    is waited for, then named."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    # A live prune's lock is waited out, then refused in one sentence that blames no snapshot.
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = 1
    with prune_at_work(store_from_url(), dedup_file, restic_template[1]), pytest.raises(StoreError) as refused:
        services.pod_start(pod_id=pod_id, actor="test")
    assert "is held by restic PID" in str(refused.value) and "was not started" in str(refused.value)
    assert "will not restore" not in str(refused.value) and "\n" not in str(refused.value)
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock_id = restic_lock_write(dedup_file, restic_template[1], pid=gone.pid, hostname=socket.gethostname())
    services.pod_start(pod_id=pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert lock_id not in restic_raw.names(store_from_url(), "locks")


def test_a_verify_clears_a_dead_prunes_lock_and_a_live_prune_is_no_failure(
    docker_client, new_pod_id, dedup_file, restic_template, settings
):
    """Verify's listing takes no lock; its read of the volumes does: a killed prune's lock is
    cleared before it, a live prune's waited for, and then the snapshot is read another time,
    not marked as failing (a lock is not damage)."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock_id = restic_lock_write(dedup_file, restic_template[1], pid=gone.pid, hostname=socket.gethostname())
    assert services.snapshots_verify(actor="test", pod_id=pod_id)["verified"] == [snapshot.pk]
    assert lock_id not in restic_raw.names(store_from_url(), "locks")

    Snapshot.objects.filter(pk=snapshot.pk).update(verified_at=None, verify_checked_at=None)
    settings.SNAPSHOT_LOCK_WAIT_SECONDS = 1
    with prune_at_work(store_from_url(), dedup_file, restic_template[1]):
        result = services.snapshots_verify(actor="test", pod_id=pod_id)
    assert result["verified"] == [] and result["failed"] == {}
    snapshot.refresh_from_db()
    assert snapshot.verify_error == "" and snapshot.verify_checked_at is None
    assert services.snapshots_verify(actor="test", pod_id=pod_id)["verified"] == [snapshot.pk]

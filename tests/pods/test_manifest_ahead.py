"""A stop's manifest read back by a restic started before the manifest is written
(`capture_folders.ManifestAhead`): its key derivation overlaps the volumes' read-back; what it
found counts only if it is the manifest as written, on the real restic 0.14. A read that looked
too soon, or found an earlier attempt's manifest, is read again after the write; a manifest that
does not read back as written still fails."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import json
import threading

import pytest

from apps.audit.models import Operation
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from apps.pods.services.capture import manifest_readback
from apps.pods.services.hosts import host_default
from apps.pods.services.manifest_ahead import ManifestAhead, near_end, tar_bytes_about
from apps.pods.snapshots import store_from_url
from apps.pods.stores.base import StoreError
from apps.pods.stores.dedup import DedupStore
from tests.pods.conftest import WRITE_SCRIPT, listing, pod_with_files
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.django_db]

EARLY = "its read began as the volumes' read-back ended"


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The manifests a restic reads from now on (by tag or by id), by any thread."""
    keys, real = [], DedupStore._dump

    def counted(self, command, **kwargs):
        if command[-1] == "/manifest.json":
            keys.append(kwargs.get("key"))
        return real(self, command, **kwargs)

    monkeypatch.setattr(DedupStore, "_dump", counted)
    return keys


def _snapshot() -> Snapshot:
    pod = Pod.objects.create(pod_id="ahead", host=host_default(), image="img", status=Pod.Status.RUNNING)
    return Snapshot.objects.create(pod=pod, store_url="x", status=Snapshot.Status.UPLOADING)


def _write(store: DedupStore, key: str, volumes: dict) -> None:
    store.put_small(key, json.dumps({"volumes": volumes, "files": {}}).encode())


def _log(operation: Operation) -> str:
    operation.refresh_from_db()
    return operation.log


def test_a_read_begun_before_the_write_counts_only_when_it_found_the_manifest_as_written(dedup_file, reads):
    store, snapshot = store_from_url(), _snapshot()
    key = f"{snapshot.prefix}/manifest.json"
    operation = Operation.objects.create(kind="pod.stop", target_type="pod", target_id="ahead", actor_name="t")
    first = {"home": {"key": f"{snapshot.prefix}/home.tar", "bytes": 5}}
    second = {"home": {**first["home"], "bytes": 6}}

    def read_early_then_write(volumes: dict | None) -> ManifestAhead:
        """An early read that has finished looking, then `volumes` written (None: nothing)."""
        reads.clear()
        ahead = ManifestAhead(store, key)
        ahead.start()
        ahead.reading.exception()  # waits for it, whatever it found
        if volumes is not None:
            _write(store, key, volumes)
        return ahead

    # Too soon: nothing was written yet, so it found nothing; the manifest is read again.
    ahead = read_early_then_write(first)
    assert ahead.found() is None
    manifest_readback(store=store, snapshot=snapshot, manifest=first, operation=operation, ahead=ahead)
    assert reads == [key, key] and EARLY not in _log(operation)

    # Another manifest under the same key: found, but not the one written now.
    ahead = read_early_then_write(second)
    manifest_readback(store=store, snapshot=snapshot, manifest=second, operation=operation, ahead=ahead)
    assert reads == [key, key] and EARLY not in _log(operation)

    # In time: it found the very manifest, and nothing is read again.
    ahead = read_early_then_write(None)
    manifest_readback(store=store, snapshot=snapshot, manifest=second, operation=operation, ahead=ahead)
    assert reads == [key] and EARLY in _log(operation)

    # What the store holds is not what was written: the stop fails, early read or not.
    ahead = read_early_then_write(None)
    with pytest.raises(StoreError, match="does not read back as written"):
        manifest_readback(store=store, snapshot=snapshot, manifest=first, operation=operation, ahead=ahead)


def test_the_early_read_starts_when_what_is_left_would_end_within_restics_start():
    # restic took 0.7 s to give its first 100 bytes; the manifest's reader will take about that
    # long before it looks: started when what is left would take 60 % of it, less 0.1 s for
    # writing the manifest (0.32 s). The pace leaves the first bytes out (they came at once).
    slow = {"begun": 0.0, "first": 0.7, "first_count": 100, "expected": 1100}
    assert not near_end(**slow, now=0.72, count=110)  # too soon to tell the pace
    assert not near_end(**slow, now=1.7, count=600)  # 500 bytes a second: 1 s left
    assert near_end(**slow, now=1.7, count=950)  # 850 a second: 0.18 s left
    assert near_end(**slow, now=0.7, count=1100)  # all of it, however soon
    # A restic that starts at once leaves no time to win: the end starts it.
    fast = {"begun": 0.0, "first": 0.1, "first_count": 100, "expected": 1100}
    assert not near_end(**fast, now=1.0, count=1099)
    assert near_end(**fast, now=1.0, count=1100)


def test_the_tar_restic_dumps_is_estimated_in_its_own_units():
    """restic's summary counts the files' bytes; its tar adds a 512-byte header (and padding)
    for every file and folder (restic 0.14 writes no PAX records): the estimate is within a few
    per cent of that layout, and never the files' bytes alone."""
    summary = {"total_bytes_processed": 1000 * 4096, "total_files_processed": 1000, "dirs_new": 3}
    real_tar = 1000 * (512 + 4096) + 3 * 512 + 1024  # headers, the files, the end blocks
    assert abs(tar_bytes_about(summary) - real_tar) < 0.06 * real_tar
    assert tar_bytes_about(summary) > summary["total_bytes_processed"]


@pytest.mark.docker
def test_a_real_stop_reads_its_manifest_early_and_starts_identical(
    docker_client, new_pod_id, dedup_file, settings, monkeypatch
):
    """On the real dockerd and restic 0.14: the stop's manifest is read by a restic started on
    its own thread before the manifest was written, the stop completes, the start is identical."""
    settings.SNAPSHOT_ENGINE = "beside"
    threads, real = [], DedupStore.manifest_by_tag

    def spied(self, key):
        threads.append(threading.current_thread().name)
        return real(self, key)

    monkeypatch.setattr(DedupStore, "manifest_by_tag", spied)
    pod_id, before = pod_with_files(docker_client, new_pod_id, WRITE_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    assert Snapshot.objects.get(pod__pod_id=pod_id).status == Snapshot.Status.COMPLETE
    assert "manifest-ahead" in threads
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before

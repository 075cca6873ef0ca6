"""The compare of a dedup stop (`unchanged.volume_compare`) on the real dockerd and restic:
a volume changed in its first block is let go after that block, not read to its end before
it is read again into the store."""

import pytest

from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Snapshot
from apps.pods.services.unchanged import BLOCK_SIZE
from tests.pods import test_snapshot_dedup
from tests.pods.conftest import run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker, pytest.mark.usefixtures("stream_engine")]

restic_template = test_snapshot_dedup.restic_template
restic = test_snapshot_dedup.restic
dedup_file = test_snapshot_dedup.dedup_file

MIB = 1024 * 1024


def test_a_volume_changed_in_its_first_block_is_compared_no_further(docker_client, new_pod_id, dedup_file, monkeypatch):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "dd if=/dev/urandom of=/workspace/big.bin bs=1M count=64 2>/dev/null")
    services.pod_stop(pod_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    assert first.manifest["workspace"]["bytes"] > 64 * MIB
    services.pod_start(pod_id=pod_id, actor="test")
    # The file's first byte: inside the archive's first block.
    run_in(docker_client, pod_id, "printf 'X' | dd of=/workspace/big.bin bs=1 count=1 conv=notrunc 2>/dev/null")
    original, streams = DockerEngine.archive_read, []

    def archive_read(self, *, container, path):
        read = [0]
        if path == "/workspace":
            streams.append(read)

        def counted():
            for chunk in original(self, container=container, path=path):
                read[0] += len(chunk)
                yield chunk

        return counted()

    monkeypatch.setattr(DockerEngine, "archive_read", archive_read)
    services.pod_stop(pod_id=pod_id, actor="test")

    second = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert second.status == Snapshot.Status.COMPLETE and not second.manifest["workspace"].get("reused")
    # Read twice: to compare, then whole into the store. The compare took about its first
    # block (and the engine's chunk that completed it), not the 64 MiB after it.
    compared, written = (read for [read] in streams)
    assert written == second.manifest["workspace"]["bytes"]
    assert compared <= BLOCK_SIZE + 2 * MIB

"""Any file back (issue #22 part 3): a snapshot's files listed at a pod path, one file read out
of its volume's stored tar by offset (a seek, an S3 range GET, a restic dump read up to it),
checked against the list's sha256; bad input refused with one sentence."""

import hashlib
import io
import json
import os
import tarfile

import pytest

from apps.pods import services
from apps.pods.models import Pod, Snapshot
from apps.pods.services import snapshot_files
from apps.pods.services.snapshot_files import (
    file_index,
    file_read,
    folder_tar,
    snapshot_entries,
    snapshot_select,
)
from apps.pods.snapshots import StoreError, store_from_url
from controlpanel.errors import InvalidInput, NotFound, PanelError
from tests.pods.conftest import run_in
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

LONG = "/workspace/proj/" + "d" * 60 + "/" + "n" * 90 + ".txt"  # past ustar's 100-character name
FILES_SCRIPT = f"""
set -e
mkdir -p /workspace/proj/src /workspace/proj/docs $(dirname {LONG}) /home/dev
printf 'hello pod\\n' > /workspace/proj/src/a.txt
printf 'second' > /workspace/proj/src/b.txt
printf 'readme' > /workspace/proj/docs/README.md
dd if=/dev/urandom of=/workspace/proj/big.bin bs=1024 count=70 2>/dev/null
printf 'long name' > {LONG}
dd if=/dev/urandom of=/workspace/filler.bin bs=1M count=3 2>/dev/null
ln -s src/a.txt /workspace/proj/link
printf 'home' > /home/dev/notes.txt
"""


def snapshotted_pod(docker_client, new_pod_id) -> tuple[str, Snapshot, dict[str, bytes]]:
    """A stopped pod with FILES_SCRIPT's files, its snapshot, and some files' bytes as written."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, FILES_SCRIPT)
    wanted = ["/workspace/proj/big.bin", "/workspace/proj/src/a.txt", LONG]
    container = docker_client.containers.get(f"pinacle-pod-{pod_id}")
    contents = {path: container.exec_run(["cat", path]).output for path in wanted}
    services.pod_stop(pod_id=pod_id, actor="test")
    return pod_id, Snapshot.objects.get(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE), contents


def read_all(chunks) -> bytes:
    return b"".join(chunks)


def test_offsets_and_mtimes_are_recorded_and_the_snapshot_browses_by_path(docker_client, new_pod_id, panel_paths):
    pod_id, snapshot, contents = snapshotted_pod(docker_client, new_pod_id)
    folder = panel_paths / "snapshots" / snapshot.prefix
    written = json.loads((folder / "manifest.json").read_text())
    raw = (folder / "workspace.tar").read_bytes()
    by_path = {entry[0]: entry for entry in written["files"]["workspace"]}
    for path, data in contents.items():
        name, size, sha256, mtime, offset = by_path[path.removeprefix("/")]
        assert raw[offset : offset + size] == data and sha256 == hashlib.sha256(data).hexdigest()
        assert abs(mtime - snapshot.started_at.timestamp()) < 600
    assert len(LONG) > 100 and LONG.removeprefix("/") in by_path  # a PAX long name
    assert len(contents["/workspace/proj/big.bin"]) == 70 * 1024  # over many tar blocks

    # Listed and searched at a path, from the manifest.
    entries = snapshot_entries(pod_id=pod_id, number=snapshot.pk, path="/workspace/proj")
    assert [(e.path, e.type) for e in entries] == [
        ("/workspace/proj/" + "d" * 60, "folder"),
        ("/workspace/proj/docs", "folder"),
        ("/workspace/proj/src", "folder"),
        ("/workspace/proj/big.bin", "file"),
    ]  # the symlink is not a regular file: not listed
    src = next(e for e in entries if e.path.endswith("/src"))
    assert src.size == len("hello pod\n") + len("second") and src.files == 2 and src.mtime
    root = {e.path for e in snapshot_entries(pod_id=pod_id, number=snapshot.pk, path="/")}
    assert {"/workspace", "/home"} <= root

    found = snapshot_entries(pod_id=pod_id, number=snapshot.pk, path="/workspace", query="README")
    assert [e.as_dict()["path"] for e in found] == ["/workspace/proj/docs/README.md"]
    found = snapshot_entries(pod_id=pod_id, number=snapshot.pk, path="/", query="SRC")
    assert [(e.path, e.type) for e in found] == [("/workspace/proj/src", "folder")]

    # A folder downloads as a tar of its files.
    selection = snapshot_select(pod_id=pod_id, number=snapshot.pk, path="/workspace/proj")
    with tarfile.open(fileobj=io.BytesIO(read_all(folder_tar(selection)))) as tar:
        names = tar.getnames()
        assert tar.extractfile("proj/big.bin").read() == contents["/workspace/proj/big.bin"]
        assert tar.extractfile("proj" + LONG.removeprefix("/workspace/proj")).read() == contents[LONG]
    assert sorted(names) == sorted("proj/" + row.path.removeprefix("/workspace/proj/") for row in selection.rows)


def test_one_file_from_a_file_store_reads_only_its_own_bytes_and_a_damaged_one_fails(
    docker_client, new_pod_id, panel_paths
):
    pod_id, snapshot, contents = snapshotted_pod(docker_client, new_pod_id)
    selection = snapshot_select(pod_id=pod_id, number=snapshot.pk, path="/workspace/proj/src/a.txt")
    tar = panel_paths / "snapshots" / snapshot.prefix / "workspace.tar"
    assert tar.stat().st_size > 3 * 1024 * 1024
    # Every byte of the volume's object but the file's own is overwritten: the read still
    # gives the file, so it read nothing else.
    row = selection.rows[0]
    raw = bytearray(tar.read_bytes())
    kept = bytes(raw[row.offset : row.offset + row.size])
    raw[:] = bytes(len(raw))
    raw[row.offset : row.offset + row.size] = kept
    tar.write_bytes(bytes(raw))

    with open("/proc/self/io") as io_stats:
        before = int(next(line for line in io_stats if line.startswith("rchar")).split()[1])
    data = read_all(file_read(selection))
    with open("/proc/self/io") as io_stats:
        after = int(next(line for line in io_stats if line.startswith("rchar")).split()[1])

    assert data == contents["/workspace/proj/src/a.txt"]
    assert after - before < 256 * 1024  # not the 3 MiB volume

    # A byte changed in the store: the read fails with a sentence, and never gives the whole file.
    raw = bytearray(tar.read_bytes())
    raw[row.offset + 3] ^= 0xFF
    tar.write_bytes(bytes(raw))
    received = []
    with pytest.raises(StoreError, match=r"a.txt in snapshot #\d+ reads back as .* the store's copy is damaged"):
        for chunk in file_read(selection):
            received.append(chunk)
    assert sum(map(len, received)) < row.size


def test_a_file_from_an_s3_store_is_one_range_get(docker_client, new_pod_id, s3_bucket, settings):
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    pod_id, snapshot, contents = snapshotted_pod(docker_client, new_pod_id)
    selection = snapshot_select(pod_id=pod_id, number=snapshot.pk, path="/workspace/proj/big.bin")
    store = store_from_url(snapshot.store_url)
    sent = []
    store.client.meta.events.register("before-send.s3.GetObject", lambda request, **_: sent.append(request))
    row = selection.rows[0]

    data = read_all(
        snapshot_files._verified(
            store.read_range(f"{snapshot.prefix}/workspace.tar", row.offset, row.size), row, snapshot
        )
    )

    assert data == contents["/workspace/proj/big.bin"]
    assert [r.headers["Range"] for r in sent] == [f"bytes={row.offset}-{row.offset + row.size - 1}".encode()]
    assert read_all(file_read(selection)) == data  # the service, through its own store


@pytest.mark.usefixtures("stream_engine")
def test_a_dedup_store_reads_a_file_of_a_reused_unchanged_volume(docker_client, new_pod_id, dedup_file):  # noqa: F811
    pod_id, first, contents = snapshotted_pod(docker_client, new_pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    second = Snapshot.objects.filter(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE).latest("pk")
    assert second.manifest["workspace"].get("reused")  # it points at the first snapshot's object

    for path in ["/workspace/proj/src/a.txt", LONG]:
        selection = snapshot_select(pod_id=pod_id, number=second.pk, path=path)
        assert read_all(file_read(selection)) == contents[path]
    selection = snapshot_select(pod_id=pod_id, number=second.pk, path="/workspace/proj")
    with tarfile.open(fileobj=io.BytesIO(read_all(folder_tar(selection)))) as tar:
        assert tar.extractfile("proj/src/a.txt").read() == contents["/workspace/proj/src/a.txt"]


def test_bad_input_is_one_sentence_and_touches_nothing(docker_client, new_pod_id, panel_paths):
    pod_id, snapshot, _ = snapshotted_pod(docker_client, new_pod_id)
    other_id = Pod.objects.create(pod_id=new_pod_id(), host=snapshot.pod.host, image="img").pod_id
    before = sorted(p.name for p in (panel_paths / "snapshots" / snapshot.prefix).iterdir())
    cases = [
        (pod_id, snapshot.pk, "/workspace/../etc/passwd", InvalidInput, "may not contain"),
        (pod_id, snapshot.pk, "/tmp/x", InvalidInput, "outside the pod's eight volumes"),
        (pod_id, snapshot.pk, "/workspace/nope.txt", NotFound, "is not in snapshot"),
        (pod_id, 999_999, "/workspace", NotFound, "does not exist"),
        (other_id, snapshot.pk, "/workspace", NotFound, f"not a snapshot of pod {other_id}"),
        ("no such pod!", snapshot.pk, "/workspace", PanelError, "pod id"),
    ]
    for pod, number, path, error, words in cases:
        with pytest.raises(error, match=words):
            snapshot_select(pod_id=pod, number=number, path=path)
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.DELETED)
    with pytest.raises(InvalidInput, match="is deleted: only a complete snapshot"):
        snapshot_entries(pod_id=pod_id, number=snapshot.pk, path="/workspace")
    assert sorted(p.name for p in (panel_paths / "snapshots" / snapshot.prefix).iterdir()) == before


def test_an_old_three_element_manifest_still_browses_reads_and_drills(docker_client, new_pod_id, panel_paths):
    from apps.audit.names import Kind
    from apps.audit.operations import run_now

    pod_id, snapshot, contents = snapshotted_pod(docker_client, new_pod_id)
    manifest = panel_paths / "snapshots" / snapshot.prefix / "manifest.json"
    written = json.loads(manifest.read_text())
    written["files"] = {volume: [entry[:3] for entry in files] for volume, files in written["files"].items()}
    manifest.write_text(json.dumps(written))

    entries = snapshot_entries(pod_id=pod_id, number=snapshot.pk, path="/workspace/proj/src")
    assert [(e.path, e.mtime) for e in entries] == [
        ("/workspace/proj/src/a.txt", None),
        ("/workspace/proj/src/b.txt", None),
    ]
    selection = snapshot_select(pod_id=pod_id, number=snapshot.pk, path="/workspace/proj/src/a.txt")
    assert read_all(file_read(selection)) == contents["/workspace/proj/src/a.txt"]
    assert run_now(Kind.PODS_DRILL, pod_id, actor="test").status == "succeeded"
    assert len(file_index(snapshot))  # the index was kept for the snapshot
    assert os.path.exists(manifest)

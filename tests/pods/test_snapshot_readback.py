"""A dedup stop trusts no copy it has not read back in this stop: on the real dockerd and
Debian's real restic, a pack of the store decays between two stops of an unchanged pod, and
the second stop keeps every volume instead of removing the only good copy."""

import json
import time

import pytest

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.pods import services
from apps.pods.models import VOLUME_MOUNTS, Pod, Snapshot
from apps.pods.snapshots import StoreError, store_from_url
from controlpanel.errors import PanelError
from tests.faults import panel_files_changed, panel_files_snapshot
from tests.pods import test_snapshot_dedup
from tests.pods.conftest import container_exists, listing, pod_volumes, pod_with_files
from tests.reliability.pod_files import digests, file_sizes, lost_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

# The dedup tests' repository (initialised once, copied for each test) and their pod's data.
restic_template = test_snapshot_dedup.restic_template
restic = test_snapshot_dedup.restic
dedup_file = test_snapshot_dedup.dedup_file
DATA_SCRIPT = test_snapshot_dedup.DATA_SCRIPT


def _flip_in_pack_of(store, entry: dict, repository) -> tuple[str, int]:
    """Flip 16 bytes inside the first data blob of the object `entry` names, in its pack file
    in the repository's data/ folder (found through restic's own tree and index): the file keeps
    its length, only restic's MACs can tell. Returns the pack id and the offset flipped."""
    tree = json.loads(store.run("cat", "snapshot", entry["store_id"], "--no-lock", doing="test"))["tree"]
    [node] = json.loads(store.run("cat", "blob", tree, "--no-lock", doing="test"))["nodes"]
    return flip_blob(store, node["content"][0], repository)


def flip_blob(store, blob: str, repository) -> tuple[str, int]:
    """Flip 16 bytes in the middle of data blob `blob` where restic's index says its pack holds it."""
    for index_id in store.run("list", "index", "--no-lock", doing="test").split():
        for pack in json.loads(store.run("cat", "index", index_id, "--no-lock", doing="test"))["packs"]:
            for found in pack["blobs"]:
                if found["id"] == blob:
                    path = repository / "data" / pack["id"][:2] / pack["id"]
                    at = found["offset"] + found["length"] // 2
                    data = bytearray(path.read_bytes())
                    for i in range(at, at + 16):
                        data[i] ^= 0xFF
                    path.chmod(0o644)
                    path.write_bytes(bytes(data))
                    return pack["id"], at
    raise AssertionError(f"blob {blob} is in no index")


def first_blob_under(store, restic_id: str, folder: str) -> str:
    """The first data blob of the first file under `folder` in a restic snapshot's tree."""

    def walk(tree: str, inside: bool) -> str | None:
        for node in json.loads(store.run("cat", "blob", tree, "--no-lock", doing="test"))["nodes"]:
            if node["type"] == "dir":
                found = walk(node["subtree"], inside or node["name"] == folder)
                if found:
                    return found
            elif inside and node["type"] == "file" and node.get("content"):
                return node["content"][0]
        return None

    root = json.loads(store.run("cat", "snapshot", restic_id, "--no-lock", doing="test"))["tree"]
    return walk(root, False)


def _lost_after_a_start(docker_client, pod_id: str, sizes: dict[str, int], before: list[str]) -> int:
    """Bytes of the pod's files (as `listing` saw them before) that a start does not give back;
    all of them when it cannot start."""
    try:
        services.pod_start(pod_id=pod_id, actor="test")
    except PanelError:
        return lost_bytes(sizes, digests(before), None)
    return lost_bytes(sizes, digests(before), digests(listing(docker_client, pod_id)))


@pytest.mark.usefixtures("stream_engine")
def test_a_stop_of_an_unchanged_pod_over_a_decayed_pack_keeps_every_volume(
    docker_client,
    new_pod_id,
    dedup_file,
    receiver,
    harm,
):
    pod_id, before = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)
    sizes = file_sizes(docker_client, pod_id)
    services.pod_stop(pod_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    store = store_from_url()
    pack, _ = _flip_in_pack_of(store, first.manifest["workspace"], dedup_file)
    point = "an unchanged pod stopped over a decayed pack, then started"

    try:
        with pytest.raises(PanelError) as failed:
            run_now(Kind.POD_STOP, pod_id, actor="test")
    except BaseException:
        # The stop went through: what a start gives back now is all the pod still has.
        harm("dedup stop", point, lost_bytes=_lost_after_a_start(docker_client, pod_id, sizes, before))
        raise

    message = str(failed.value)
    second = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    # The stop compared /workspace, found it unchanged, and read the kept copy back: it fails
    # naming the snapshot, the volume, the copy's snapshot and what to do, in one line.
    assert second.pk != first.pk and second.status == Snapshot.Status.FAILED
    assert f"snapshot #{second.pk} of pod {pod_id}: volume workspace, kept from snapshot #{first.pk}," in message
    assert "start it to go on working" in message and "restic rebuild-index" in message
    assert "\n" not in message
    operation = Operation.objects.filter(kind=Kind.POD_STOP, target_id=pod_id).latest("pk")
    assert operation.status == Operation.Status.FAILED and operation.error == message
    # Nothing was removed: the eight volumes and the container are there, the pod is paused.
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED and pod.last_error == message
    assert len(pod_volumes(docker_client, pod_id)) == len(VOLUME_MOUNTS)
    assert container_exists(docker_client, pod_id)
    # The snapshot whose copy decayed is marked, so no later stop takes it as its reference.
    assert "workspace" in Snapshot.objects.get(pk=first.pk).verify_error
    assert any(pod_id in body["title"] and "volume workspace" in body["message"] for body in receiver.bodies)

    # The pod goes on from its own volumes, every byte as it was.
    harm("dedup stop", point, lost_bytes=_lost_after_a_start(docker_client, pod_id, sizes, before))
    assert listing(docker_client, pod_id) == before

    # What the sentence says to do works: the damaged pack removed, the index rebuilt, the
    # next stop writes /workspace again, reads every volume back and completes.
    (dedup_file / "data" / pack[:2] / pack).unlink()
    store.run("rebuild-index", doing="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    third = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert third.status == Snapshot.Status.COMPLETE
    assert third.manifest["workspace"]["key"].startswith(f"{third.prefix}/")
    assert pod_volumes(docker_client, pod_id) == []
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == before


def test_a_start_with_a_wrong_key_creates_no_container_or_volume(docker_client, new_pod_id, dedup_file, restic, harm):
    pod_id, written = pod_with_files(docker_client, new_pod_id)
    sizes = file_sizes(docker_client, pod_id)
    services.pod_stop(pod_id=pod_id, actor="test")
    key = restic.read_text()
    restic.write_text("not the key")
    panel = panel_files_snapshot()
    time.sleep(1)  # the stop's own events are a second behind
    since = time.time()

    with pytest.raises(StoreError, match="refused the key in SNAPSHOT_KEY_FILE") as refused:
        run_now(Kind.POD_START, pod_id, actor="test")

    assert "\n" not in str(refused.value)
    panel_changed = panel_files_changed(panel)
    operation = Operation.objects.filter(kind=Kind.POD_START, target_id=pod_id).latest("pk")
    assert operation.status == Operation.Status.FAILED and "refused the key" in operation.error
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    # Not one container or volume of the pod was made (and then removed) on the way.
    touched = [
        event
        for event in docker_client.events(since=since, until=time.time() + 1, decode=True)
        if pod_id in str((event.get("Actor") or {}).get("ID", "")) + str((event.get("Actor") or {}).get("Attributes"))
    ]
    assert touched == []
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)

    # With the right key back, the start gives back every byte the pod had.
    restic.write_text(key)
    services.pod_start(pod_id=pod_id, actor="test")
    lost = lost_bytes(sizes, digests(written), digests(listing(docker_client, pod_id)))
    harm(
        "dedup start", "a start with a wrong key, then with the right one", lost_bytes=lost, panel_touched=panel_changed
    )


@pytest.mark.parametrize("engine", ["stream", "beside"])
def test_verify_drill_and_start_over_a_decayed_pack_say_what_to_do(
    docker_client, new_pod_id, dedup_file, settings, engine
):
    settings.SNAPSHOT_ENGINE = engine
    pod_id, _ = pod_with_files(docker_client, new_pod_id, DATA_SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id)
    store, entry = store_from_url(), snapshot.manifest["workspace"]
    if engine == "stream":  # the volume's own tar
        _flip_in_pack_of(store, entry, dedup_file)
    else:  # a file of /workspace in the restic snapshot of the eight folders
        flip_blob(store, first_blob_under(store, entry["store_id"], "workspace"), dedup_file)
    advice = (
        f"snapshot #{snapshot.pk} will not restore as it is: run Verify on pod {pod_id}'s snapshots, and repair "
        "the store before the pod's next stop: `restic check --read-data` names the damaged pack; remove that "
        "pack file, then run `restic rebuild-index`"
    )

    with pytest.raises(StoreError) as start:
        services.pod_start(pod_id=pod_id, actor="test")
    assert "ciphertext verification failed" in str(start.value) and str(start.value).endswith(advice)
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.STOPPED and pod.last_error.endswith(advice)
    assert pod_volumes(docker_client, pod_id) == []

    result = services.snapshots_verify(actor="test", pod_id=pod_id)
    assert result["failed"][str(snapshot.pk)].endswith(advice)
    assert Snapshot.objects.get(pk=snapshot.pk).verify_error.endswith(advice)

    with pytest.raises(PanelError) as drill:
        services.pod_drill(pod_id=pod_id, actor="test")
    assert "workspace" in str(drill.value) and str(drill.value).endswith(advice)
    assert "\n" not in str(start.value) + str(drill.value) + result["failed"][str(snapshot.pk)]

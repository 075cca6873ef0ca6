"""`pods restore-path`: a path from a snapshot put into the running pod beside the current one
(`PATH.from-snapshot-N`), read back from the container, never overwriting, refused for a held
or stopped pod; `pods files --json` lists a snapshot's entries."""

import hashlib
import io
import json
import tarfile
from io import StringIO

import docker.errors
import pytest
from django.core.management import CommandError, call_command

from apps.audit.holds import Held, hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_now
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Snapshot, container_name
from apps.pods.services.restore_path import pod_restore_path
from apps.pods.services.snapshot_files import snapshot_select
from controlpanel.errors import Busy, InvalidInput, PanelError
from tests.pods.conftest import run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

SCRIPT = r"""
set -e
mkdir -p /workspace/proj/src /workspace/proj/docs
printf 'hello pod\n' > /workspace/proj/src/a.txt
printf 'second' > /workspace/proj/src/b.txt
dd if=/dev/urandom of=/workspace/proj/docs/big.bin bs=1024 count=20 2>/dev/null
"""


def pods(*args) -> str:
    out = StringIO()
    call_command("pods", *args, stdout=out)
    return out.getvalue()


def files_in(docker_client, pod_id: str, path: str) -> dict[str, str]:
    """Every regular file under `path` in the running container: name → sha256 (get_archive)."""
    stream, _ = docker_client.api.get_archive(container_name(pod_id), path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers() if m.isfile()}


def running_pod_with_snapshot(docker_client, new_pod_id, script: str = SCRIPT) -> tuple[str, int, dict[str, str]]:
    """A pod stopped (snapshot N) and started again, with a.txt changed since."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, script)
    before = files_in(docker_client, pod_id, "/workspace/proj")
    services.pod_stop(pod_id=pod_id, actor="test")
    services.pod_start(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "printf 'changed since' > /workspace/proj/src/a.txt")
    number = Snapshot.objects.get(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE).pk
    return pod_id, number, before


def test_a_file_and_a_folder_come_back_beside_the_current_ones_byte_identical(docker_client, new_pod_id):
    pod_id, number, before = running_pod_with_snapshot(docker_client, new_pod_id)

    listed = json.loads(pods("files", pod_id, str(number), "/workspace/proj/src", "--json"))
    assert [(e["path"], e["type"], e["size"]) for e in listed] == [
        ("/workspace/proj/src/a.txt", "file", 10),
        ("/workspace/proj/src/b.txt", "file", 6),
    ]
    assert all(isinstance(e["mtime"], int) for e in listed)

    said = pods("restore-path", pod_id, str(number), "/workspace/proj/src/a.txt")
    assert f"as /workspace/proj/src/a.txt.from-snapshot-{number}" in said and "read back and matching" in said
    restored = files_in(docker_client, pod_id, f"/workspace/proj/src/a.txt.from-snapshot-{number}")
    assert restored == {f"a.txt.from-snapshot-{number}": before["proj/src/a.txt"]}
    current = files_in(docker_client, pod_id, "/workspace/proj/src/a.txt")
    assert current == {"a.txt": hashlib.sha256(b"changed since").hexdigest()}  # left as it is

    operation = run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj")
    assert operation.result["files"] == 3 and operation.progress_done == operation.result["bytes"]
    copy = files_in(docker_client, pod_id, f"/workspace/proj.from-snapshot-{number}")
    assert copy == {name.replace("proj/", f"proj.from-snapshot-{number}/", 1): sha for name, sha in before.items()}
    events = AuditEvent.objects.filter(action=AuditAction.POD_RESTORE_PATH, target_id=pod_id)
    assert events.count() == 2

    # Never overwriting: the same restore again is refused, and the copy stays as it is.
    with pytest.raises(
        Busy, match=f"proj.from-snapshot-{number} already exists in pod {pod_id}: nothing is overwritten"
    ):
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj")
    with pytest.raises(CommandError, match="already exists"):
        pods("restore-path", pod_id, str(number), "/workspace/proj/src/a.txt")
    assert files_in(docker_client, pod_id, f"/workspace/proj.from-snapshot-{number}") == copy


def test_a_held_pod_or_a_pod_not_running_is_refused_and_nothing_is_written(docker_client, new_pod_id):
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    hold_set(target_type=TargetType.POD, target_id=pod_id, reason="legal", actor="test")

    with pytest.raises(Held, match=f"pod {pod_id} is on hold"):
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj")
    # The check at the moment of writing, for a hold set after the request was accepted.
    with pytest.raises(Held, match="nothing was written into it"):
        pod_restore_path(pod_id=pod_id, number=number, path="/workspace/proj", actor="test")
    assert "proj.from-snapshot" not in run_in(docker_client, pod_id, "ls /workspace")
    assert not Operation.objects.filter(kind=Kind.POD_RESTORE_PATH, status="succeeded").exists()

    with pytest.raises(InvalidInput, match="is a whole volume or above one"):
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace")
    docker_client.api.stop(container_name(pod_id), timeout=0)
    with pytest.raises(InvalidInput, match="container is not running"):
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj/src")


def test_a_restore_that_fails_halfway_leaves_no_copy_that_looks_whole(docker_client, new_pod_id, panel_paths):
    # Enough bytes before the damaged file that the engine has unpacked some when it shows.
    big = "dd if=/dev/urandom of=/workspace/proj/docs/huge.bin bs=1M count=8 2>/dev/null\n"
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id, SCRIPT + big)
    snapshot = Snapshot.objects.get(pk=number)
    # The last file the folder's tar carries is damaged in the store: the files before it are
    # already in the pod when the damage shows.
    last = snapshot_select(pod_id=pod_id, number=number, path="/workspace/proj").rows[-1]
    assert last.path == "/workspace/proj/src/b.txt"
    stored = panel_paths / "snapshots" / snapshot.prefix / "workspace.tar"
    raw = bytearray(stored.read_bytes())
    raw[last.offset + 2] ^= 0xFF
    stored.write_bytes(bytes(raw))

    with pytest.raises(PanelError) as failed:
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj")
    assert "from-snapshot" not in run_in(docker_client, pod_id, "ls -a /workspace")
    said = str(failed.value)
    assert "the store's copy is damaged" in said and "\n" not in said
    target = f"/workspace/proj.from-snapshot-{number}"
    assert f"the part written was removed ({target} in pod {pod_id} does not exist)" in said

    # One damaged file alone: nothing of it stays either.
    with pytest.raises(PanelError, match="damaged.*; the part written was removed"):
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj/src/b.txt")
    assert "from-snapshot" not in run_in(docker_client, pod_id, "ls -a /workspace/proj/src")
    assert not AuditEvent.objects.filter(action=AuditAction.POD_RESTORE_PATH, outcome="succeeded").exists()
    assert docker_client.containers.get(container_name(pod_id)).status == "running"  # never left paused


def test_a_link_above_the_target_is_refused_and_nothing_lands_where_it_points(docker_client, new_pod_id):
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    # The pod (anyone in it) turns a folder on the way into a link out of its volume.
    run_in(docker_client, pod_id, "rm -rf /workspace/proj/src && ln -s /etc /workspace/proj/src")

    with pytest.raises(InvalidInput, match="/workspace/proj/src in pod .* is a link or not a folder"):
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj/src/a.txt")
    with pytest.raises(InvalidInput, match="is a link or not a folder: .* so nothing was written"):
        pod_restore_path(pod_id=pod_id, number=number, path="/workspace/proj/src/b.txt", actor="test")
    assert "from-snapshot" not in run_in(docker_client, pod_id, "ls -a /etc /workspace/proj")


def test_nothing_in_the_pod_moves_while_the_copy_is_written_and_a_pause_left_behind_is_undone(
    docker_client, new_pod_id, monkeypatch
):
    """The engine writes as root and follows links: while it writes and reads the copy back,
    the pod is paused, so no process in it can swap a folder of the copy for a link."""
    pod_id, number, before = running_pod_with_snapshot(docker_client, new_pod_id)
    seen = []
    write = DockerEngine.archive_write

    def watched(self, **kwargs):
        seen.append(docker_client.containers.get(container_name(pod_id)).status)
        with pytest.raises(docker.errors.APIError, match="paused"):  # no process of the pod runs
            docker_client.containers.get(container_name(pod_id)).exec_run(["true"])
        return write(self, **kwargs)

    monkeypatch.setattr(DockerEngine, "archive_write", watched)
    # A worker that died while a restore (or a backup) had the pod paused left it so.
    docker_client.containers.get(container_name(pod_id)).pause()
    operation = run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj")
    assert seen == ["paused"]
    assert docker_client.containers.get(container_name(pod_id)).status == "running"
    assert f"unpaused {container_name(pod_id)}, which an earlier worker left paused" in operation.log
    assert f"{container_name(pod_id)} was paused" in operation.log
    copy = files_in(docker_client, pod_id, f"/workspace/proj.from-snapshot-{number}")
    assert sorted(copy.values()) == sorted(before.values())


def test_a_path_restore_and_a_backup_of_the_pod_never_run_at_once(docker_client, new_pod_id):
    """Each may pause the pod (the restore while it writes, a backup with POD_BACKUP_PAUSE):
    one would unpause the other's pause midway."""
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    backing = Operation.objects.create(
        kind=Kind.POD_BACKUP, target_type="pod", target_id=pod_id, actor_name="t", status=Operation.Status.RUNNING
    )
    with pytest.raises(Busy, match=f"is being backed up \\(operation #{backing.pk}\\): nothing was written"):
        pod_restore_path(pod_id=pod_id, number=number, path="/workspace/proj", actor="test")
    assert "from-snapshot" not in run_in(docker_client, pod_id, "ls -a /workspace")
    backing.delete()
    restoring = Operation.objects.create(
        kind=Kind.POD_RESTORE_PATH, target_type="pod", target_id=pod_id, actor_name="t", status=Operation.Status.RUNNING
    )
    with pytest.raises(Busy, match=f"a path of pod '{pod_id}' is being restored \\(operation #{restoring.pk}\\)"):
        services.pod_backup(pod_id=pod_id, actor="test")
    # Its own backup first, for a replace, is not in its way.
    pod_restore_path(
        pod_id=pod_id, number=number, path="/workspace/proj", actor="test", operation=restoring, replace=True
    )
    assert Snapshot.objects.filter(pod__pod_id=pod_id, kind=Snapshot.Kind.BACKUP, status="complete").count() == 1

"""A stop whose restic snapshot holds its parent's very files (after a start) reads every chunk
back here, on every core, and records the parent's reading; the proof is held to `restic dump`:
the sha256 it records is the one restic's own dump of the new snapshot gives. On dedup+file
and dedup+s3 (SeaweedFS), on the real dockerd and Debian's restic. Anything different, or
unreadable here, is left to `restic dump`, as before."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.audit.services import Progress
from apps.pods import services
from apps.pods.models import Snapshot
from apps.pods.services import same_files
from apps.pods.services.verify import snapshot_verify
from apps.pods.snapshots import store_from_url
from apps.pods.stores import restic_crypto
from apps.pods.stores.restic_read import Repository, Unread, blobs_read
from apps.pods.stores.tarlist import TarFileList
from controlpanel.errors import PanelError
from tests.e2e.test_any_hour_any_file import store  # noqa: F401 - a fixture: dedup+file, dedup+s3
from tests.pods.conftest import WRITE_SCRIPT, listing, pod_with_files, run_in
from tests.pods.test_snapshot_beside import beside, log_of  # noqa: F401
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401
from tests.pods.test_snapshot_readback import first_blob_under, flip_blob

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

# Names restic 0.14 keeps quoted in its trees (a backslash, a double quote, a no-break space).
ODD_NAMES = r"""printf x > '/workspace/back\slash'; printf y > '/workspace/q"uote'
printf z > "/workspace/$(printf 'nb\302\240sp')"
"""
SCRIPT = WRITE_SCRIPT + "dd if=/dev/urandom of=/workspace/data.bin bs=1M count=12 2>/dev/null\n" + ODD_NAMES
PROVEN = "read back and checked in"


def _stopped_started_stopped(docker_client, new_pod_id, between: str = "") -> tuple[str, Snapshot, Snapshot, list]:
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    if between:
        run_in(docker_client, pod_id, between)
    shown = listing(docker_client, pod_id)
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    second = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert second.pk != first.pk and second.status == Snapshot.Status.COMPLETE
    return pod_id, first, second, shown


def _dump_sha256(snapshot: Snapshot) -> tuple[str, int]:
    """restic's own tar of the whole restic snapshot, hashed: what the manifest must record."""
    store = store_from_url(snapshot.store_url)
    restic_id = same_files.restic_id_of(snapshot.manifest)
    digest, count = hashlib.sha256(), 0
    for chunk in store._dump(["dump", "--archive", "tar", restic_id, "/"], doing="test"):
        digest.update(chunk)
        count += len(chunk)
    return digest.hexdigest(), count


def test_a_stop_after_a_start_proves_its_chunks_here_and_records_what_restics_dump_gives(
    docker_client, new_pod_id, store, beside
):
    pod_id, first, second, shown = _stopped_started_stopped(docker_client, new_pod_id)
    log = log_of(second)
    assert f"the same files as snapshot #{first.pk} (names, sizes, times, owners and chunks)" in log
    assert PROVEN in log and "dump instead" not in log
    # A new restic snapshot (a start changed every inode and change time) ...
    assert same_files.restic_id_of(second.manifest) != same_files.restic_id_of(first.manifest)
    # ... whose dump by restic is byte for byte the parent's: the sha256 and size recorded.
    sha256, count = _dump_sha256(second)
    assert {entry["sha256"] for entry in second.manifest.values()} == {sha256}
    assert {entry["archive_bytes"] for entry in second.manifest.values()} == {count}
    assert snapshot_verify(snapshot=second, progress=Progress(None)) == ""
    # Its file lists are the parent's, and every file reads through them.
    assert services.pod_drill(pod_id=pod_id, actor="test")["files"] == sum(
        entry["files"] for entry in second.manifest.values()
    )
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == shown


def test_a_decayed_chunk_is_found_here_and_restic_has_the_last_word(docker_client, new_pod_id, dedup_file, beside):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    first = Snapshot.objects.get(pod__pod_id=pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    store = store_from_url()
    flip_blob(store, first_blob_under(store, first.manifest["workspace"]["store_id"], "workspace"), dedup_file)
    with pytest.raises(Exception, match="do not read back"):
        run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    log = log_of(Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk"))
    assert "does not open" in log and "read back with restic's dump instead" in log


# --- the reader itself, against repositories restic made ------------------------------------


def _restic(repository: Path, key: Path, *args: str, cwd: Path | None = None) -> str:
    env = {"RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD_FILE": str(key), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["restic", "--no-cache", *args], env=env, cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def backed_up(dedup_file, restic, tmp_path) -> tuple[Path, dict[str, bytes], str]:
    """A folder of a large file, small ones and an empty one, backed up by restic."""
    folder = tmp_path / "src"
    (folder / "deep" / "er").mkdir(parents=True)
    # Random bytes (stored as they are) and numbered lines (compressed by restic): no two chunks alike.
    large = os.urandom(3 * 1024 * 1024) + b"".join(f"line {i}\n".encode() for i in range(300_000))
    files = {"large.bin": large, "deep/er/small.txt": b"small\n", "empty": b""}
    for name, body in files.items():
        (folder / name).write_bytes(body)
    _restic(dedup_file, restic, "backup", ".", cwd=folder)
    restic_id = json.loads(_restic(dedup_file, restic, "snapshots", "--json"))[-1]["id"]
    return dedup_file, files, restic_id


def _files_read(repository: Repository, restic_id: str) -> dict[str, bytes]:
    found, stack = {}, [(repository.snapshot(restic_id)["tree"], "")]
    while stack:
        tree, path = stack.pop()
        for node in repository.tree(tree):
            name = f"{path}{node['name']}"
            if node["type"] == "dir":
                stack.append((node["subtree"], f"{name}/"))
            elif node["type"] == "file":
                parts = []
                for chunk in node.get("content") or []:
                    where = repository.located([chunk])[chunk]
                    parts += [text for _, text in repository.read_pack(where.pack, [(chunk, where)])]
                found[name] = b"".join(parts)
    return found


def test_the_reader_gives_back_every_file_restic_wrote_byte_for_byte(backed_up):
    _, files, restic_id = backed_up
    repository = Repository.opened(store_from_url())
    assert repository.version == 2  # restic 0.14 compresses: the reader decompresses
    read = _files_read(repository, restic_id[:8])
    assert {name.removeprefix("src/"): body for name, body in read.items() if name.endswith(tuple(files))} == files
    everything = repository.located()  # every data blob of the repository, on two threads
    assert sum(blobs_read(repository, everything, threads=2)) == sum(w.plain_length for w in everything.values())


def test_the_reader_refuses_a_flipped_byte_a_renamed_file_and_a_missing_pack(backed_up):
    repository_path, _, restic_id = backed_up
    store = store_from_url()
    blob = first_blob_under(store, restic_id, "deep")
    pack, _ = flip_blob(store, blob, repository_path)
    repository = Repository.opened(store)
    with pytest.raises(Unread, match="does not open"):
        list(blobs_read(repository, [blob]))
    (repository_path / "data" / pack[:2] / pack).unlink()
    with pytest.raises(Unread, match="does not open"):
        list(blobs_read(Repository.opened(store), [blob]))
    index = next((repository_path / "index").iterdir())
    index.rename(index.with_name("0" * 64))
    with pytest.raises(Unread, match="does not hash to its name"):
        Repository.opened(store).located()


def _dump_by_hand(repository_path: Path, key: Path, restic_id: str) -> str:
    env = {"RESTIC_REPOSITORY": str(repository_path), "RESTIC_PASSWORD_FILE": str(key), "PATH": "/usr/bin:/bin"}
    dumped = subprocess.run(
        ["restic", "--no-cache", "dump", "--archive", "tar", restic_id, "/"], env=env, check=True, capture_output=True
    )
    return hashlib.sha256(dumped.stdout).hexdigest()


def _backed_up_again(repository_path: Path, key: Path, folder: Path) -> str:
    _restic(repository_path, key, "backup", ".", cwd=folder)
    return json.loads(_restic(repository_path, key, "snapshots", "--json"))[-1]["id"]


def test_new_inodes_and_change_times_are_the_same_files_and_restic_dumps_them_the_same(backed_up, restic):
    repository_path, files, first = backed_up
    folder = repository_path.parent / "src"
    # What a start does to a pod's files: written anew (new inodes, change and access times),
    # their modification times, modes and owners put back.
    subprocess.run(["cp", "-a", str(folder), f"{folder}.new"], check=True)
    subprocess.run(["rm", "-r", str(folder)], check=True)
    Path(f"{folder}.new").rename(folder)
    second = _backed_up_again(repository_path, restic, folder)
    repository = Repository.opened(store_from_url())
    assert repository.snapshot(second)["tree"] != repository.snapshot(first)["tree"]
    chunks = same_files._same_files(repository, second, first).chunks
    assert sum(where.plain_length for where in repository.located(chunks).values()) == sum(map(len, files.values()))
    assert _dump_by_hand(repository_path, restic, second) == _dump_by_hand(repository_path, restic, first)


@pytest.mark.parametrize(
    "change",
    [["chmod", "600", "large.bin"], ["chown", "1234:1234", "deep/er/small.txt"], ["touch", "-d", "2001-01-01", "deep"]],
    ids=["mode", "owner", "folder time"],
)
def test_a_mode_an_owner_or_a_time_changed_is_not_the_same_files_and_restic_dumps_it_otherwise(
    backed_up, restic, change
):
    repository_path, _, first = backed_up
    folder = repository_path.parent / "src"
    subprocess.run(change, cwd=folder, check=True)
    second = _backed_up_again(repository_path, restic, folder)
    with pytest.raises(Unread, match="differs from the parent's"):
        same_files._same_files(Repository.opened(store_from_url()), second, first)
    assert _dump_by_hand(repository_path, restic, second) != _dump_by_hand(repository_path, restic, first)


def test_without_a_working_key_the_stop_is_read_back_by_restics_dump_as_before(
    docker_client, new_pod_id, dedup_file, beside, settings
):
    pod_id, _ = pod_with_files(docker_client, new_pod_id, SCRIPT)
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    services.pod_start(pod_id=pod_id, actor="test")
    shown = listing(docker_client, pod_id)
    settings.SNAPSHOT_WORKING_KEY = False
    run_now(kind=Kind.POD_STOP, target_id=pod_id, actor="test")
    second = Snapshot.objects.filter(pod__pod_id=pod_id).latest("pk")
    assert second.status == Snapshot.Status.COMPLETE
    log = log_of(second)
    assert "read back with restic's dump instead: the panel has no working key for it" in log and PROVEN not in log
    assert {entry["sha256"] for entry in second.manifest.values()} == {_dump_sha256(second)[0]}
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == shown


def test_a_parents_file_list_that_is_not_what_the_trees_hold_leaves_the_stop_to_restic(
    docker_client, new_pod_id, dedup_file, beside, monkeypatch
):
    # The lists come from the parent's manifest in the store: one that lost a file (or says
    # another size) must not be recorded for the new snapshot.
    reading = same_files.parent_reading

    def one_file_fewer(**kwargs):
        read = reading(**kwargs)
        if read is not None:
            read["workspace"]["file_list"] = read["workspace"]["file_list"][1:]
        return read

    monkeypatch.setattr(same_files, "parent_reading", one_file_fewer)
    pod_id, first, second, shown = _stopped_started_stopped(docker_client, new_pod_id)
    log = log_of(second)
    assert "read back with restic's dump instead: the parent's list of workspace differs from the trees" in log
    assert {entry["sha256"] for entry in second.manifest.values()} == {_dump_sha256(second)[0]}
    assert second.manifest["workspace"]["files"] == first.manifest["workspace"]["files"]
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(docker_client, pod_id) == shown


def _flip_data_blob(store, repository_path: Path, blob: str) -> None:
    """Flip bytes inside the data blob `blob` (not a tree blob of the same id)."""
    for index_id in store.run("list", "index", "--no-lock", doing="test").split():
        for pack in json.loads(store.run("cat", "index", index_id, "--no-lock", doing="test"))["packs"]:
            for found in pack["blobs"]:
                if found["id"] == blob and found["type"] == "data":
                    path = repository_path / "data" / pack["id"][:2] / pack["id"]
                    data = bytearray(path.read_bytes())
                    data[found["offset"] + 20] ^= 0xFF
                    path.chmod(0o644)
                    path.write_bytes(bytes(data))
                    return
    raise AssertionError(f"no data blob {blob}")


def test_a_file_holding_an_empty_folders_tree_text_is_read_as_data(dedup_file, restic, tmp_path):
    # Every empty folder's tree is `{"nodes":[]}` and a newline: a file with those very bytes
    # has a data blob of the same id. Its content is the data blob, which is what is checked.
    folder = tmp_path / "src"
    (folder / "empty-folder").mkdir(parents=True)
    text = b'{"nodes":[]}\n'
    (folder / "looks-like-a-tree.json").write_bytes(text)
    restic_id = _backed_up_again(dedup_file, restic, folder)
    blob = hashlib.sha256(text).hexdigest()
    _flip_data_blob(store_from_url(), dedup_file, blob)
    _tree_entry_listed_first(dedup_file, blob)
    repository = Repository.opened(store_from_url())
    with pytest.raises(Unread, match="does not open"):
        list(blobs_read(repository, same_files._same_files(repository, restic_id, restic_id).chunks))


def _tree_entry_listed_first(repository_path: Path, blob: str) -> None:
    """An index file naming only the tree blob `blob`, written where a reader meets it before
    any other (index files are read in the order of their names, which are their sha256)."""
    store = store_from_url()
    keys = Repository.opened(store).keys
    for index_id in store.run("list", "index", "--no-lock", doing="test").split():
        for pack in json.loads(store.run("cat", "index", index_id, "--no-lock", doing="test"))["packs"]:
            tree = [found for found in pack["blobs"] if found["id"] == blob and found["type"] == "tree"]
            if tree:
                body = json.dumps({"packs": [{"id": pack["id"], "blobs": tree}]}).encode()
                first = min(path.name for path in (repository_path / "index").iterdir())
                while (name := hashlib.sha256(sealed := restic_crypto.seal(body, keys)).hexdigest()) >= first:
                    pass  # a new nonce, a new name: one in 16 starts with 0
                (repository_path / "index" / name).write_bytes(sealed)
                return
    raise AssertionError(f"no tree blob {blob}")


def test_the_walk_lists_each_file_as_restics_tar_does_whatever_its_name(dedup_file, restic, tmp_path):
    folder = tmp_path / "src"
    (folder / "top" / "sub").mkdir(parents=True)
    names = [b"back\\slash", b'q"uote', "nb\u00a0sp".encode(), b"bad\xfename", b"tab\tx", b"sub/plain.txt"]
    for size, name in enumerate(names):
        with open(os.fsencode(folder / "top") + b"/" + name, "wb") as made:
            made.write(b"x" * size)
    os.link(folder / "top" / "sub" / "plain.txt", folder / "top" / "hard-link")
    os.symlink("sub/plain.txt", folder / "top" / "symlink")
    os.mkfifo(folder / "top" / "fifo")
    restic_id = _backed_up_again(dedup_file, restic, folder)
    walked = same_files._same_files(Repository.opened(store_from_url()), restic_id, restic_id)
    dumped = subprocess.run(
        ["restic", "--no-cache", "dump", "--archive", "tar", restic_id, "/"],
        env={"RESTIC_REPOSITORY": str(dedup_file), "RESTIC_PASSWORD_FILE": str(restic), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    ).stdout
    files = TarFileList()
    files.feed(dumped)
    digest = hashlib.sha256()
    for entry in files.files:
        digest.update(same_files._listed(entry[0], entry[1]))
    assert len(files.files) == len(names) + 1  # the hard link is a file of its own in the tar
    assert [walked.folders["top"][0].digest(), *walked.folders["top"][1:]] == [
        digest.digest(),
        len(files.files),
        sum(entry[1] for entry in files.files),
    ]


def test_a_stop_superseded_while_its_trees_are_read_stops_there_and_is_not_read_by_restic(backed_up):
    _, _, restic_id = backed_up
    asked = []

    def superseded() -> str:
        asked.append(1)
        return "pod p is being deleted: this stop is not wanted any more"

    with pytest.raises(PanelError, match="not wanted any more"):
        same_files.proven_reading(
            store=store_from_url(),
            parent=Snapshot(pk=1, manifest={"workspace": {"store_id": restic_id}}),
            restic_id=restic_id,
            volumes=[],
            progress=Progress(None),
            superseded=superseded,
            operation=None,
            nearing=None,
            ask_every=0,
        )
    assert asked == [1]  # asked at the first tree, and not read on by restic's dump


def _lock_written(repository_path: Path, *, exclusive: bool) -> Path:
    """A lock file as restic writes one (sealed JSON, named by its sha256)."""
    body = json.dumps(
        {"time": "2026-12-08T00:00:00Z", "exclusive": exclusive, "hostname": "elsewhere", "pid": 1, "uid": 0, "gid": 0}
    ).encode()
    sealed = restic_crypto.seal(body, Repository.opened(store_from_url()).keys)
    path = repository_path / "locks" / hashlib.sha256(sealed).hexdigest()
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(sealed)
    return path


def test_the_reader_reads_nothing_under_a_prunes_lock_and_nothing_whose_index_changed(backed_up):
    # A prune copies the chunks still used into new packs, replaces the index, and only then
    # deletes the old packs: a chunk read in an old pack proves nothing of the new one.
    repository_path, _, restic_id = backed_up
    shared = _lock_written(repository_path, exclusive=False)
    repository = Repository.opened(store_from_url())
    repository.unchanged_since_read()  # another pod's backup: fine
    exclusive = _lock_written(repository_path, exclusive=True)
    with pytest.raises(Unread, match="an exclusive lock holds the repository"):
        repository.unchanged_since_read()
    exclusive.unlink()
    shared.unlink()
    walked = same_files._same_files(repository, restic_id, restic_id)
    repository.unchanged_since_read()
    index = next((repository_path / "index").iterdir())
    index.rename(index.with_name("f" * 64))  # what a prune's new index does to the old one
    with pytest.raises(Unread, match="index changed while it was read"):
        repository.unchanged_since_read()
    assert walked.chunks


def test_a_stop_whose_proof_meets_a_prunes_lock_is_left_to_restics_dump(backed_up, caplog):
    repository_path, _, restic_id = backed_up
    _lock_written(repository_path, exclusive=True)
    read = same_files.proven_reading(
        store=store_from_url(),
        parent=Snapshot(pk=1, manifest={"workspace": {"store_id": restic_id}}),
        restic_id=restic_id,
        volumes=[],
        progress=Progress(None),
        superseded=lambda: None,
        operation=None,
        nearing=None,
        ask_every=0,
    )
    assert read is None
    assert "read back with restic's dump instead: an exclusive lock holds the repository" in caplog.text

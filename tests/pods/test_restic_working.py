"""The working key of a dedup store's repository (`apps.pods.stores.restic_working`): made once
from SNAPSHOT_KEY_FILE, opened by the real restic 0.14 with `--key-hint`, found again by any
process, retired when the repository key it was derived for goes, never trusted unopened,
bounded against crafted key files, and never in the way: whatever fails, restic gets
SNAPSHOT_KEY_FILE as before."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import base64
import json
import logging
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from apps.pods.services.beside import helper_restic, helper_setup
from apps.pods.snapshots import store_from_url
from apps.pods.stores import restic_crypto, restic_raw, restic_working
from apps.pods.stores.base import StoreError
from apps.pods.stores.restic_crypto import Cost
from tests.e2e.test_any_hour_any_file import store  # noqa: F401 - a fixture: dedup+file, dedup+s3
from tests.parts import require_part
from tests.pods.test_dedup_locks import going_lock
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test starts as a new process would: nothing known about any working key."""
    restic_working._known.clear()
    yield
    restic_working._known.clear()


def key_files(store) -> dict[str, dict]:
    """The repository's key files that are JSON objects (a test's crafted ones are left out)."""
    found = {}
    for name in restic_raw.names(store, "keys"):
        try:
            body = json.loads(restic_raw.file_bytes(store, f"keys/{name}"))
        except ValueError:
            continue
        if isinstance(body, dict):
            found[name] = body
    return found


def working_ids(store) -> list[str]:
    return [name for name, body in key_files(store).items() if body.get("username") == restic_working.USER]


def restic_with(store, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(store.command(*args), env=env, capture_output=True, timeout=60, check=False)


def kept_files() -> list[Path]:
    return [path for path in restic_working._kept_folder().iterdir() if not path.name.endswith(".lock")]


def key_write(repository: Path, key_id: str, body: bytes) -> None:
    path = repository / "keys" / key_id
    if path.exists():
        path.chmod(0o600)
    path.write_bytes(body)


def test_the_working_key_is_made_once_opens_the_repository_alone_and_is_found_again(store, restic, settings):
    store = store_from_url()
    assert store.repository_ensure() == []
    (key_id,) = working_ids(store)
    body = key_files(store)[key_id]
    ((theirs_id, theirs),) = [(name, b) for name, b in key_files(store).items() if name != key_id]
    # restic opens it at the least cost; its password was derived at the repository key's own
    # cost or LEAST, whichever is more (the tests' repository key is itself a fast one).
    assert Cost.of(body) == restic_working.FAST
    derived = body[restic_working.DERIVED]
    assert Cost.of(derived) == max(restic_working.LEAST, Cost.of(theirs), key=lambda c: c.work)
    assert derived["for"] == theirs_id and body["hostname"] == restic_working.HOST

    env = store.env()
    assert env["RESTIC_KEY_HINT"] == key_id and "RESTIC_PASSWORD_FILE" not in env
    password = env["RESTIC_PASSWORD"].encode()
    assert password != restic.read_bytes().strip() and len(password) == 64
    # Nothing in the repository or in VAR_DIR gives the password away; it is kept in memory's
    # folder, for this user only.
    assert password not in restic_raw.file_bytes(store, f"keys/{key_id}")
    var = [path for path in Path(settings.VAR_DIR).rglob("*") if path.is_file()]
    assert not any(password in path.read_bytes() for path in var)
    (kept,) = kept_files()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(kept.parent.stat().st_mode) == 0o700

    # restic opens the repository with it, and with SNAPSHOT_KEY_FILE's key still; the password
    # opens only the working key, SNAPSHOT_KEY_FILE's key only the repository's own.
    assert restic_with(store, env, "cat", "config", "--no-lock").returncode == 0
    assert restic_with(store, store.env(working=False), "cat", "config", "--no-lock").returncode == 0
    with pytest.raises(ValueError):
        restic_crypto.key_file_open(theirs, password)
    with pytest.raises(ValueError):
        restic_crypto.key_file_open(body, restic.read_bytes().strip())

    # A new process finds it (kept in memory's folder), and with that gone, by opening the key
    # files: never a second one.
    restic_working._known.clear()
    assert restic_working.working(store).key_id == key_id
    kept.unlink()
    restic_working._known.clear()
    assert restic_working.working(store).key_id == key_id
    assert working_ids(store) == [key_id] and len(key_files(store)) == 2
    # The real restic lists both keys, whichever opens it, and names the one it opened with.
    for env, current in ((store.env(working=False), False), (store.env(), True)):
        listed = json.loads(restic_with(store, env, "key", "list", "--json").stdout)
        assert {key["id"] for key in listed} == {name[:8] for name in key_files(store)}
        (mine,) = [key for key in listed if key["userName"] == restic_working.USER]
        assert mine["id"] == key_id[:8] and mine["current"] is current


def repository_key_changed(restic: Path, tmp_path: Path):
    """(store, the working key made for the old repository key): the repository's key replaced
    with restic's own `key passwd`, SNAPSHOT_KEY_FILE following it."""
    store = store_from_url()
    store.repository_ensure()
    (old,) = working_ids(store)
    new_key = tmp_path / "new.key"
    new_key.write_text("the repository's new key")
    done = restic_with(store, store.env(working=False), "key", "passwd", "--new-password-file", str(new_key))
    assert done.returncode == 0, done.stderr
    restic.write_text(new_key.read_text())
    return store, old


def test_a_changed_repository_key_gets_a_new_working_key_and_the_old_one_is_retired(dedup_file, restic, tmp_path):
    store, old = repository_key_changed(restic, tmp_path)
    made = restic_working.working(store)
    assert made is not None and made.key_id != old
    # The old working key went (restic's own `key remove`): the old key opens nothing any more.
    assert working_ids(store) == [made.key_id] and len(key_files(store)) == 2
    assert restic_with(store, store.env(), "cat", "config", "--no-lock").returncode == 0
    assert restic_with(store, store.env(working=False), "cat", "config", "--no-lock").returncode == 0


def test_an_old_working_key_met_with_a_lock_going_is_retired_by_the_next_process(dedup_file, restic, tmp_path):
    """`restic key remove` takes the lock: one that meets a lock going (45-55 s, restic#4520)
    is stopped at once, and the old working key goes with the next process that opens the
    repository."""
    store, old = repository_key_changed(restic, tmp_path)
    going = going_lock(dedup_file)
    began = time.monotonic()
    made = restic_working.working(store)
    assert time.monotonic() - began < 15  # restic alone: 45-55 s
    assert made is not None and set(working_ids(store)) == {old, made.key_id}
    going.rmdir()
    restic_working._known.clear()  # the next process
    assert restic_working.working(store).key_id == made.key_id and working_ids(store) == [made.key_id]


def test_a_tampered_working_key_is_never_used(dedup_file, restic):
    store = store_from_url()
    store.repository_ensure()
    (old,) = working_ids(store)
    body = key_files(store)[old]
    data = bytearray(base64.b64decode(body["data"]))
    data[20] ^= 1  # one bit of the sealed master key
    body["data"] = base64.b64encode(bytes(data)).decode()
    key_write(dedup_file, old, json.dumps(body).encode())
    restic_working._known.clear()  # a new process

    made = restic_working.working(store)
    assert made is not None and made.key_id != old
    assert restic_with(store, store.env(), "cat", "config", "--no-lock").returncode == 0


def test_crafted_key_files_are_not_opened_and_a_marked_repository_key_is_never_removed(dedup_file, restic):
    """A key file asking days of scrypt, one too large, one that is not a key, and the
    repository's own key marked as a working key derived for a key that is gone at the least
    cost: none is opened, the marked key stays, and a working key is still made, at LEAST."""
    key_write(dedup_file, "a" * 64, json.dumps({"kdf": "scrypt", "N": 2**15, "r": 8, "p": 400_000}).encode())
    key_write(dedup_file, "b" * 64, b"{" + b" " * (restic_working.MOST_KEY_BYTES + 10) + b"}")
    key_write(dedup_file, "c" * 64, b"[1, 2, 3]")
    store = store_from_url()
    ((theirs_id, theirs),) = [(n, b) for n, b in key_files(store).items() if "data" in b]
    marked = {
        **theirs,
        "username": restic_working.USER,
        "hostname": restic_working.HOST,
        restic_working.DERIVED: {"N": 1024, "r": 8, "p": 1, "for": "f" * 64},
    }
    key_write(dedup_file, theirs_id, json.dumps(marked).encode())

    made = restic_working.working(store)
    assert made is not None
    assert Cost.of(json.loads((dedup_file / "keys" / made.key_id).read_bytes())[restic_working.DERIVED]).work >= (
        restic_working.LEAST.work
    )
    assert (dedup_file / "keys" / theirs_id).exists()
    assert restic_with(store, store.env(), "cat", "config", "--no-lock").returncode == 0


def test_a_working_key_that_cannot_be_written_leaves_restic_on_the_key_file_and_is_not_tried_again_at_once(
    dedup_file, restic, monkeypatch, caplog
):
    store = store_from_url()
    tries = []

    def full(*args):
        tries.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(restic_raw, "key_put", full)
    with caplog.at_level(logging.WARNING):
        assert store.repository_ensure() == []
        assert store.run("cat", "config", "--no-lock", doing="reading the config")
    env = store.env()
    assert env["RESTIC_PASSWORD_FILE"] == str(restic) and "RESTIC_KEY_HINT" not in env
    assert len(tries) == 1  # once, not before each restic
    assert working_ids(store) == [] and len(key_files(store)) == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "apps.pods.stores.restic_working"]
    assert "No space left on device" in warning and restic.read_text() not in warning


def test_a_working_key_removed_by_hand_costs_each_restic_one_retry_then_a_new_one_is_made(dedup_file, restic):
    store = store_from_url()
    store.repository_ensure()
    writer = store.writer("pods/p/1/home.tar")
    writer.write(b"the volume's bytes")
    writer.close()

    def removed_by_hand() -> str:
        (key_id,) = working_ids(store)
        assert store.env()["RESTIC_KEY_HINT"] == key_id  # this process still believes in it
        (dedup_file / "keys" / key_id).unlink()
        return key_id

    # A command, and a read (restic refused it before giving a byte), each run once more with
    # SNAPSHOT_KEY_FILE; the next restic finds none and a new one is made.
    old = removed_by_hand()
    assert store.run("cat", "config", "--no-lock", doing="reading the config")
    assert working_ids(store) == [] and store.env()["RESTIC_KEY_HINT"] not in {old}
    removed_by_hand()
    assert b"".join(store.read("pods/p/1/home.tar")) == b"the volume's bytes"
    made = restic_working.working(store)
    assert made is not None and working_ids(store) == [made.key_id]


def test_turned_off_no_working_key_is_made(dedup_file, restic, settings):
    settings.SNAPSHOT_WORKING_KEY = False
    store = store_from_url()
    assert store.repository_ensure() == []
    assert working_ids(store) == [] and store.env()["RESTIC_PASSWORD_FILE"] == str(restic)


def test_the_working_key_is_proven_without_a_lock_so_a_lock_going_holds_nothing_up(dedup_file, restic, settings):
    """restic 0.14's `key list` takes a lock whatever `--no-lock` says, and stalled a minute on a
    lock that went as it read it (restic/restic#4520): the proof reads the config, lockless."""
    settings.SNAPSHOT_WORKING_KEY = False
    store = store_from_url()
    assert store.repository_ensure() == []
    settings.SNAPSHOT_WORKING_KEY = True
    going = going_lock(dedup_file)
    began = time.monotonic()
    made = restic_working.working(store)
    assert time.monotonic() - began < 15  # with `key list`: 60 s, then no working key
    assert made is not None and working_ids(store) == [made.key_id] and going.exists()


def test_two_threads_and_a_second_process_share_one_working_key(dedup_file, restic):
    store = store_from_url()
    found = []
    threads = [threading.Thread(target=lambda: found.append(restic_working.working(store))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({working.key_id for working in found}) == 1 and len(working_ids(store)) == 1
    restic_working._known.clear()  # another process of this machine: waits on the machine's lock, finds it
    assert restic_working.working(store).key_id == found[0].key_id and len(working_ids(store)) == 1


@pytest.mark.docker
def test_the_helper_beside_the_volumes_gets_the_working_key_and_falls_back_when_it_is_gone(dedup_file, restic):
    from apps.pods.services.hosts import engine_for, host_default

    store = store_from_url()
    store.repository_ensure()
    engine = engine_for(host_default())
    env, secrets, _ = helper_setup(store, engine)
    made = restic_working.working(store)
    assert env["RESTIC_KEY_HINT"] == made.key_id
    assert secrets["key"] == made.password != restic.read_bytes()

    (dedup_file / "keys" / made.key_id).unlink()  # removed by hand, this process unaware
    result = helper_restic(
        store, engine, owner="working-key", operation=None, command=["cat", "config"], volumes={}, doing="a test"
    )
    assert result.exit_code == 0 and restic_working.working(store).key_id != made.key_id


def test_the_key_files_restic_calibrates_open_here_and_the_password_costs_as_much(restic, settings, tmp_path):
    """Against a key `restic init` made itself (its scrypt calibrated, not one of the tests'
    fast ones): opened here to the very master key restic prints; the working key's password
    is derived at that key's cost."""
    if shutil.which("restic") is None:
        require_part("restic", "no restic binary", "Install Debian's restic: apt-get install restic")
    settings.SNAPSHOT_STORE_URL = f"dedup+file://{tmp_path / 'calibrated'}"
    store = store_from_url()
    assert store.repository_ensure() == []
    (key_id,) = working_ids(store)
    (theirs,) = [body for name, body in key_files(store).items() if name != key_id]
    assert Cost.of(theirs).work > restic_working.FAST.work  # calibrated, not a test's fast key
    printed = restic_with(store, store.env(working=False), "cat", "masterkey", "--no-lock").stdout
    assert json.loads(restic_crypto.key_file_open(theirs, restic.read_bytes())) == json.loads(printed)
    derived = Cost.of(key_files(store)[key_id][restic_working.DERIVED])
    assert derived == max(restic_working.LEAST, Cost.of(theirs), key=lambda c: c.work)


def test_the_repository_key_dressed_as_a_retired_working_key_is_never_removed(dedup_file, restic):
    """The repository's own key dressed as a working key whose repository key is gone: no
    working key can be made (SNAPSHOT_KEY_FILE's key opens no other key), so nothing is retired
    (that comes only after a new working key is proven), and every restic gets SNAPSHOT_KEY_FILE."""
    store = store_from_url()
    ((theirs_id, theirs),) = key_files(store).items()
    marked = {
        **theirs,
        "username": restic_working.USER,
        "hostname": restic_working.HOST,
        restic_working.DERIVED: {**restic_working.LEAST.fields(), "for": "f" * 64},
    }
    key_write(dedup_file, theirs_id, json.dumps(marked).encode())

    assert store.repository_ensure() == []
    assert (dedup_file / "keys" / theirs_id).exists() and working_ids(store) == [theirs_id]
    assert store.env()["RESTIC_PASSWORD_FILE"] == str(restic)
    assert store.run("cat", "config", "--no-lock", doing="reading the config")


def test_a_copy_written_as_the_working_key_is_removed_fails_in_one_sentence_and_the_next_one_is_written(
    dedup_file, restic
):
    store = store_from_url()
    store.repository_ensure()
    (key_id,) = working_ids(store)
    (dedup_file / "keys" / key_id).unlink()  # removed by hand, this process unaware

    writer = store.writer("pods/p/1/home.tar")
    with pytest.raises(StoreError, match="no longer has the panel's working key") as refused:
        writer.write(b"the volume's bytes")
        writer.close()
    assert "\n" not in str(refused.value) and "try again" in str(refused.value)
    again = store.writer("pods/p/1/home.tar")
    again.write(b"the volume's bytes")
    again.close()
    assert b"".join(store.read("pods/p/1/home.tar")) == b"the volume's bytes"
    assert working_ids(store) and working_ids(store)[0] != key_id

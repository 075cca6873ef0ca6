"""The working key of a dedup store's repository (`apps.pods.stores.restic_working`): made once
from SNAPSHOT_KEY_FILE, opened by the real restic 0.14 with `--key-hint`, found again by any
process, replaced when the repository's key changes, never trusted unopened, and never in the
way: whatever fails, restic gets SNAPSHOT_KEY_FILE as before."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

import base64
import json
import logging
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from apps.pods.services.beside import helper_setup
from apps.pods.snapshots import store_from_url
from apps.pods.stores import restic_crypto, restic_raw, restic_working
from apps.pods.stores.restic_crypto import Cost
from tests.e2e.test_any_hour_any_file import store  # noqa: F401 - a fixture: dedup+file, dedup+s3
from tests.parts import require_part
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test starts as a new process would: nothing known about any working key."""
    restic_working._known.clear()
    yield
    restic_working._known.clear()


def key_files(store) -> dict[str, dict]:
    return {name: json.loads(restic_raw.file_bytes(store, f"keys/{name}")) for name in restic_raw.names(store, "keys")}


def working_ids(store) -> list[str]:
    return [name for name, body in key_files(store).items() if body.get("username") == restic_working.USER]


def restic_with(store, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(store.command(*args), env=env, capture_output=True, timeout=60, check=False)


def test_the_working_key_is_made_once_opens_the_repository_alone_and_is_found_again(store, restic, settings):
    store = store_from_url()
    assert store.repository_ensure() == []
    (key_id,) = working_ids(store)
    body = key_files(store)[key_id]
    (theirs,) = [b for name, b in key_files(store).items() if name != key_id]
    # restic opens it at the least cost; its password was derived at the repository's own cost.
    assert Cost.of(body) == restic_working.FAST
    assert Cost.of(body[restic_working.DERIVED]).work >= Cost.of(theirs).work
    assert body["hostname"] == restic_working.HOST

    env = store.env()
    assert env["RESTIC_KEY_HINT"] == key_id
    password_file = Path(env["RESTIC_PASSWORD_FILE"])
    assert password_file.parent == Path(settings.VAR_DIR) / "restic-working"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_bytes()
    assert password != restic.read_bytes() and len(password) == 64
    # Nothing in the repository gives the password away.
    assert password not in restic_raw.file_bytes(store, f"keys/{key_id}")

    # restic opens the repository with it, and so does SNAPSHOT_KEY_FILE's key still; the
    # password opens only the working key, SNAPSHOT_KEY_FILE's key only the repository's own.
    assert restic_with(store, env, "cat", "config", "--no-lock").returncode == 0
    assert restic_with(store, store.env(working=False), "cat", "config", "--no-lock").returncode == 0
    with pytest.raises(ValueError):
        restic_crypto.key_file_open(theirs, password)
    with pytest.raises(ValueError):
        restic_crypto.key_file_open(body, restic.read_bytes())

    # A new process finds it (the record in VAR_DIR), and with the record gone, by opening the
    # key files: never a second one.
    restic_working._known.clear()
    assert restic_working.working(store).key_id == key_id
    for leftover in password_file.parent.iterdir():
        leftover.unlink()
    restic_working._known.clear()
    assert restic_working.working(store).key_id == key_id
    assert working_ids(store) == [key_id] and len(key_files(store)) == 2
    # The real restic lists both keys, with SNAPSHOT_KEY_FILE's key as with the working one.
    for env, current in ((store.env(working=False), False), (store.env(), True)):
        listed = json.loads(restic_with(store, env, "key", "list", "--json").stdout)
        assert {key["id"] for key in listed} == {name[:8] for name in key_files(store)}
        (mine,) = [key for key in listed if key["userName"] == restic_working.USER]
        assert mine["id"] == key_id[:8] and mine["current"] is current


def test_a_changed_repository_key_gets_a_new_working_key_and_the_old_one_opens_nothing(dedup_file, restic, tmp_path):
    store = store_from_url()
    store.repository_ensure()
    (old,) = working_ids(store)
    new_key = tmp_path / "new.key"
    new_key.write_text("the repository's new key")
    done = restic_with(store, store.env(working=False), "key", "passwd", "--new-password-file", str(new_key))
    assert done.returncode == 0, done.stderr
    restic.write_text(new_key.read_text())  # SNAPSHOT_KEY_FILE follows

    made = restic_working.working(store)
    assert made is not None and made.key_id != old
    # The old working key went (restic's own `key remove`): the old key opens nothing any more.
    assert working_ids(store) == [made.key_id] and len(key_files(store)) == 2
    assert restic_with(store, store.env(), "cat", "config", "--no-lock").returncode == 0
    assert restic_with(store, store.env(working=False), "cat", "config", "--no-lock").returncode == 0


def test_a_tampered_working_key_is_never_used_and_goes(dedup_file, restic):
    store = store_from_url()
    store.repository_ensure()
    (old,) = working_ids(store)
    path = dedup_file / "keys" / old
    body = json.loads(path.read_bytes())
    data = bytearray(base64.b64decode(body["data"]))
    data[20] ^= 1  # one bit of the sealed master key
    body["data"] = base64.b64encode(bytes(data)).decode()
    path.chmod(0o600)
    path.write_text(json.dumps(body))
    for record in (Path(store.env(working=False)["RESTIC_CACHE_DIR"]).parent / "restic-working").iterdir():
        record.unlink()
    restic_working._known.clear()  # a new process

    made = restic_working.working(store)
    assert made is not None and made.key_id != old
    assert working_ids(store) == [made.key_id]
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


def test_a_working_key_removed_by_hand_costs_one_retry_with_the_key_file_then_a_new_one(dedup_file, restic):
    store = store_from_url()
    store.repository_ensure()
    (old,) = working_ids(store)
    (dedup_file / "keys" / old).unlink()

    # This process still believes in it: restic refuses it, and the command runs again with
    # SNAPSHOT_KEY_FILE; the next command finds none and makes a new one.
    assert store.run("cat", "config", "--no-lock", doing="reading the config")
    made = restic_working.working(store)
    assert made is not None and working_ids(store) == [made.key_id] and made.key_id != old


def test_turned_off_no_working_key_is_made(dedup_file, restic, settings):
    settings.SNAPSHOT_WORKING_KEY = False
    store = store_from_url()
    assert store.repository_ensure() == []
    assert working_ids(store) == [] and store.env()["RESTIC_PASSWORD_FILE"] == str(restic)


@pytest.mark.docker
def test_the_helper_beside_the_volumes_gets_the_working_key_not_the_repository_key(dedup_file, restic):
    from apps.pods.services.hosts import engine_for, host_default

    store = store_from_url()
    store.repository_ensure()
    env, secrets, _ = helper_setup(store, engine_for(host_default()))
    made = restic_working.working(store)
    assert env["RESTIC_KEY_HINT"] == made.key_id
    assert secrets["key"] == Path(made.password_file).read_bytes() != restic.read_bytes()


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
    assert Cost.of(key_files(store)[key_id][restic_working.DERIVED]) == Cost.of(theirs)

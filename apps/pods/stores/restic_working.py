"""The panel's working key: a second key of a dedup store's restic repository, one that restic
opens in a millisecond instead of half a second.

Every restic process derives its key before anything else: scrypt, at the cost `restic init`
calibrated to about half a second on the machine that made the repository (restic has no way
around it, by design: restic/restic#2525). A stop runs four restic processes, a start two,
each file read one. The cost is there to make each guess at a password slow; a password
nobody can guess does not need it.

So the panel adds a key of its own to the repository (restic keeps one master key under any
number of key files; `restic key list` shows this one as user `pinacle-panel`, host `panel`):

- **Its password** is 32 bytes derived from SNAPSHOT_KEY_FILE's key by scrypt, at the cost of
  the repository's own keys or more, salted by the working key's own random salt. Whoever has
  the store but not SNAPSHOT_KEY_FILE pays at least as much per guess as restic's own key makes
  them pay; every worker on every machine with SNAPSHOT_KEY_FILE finds the same password for
  the same working key. The cost it was derived with is written into the key file
  (`pinacle_derived`, which restic ignores). The derived password is kept beside the panel's
  other state, VAR_DIR/restic-working/ (0600), so that a process derives it at most once.
- **Its own scrypt cost** is the least restic accepts (N=1024, r=8, p=1): restic opens it in
  about a millisecond. restic is given it with `--key-hint` (RESTIC_KEY_HINT), so it tries
  that key first and no other.
- **Made** once per repository: `restic cat masterkey` (with SNAPSHOT_KEY_FILE), the master
  key sealed under the password as restic seals it (`restic_crypto`), written into `keys/`,
  then proven by a restic that opens the repository with it alone; a key restic cannot open is
  removed again and not used.
- **Found** by a later process: a `pinacle-panel` key in `keys/` whose sealed master key opens
  with the password derived for it, here, tag and all.
- When SNAPSHOT_KEY_FILE's key changes (`restic key passwd`), the old working key no longer
  opens with it: a new one is made and proven, then the old one removed (`restic key remove`,
  only keys this module wrote), so the old password opens nothing any more. No other key is
  ever touched.

Whatever fails here, restic is given SNAPSHOT_KEY_FILE, as before: the working key only saves
time, and a failure is tried again after RETRY_SECONDS. SNAPSHOT_WORKING_KEY=0 turns it off.
"""

import base64
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from apps.pods.stores import restic_crypto, restic_raw
from apps.pods.stores.restic_crypto import Cost

logger = logging.getLogger(__name__)

USER, HOST = "pinacle-panel", "panel"
FAST = Cost(1024, 8, 1)
# Never derive the password more cheaply than this, whatever the repository's own keys cost.
LEAST = Cost(1024, 8, 1)
DERIVED = "pinacle_derived"  # the key file's field: how its password was derived
RETRY_SECONDS = 600
PROOF_TIMEOUT_SECONDS = 60


class NoRepository(Exception):
    """No repository in the store yet."""


@dataclass(frozen=True)
class Working:
    key_id: str
    password_file: str


_lock = threading.RLock()  # `forget` is reached from inside `working` (a refused key while making one)
_known: dict[str, tuple[list, Working | None, float]] = {}  # repository → (key file stamp, key, when)


def working(store) -> Working | None:
    """The repository's working key, found or made; None when restic must be given
    SNAPSHOT_KEY_FILE (turned off, or the working key could not be found or made now)."""
    if not settings.SNAPSHOT_WORKING_KEY:
        return None
    try:
        stamp = restic_raw.key_file_stamp()
    except OSError:
        return None  # the store's own check says what is wrong with SNAPSHOT_KEY_FILE
    with _lock:
        seen = _known.get(store.repository)
        if seen and seen[0] == stamp and (seen[1] is not None or time.monotonic() - seen[2] < RETRY_SECONDS):
            return seen[1]
        try:
            found = _remembered(store, stamp) or _found_or_made(store, stamp)
        except NoRepository:
            return None  # made once `restic init` has made the repository
        except Exception as exc:  # only time is lost: restic gets SNAPSHOT_KEY_FILE
            logger.warning("snapshot store %s: no working key, each restic derives the key (%s)", store.url, exc)
            found = None
        _known[store.repository] = (stamp, found, time.monotonic())
        return found


def forget(store) -> None:
    """restic refused the working key (removed from the repository by hand): look again."""
    with _lock:
        _known.pop(store.repository, None)
        _record(store).with_suffix(".json").unlink(missing_ok=True)


def _record(store) -> Path:
    """VAR_DIR/restic-working/<repository's hash>: `.key` the password, `.json` which key."""
    name = hashlib.sha256(store.repository.encode()).hexdigest()[:32]
    return Path(settings.VAR_DIR) / "restic-working" / name


def _remembered(store, stamp: list) -> Working | None:
    record = _record(store)
    try:
        known = json.loads(record.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    if known.get("key_file") != stamp or known.get("key_id") not in restic_raw.names(store, "keys"):
        return None
    return Working(known["key_id"], str(record.with_suffix(".key")))


def _remember(store, stamp: list, key_id: str, password: bytes) -> Working:
    record = _record(store)
    record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for suffix, text in ((".key", password), (".json", json.dumps({"key_file": stamp, "key_id": key_id}).encode())):
        partial = record.with_suffix(f"{suffix}.{os.getpid()}")
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(text)
        partial.replace(record.with_suffix(suffix))
    return Working(key_id, str(record.with_suffix(".key")))


def _password(key: bytes, salt: bytes, cost: Cost) -> bytes:
    """The working key's password: what restic reads from a password file, as text."""
    return restic_crypto.scrypt(key, b"pinacle working key\0" + salt, cost, 32).hex().encode()


def _key_files(store) -> dict[str, dict]:
    found = {}
    for name in restic_raw.names(store, "keys"):
        try:
            found[name] = json.loads(restic_raw.file_bytes(store, f"keys/{name}") or b"")
        except ValueError:
            continue  # not a key file restic could read either
    return found


def _found_or_made(store, stamp: list) -> Working | None:
    key = Path(settings.SNAPSHOT_KEY_FILE).read_bytes().strip()  # as restic reads a password file
    files = _key_files(store)
    ours = {name: body for name, body in files.items() if isinstance(body.get(DERIVED), dict)}
    stale = []
    for key_id, body in ours.items():
        password = _password(key, base64.b64decode(body["salt"]), Cost.of(body[DERIVED]))
        try:
            restic_crypto.key_file_open(body, password)
        except ValueError:
            stale.append(key_id)
            continue
        return _remember(store, stamp, key_id, password)
    if restic_raw.file_bytes(store, "config") is None:
        raise NoRepository
    theirs = [Cost.of(body) for name, body in files.items() if name not in ours and "N" in body]
    made = _make(store, stamp, key, cost=max([LEAST, *theirs], key=lambda cost: cost.work))
    for key_id in stale:
        try:
            store.run("key", "remove", key_id, doing="removing a working key the key no longer opens", working=False)
        except Exception as exc:  # tried again by the next process that makes a working key
            logger.warning("snapshot store %s: old working key %s not removed (%s)", store.url, key_id[:8], exc)
        else:
            logger.info("snapshot store %s: removed working key %s (SNAPSHOT_KEY_FILE changed)", store.url, key_id[:8])
    return made


def _make(store, stamp: list, key: bytes, *, cost: Cost) -> Working:
    master = store.run("cat", "masterkey", "--no-lock", doing="reading the master key for a working key", working=False)
    master = json.dumps(json.loads(master), separators=(",", ":")).encode()
    salt = os.urandom(restic_crypto.SALT_BYTES)
    password = _password(key, salt, cost)
    body = restic_crypto.key_file_make(
        master, password, FAST, salt=salt, username=USER, hostname=HOST, **{DERIVED: cost.fields()}
    )
    key_id = hashlib.sha256(body).hexdigest()
    restic_raw.key_put(store, key_id, body)
    made = _remember(store, stamp, key_id, password)
    env = {**store.env(working=False), "RESTIC_PASSWORD_FILE": made.password_file, "RESTIC_KEY_HINT": key_id}
    proof = subprocess.run(
        store.command("cat", "config", "--no-lock"), env=env, capture_output=True, timeout=PROOF_TIMEOUT_SECONDS
    )
    if proof.returncode != 0:
        _record(store).with_suffix(".json").unlink(missing_ok=True)
        store.run("key", "remove", key_id, doing="removing a working key restic could not open", working=False)
        raise RuntimeError(f"restic could not open the repository with the new working key: {proof.stderr[-200:]!r}")
    logger.info("snapshot store %s: made working key %s", store.url, key_id[:8])
    return made

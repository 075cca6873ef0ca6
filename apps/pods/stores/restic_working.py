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
  the repository key that key opens and never below LEAST, salted by the working key's own
  random salt. Whoever has the store but not SNAPSHOT_KEY_FILE pays at least as much per guess
  as restic's own key makes them pay. The cost, and which repository key it was derived for,
  are written into the key file (`pinacle_derived`, which restic ignores).
- **Its own scrypt cost** is the least restic accepts (N=1024, r=8, p=1). restic is given it
  with `--key-hint` (RESTIC_KEY_HINT) and the password in its environment, never in a file.
- **Made** once per repository: SNAPSHOT_KEY_FILE's key opens a repository key here (as restic
  would), whose master key is sealed under the password the way restic seals it
  (`restic_crypto`), written into `keys/`, and used only once a restic, given it alone, says it
  is the key it opened the repository with. A key restic cannot open is deleted at once.
- **Found** by a later process: the password is kept per machine in a folder in memory
  (/dev/shm, mode 0700, gone at a reboot), never in VAR_DIR, so a copy of the panel's state
  holds no key to the store. Without it, a `pinacle-panel` key whose sealed master key opens
  with the password derived for it, here, tag and all.
- **Retired** once the repository key it was derived for is gone (`restic key passwd` replaces
  it): `restic key remove`, one attempt without waiting for a lock, tried again by the next
  process. Only keys shaped as this module writes them are ever removed.
- **Bounded**: a key file larger than MOST_KEY_BYTES, beyond the first MOST_KEYS, or asking
  more scrypt work than MOST_WORK is not opened (a crafted one must not take the worker's time).

Whatever fails here, restic is given SNAPSHOT_KEY_FILE, as before: the working key only saves
time, and a failure is tried again after RETRY_SECONDS. SNAPSHOT_WORKING_KEY=0 turns it off.
"""

import base64
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from apps.pods.stores import restic_crypto, restic_raw
from apps.pods.stores.restic_crypto import Cost
from apps.pods.stores.restic_stalls import watched

logger = logging.getLogger(__name__)

USER, HOST = "pinacle-panel", "panel"
FAST = Cost(1024, 8, 1)
LEAST = Cost(2**15, 8, 1)  # restic's own calibration never goes below this memory cost
MOST_WORK = 2**15 * 8 * 64  # 64 times LEAST: several seconds here
MOST_KEY_BYTES = 64 * 1024
MOST_KEYS = 20  # restic itself tries at most 20 keys
DERIVED = "pinacle_derived"  # the key file's field: the cost and the key the password is derived for
RETRY_SECONDS = 600
PROOF_TIMEOUT_SECONDS = 60
KEPT_IN = Path("/dev/shm")


class NoRepository(Exception):
    """No repository in the store yet."""


@dataclass(frozen=True)
class Working:
    key_id: str
    password: bytes = field(repr=False)


_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}
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
    with _guard:
        lock = _locks.setdefault(store.repository, threading.Lock())
    with lock:  # one repository's search never holds up another's
        seen = _known.get(store.repository)
        if seen and seen[0] == stamp and (seen[1] is not None or time.monotonic() - seen[2] < RETRY_SECONDS):
            return seen[1]
        try:
            with _machine_lock(store):
                found = _found_or_made(store, stamp)
        except NoRepository:
            return None  # made once `restic init` has made the repository
        except Exception as exc:  # only time is lost: restic gets SNAPSHOT_KEY_FILE
            logger.warning("snapshot store %s: no working key, each restic derives the key (%s)", store.url, exc)
            found = None
        _known[store.repository] = (stamp, found, time.monotonic())
        return found


def forget(store, key_id: str) -> None:
    """restic refused this working key (removed from the repository by hand): look again."""
    with _guard:
        seen = _known.get(store.repository)
        if seen and seen[1] is not None and seen[1].key_id == key_id:
            del _known[store.repository]
    if (path := _kept(store)) is not None:
        path.unlink(missing_ok=True)


# --- where the password is kept between processes -------------------------------------------


def _kept_folder(name: str = "restic") -> Path | None:
    """This user's folder in memory (`pinacle-<name>-<uid>`), made private; None where there is
    none to trust."""
    folder = KEPT_IN / f"pinacle-{name}-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(folder)
    except OSError:
        return None
    private = found.st_uid == os.getuid() and (found.st_mode & 0o777) == 0o700 and not os.path.islink(folder)
    return folder if private else None


def _kept(store) -> Path | None:
    """Where this machine keeps the repository's working key; None where it cannot."""
    folder = _kept_folder()
    return folder / hashlib.sha256(store.repository.encode()).hexdigest()[:32] if folder else None


def _kept_read(store, stamp: list) -> tuple[str, bytes] | None:
    path = _kept(store)
    if path is None:
        return None
    try:
        kept = json.loads(path.read_text())
        if kept["key_file"] != stamp:
            return None
        return kept["key_id"], kept["password"].encode()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep(store, stamp: list, found: Working) -> None:
    path = _kept(store)
    if path is None:
        return  # each process derives it once instead
    text = json.dumps({"key_file": stamp, "key_id": found.key_id, "password": found.password.decode()})
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(text)
        partial.replace(path)
    except OSError:
        partial.unlink(missing_ok=True)


@contextmanager
def _machine_lock(store):
    """One process of this machine at a time finds or makes a repository's working key."""
    path = _kept(store)
    if path is None:
        yield
        return
    with open(os.open(path.with_name(f"{path.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- the key files --------------------------------------------------------------------------


def _key_files(store) -> dict[str, dict]:
    """The repository's key files that may be opened here: parsed, bounded in size, number and
    scrypt work; anything else is left to restic."""
    found = {}
    for name in restic_raw.names(store, "keys")[:MOST_KEYS]:
        body = restic_raw.file_bytes(store, f"keys/{name}", most=MOST_KEY_BYTES)
        try:
            parsed = json.loads(body or b"")
            if isinstance(parsed, dict) and Cost.of(parsed).work <= MOST_WORK:
                found[name] = parsed
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _derived(body: dict) -> tuple[Cost, str] | None:
    """(cost, repository key id) of a key this module wrote; None for any other key."""
    derived = body.get(DERIVED)
    shaped = body.get("username") == USER and body.get("hostname") == HOST and isinstance(derived, dict)
    try:
        if shaped and Cost.of(body) == FAST and isinstance(derived.get("for"), str):
            cost = Cost.of(derived)
            if LEAST.work <= cost.work <= MOST_WORK:
                return cost, derived["for"]
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _password(key: bytes, salt: bytes, cost: Cost) -> bytes:
    """The working key's password: what restic is given, as text."""
    return restic_crypto.scrypt(key, b"pinacle working key\0" + salt, cost, 32).hex().encode()


def _opens(body: dict, password: bytes) -> bool:
    try:
        restic_crypto.key_file_open(body, password)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def _found_or_made(store, stamp: list) -> Working:
    files = _key_files(store)
    ours = {name: found for name, body in files.items() if (found := _derived(body))}
    found = _kept_found(store, stamp, files, ours)
    if found is None:
        found = _derived_found(files, ours) or _make(store, files, ours)
        _keep(store, stamp, found)
    _retire(store, files, ours)
    return found


def _kept_found(store, stamp: list, files: dict[str, dict], ours: dict[str, tuple[Cost, str]]) -> Working | None:
    """The working key this machine kept, if it is still in the repository and still opens."""
    kept = _kept_read(store, stamp)
    if kept and kept[0] in ours and ours[kept[0]][1] in files and _opens(files[kept[0]], kept[1]):
        return Working(*kept)
    return None


def _derived_found(files: dict[str, dict], ours: dict[str, tuple[Cost, str]]) -> Working | None:
    """A working key in the repository whose password SNAPSHOT_KEY_FILE's key derives."""
    key = _key()
    for key_id, (cost, derived_for) in ours.items():
        if derived_for not in files:
            continue  # retired
        password = _password(key, base64.b64decode(files[key_id]["salt"]), cost)
        if _opens(files[key_id], password):
            return Working(key_id, password)
    return None


def _key() -> bytes:
    return Path(settings.SNAPSHOT_KEY_FILE).read_bytes().strip()  # as restic reads a password file


def _opened(key: bytes, theirs: dict[str, dict]) -> tuple[str, bytes]:
    """(id, master key) of the first repository key SNAPSHOT_KEY_FILE's key opens, as restic
    would open it."""
    for key_id, body in theirs.items():
        try:
            return key_id, restic_crypto.key_file_open(body, key)
        except (ValueError, KeyError, TypeError):
            continue
    raise RuntimeError("SNAPSHOT_KEY_FILE's key opens none of the repository's keys here")


def _make(store, files: dict[str, dict], ours: dict[str, tuple[Cost, str]]) -> Working:
    if restic_raw.file_bytes(store, "config") is None:
        raise NoRepository
    key = _key()
    theirs = {name: body for name, body in files.items() if name not in ours}
    derived_for, master = _opened(key, theirs)
    cost = max(LEAST, Cost.of(theirs[derived_for]), key=lambda c: c.work)
    salt = os.urandom(restic_crypto.SALT_BYTES)
    password = _password(key, salt, cost)
    body = restic_crypto.key_file_make(
        master,
        password,
        FAST,
        salt=salt,
        username=USER,
        hostname=HOST,
        **{DERIVED: {**cost.fields(), "for": derived_for}},
    )
    made = Working(hashlib.sha256(body).hexdigest(), password)
    restic_raw.key_put(store, made.key_id, body)
    try:
        _prove(store, made)
    except BaseException:
        restic_raw.key_delete(store, made.key_id)  # never used: restic could not open with it
        raise
    logger.info("snapshot store %s: made working key %s", store.url, made.key_id[:8])
    return made


def _prove(store, made: Working) -> None:
    """restic, given the working key alone, opens the repository with it (no other key opens
    with its random password) and reads the repository's config, taking no lock: restic 0.14's
    `key list` locks whatever `--no-lock` says, and a lock that went as it read it held it up
    for a minute (restic/restic#4520)."""
    env = {**store.env(working=False), "RESTIC_KEY_HINT": made.key_id, "RESTIC_PASSWORD": made.password.decode()}
    env.pop("RESTIC_PASSWORD_FILE")
    try:
        done = subprocess.run(
            store.command("cat", "--no-lock", "config"),
            env=env,
            capture_output=True,
            timeout=PROOF_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"restic did not open the repository with the new working key within {PROOF_TIMEOUT_SECONDS} s"
        ) from None
    try:
        opened = bool(json.loads(done.stdout).get("id"))
    except (ValueError, TypeError, AttributeError):
        opened = False
    if done.returncode != 0 or not opened:
        told = " ".join(done.stderr.decode(errors="replace").split())[-200:]
        raise RuntimeError(f"restic did not open the repository with the new working key: {told or 'no config read'}")


def _retire(store, files: dict[str, dict], ours: dict[str, tuple[Cost, str]]) -> None:
    """Remove the working keys whose repository key is gone: the password it was derived from
    no longer opens the repository, so nothing derived from it may. One attempt each, no wait."""
    for key_id, (_, derived_for) in ours.items():
        if derived_for in files:
            continue
        # A restic that stalls on a lock going (45-55 s, restic/restic#4520) is stopped: the
        # next process that opens the repository tries again.
        try:
            done = watched(
                store.command("key", "remove", key_id), env=store.env(working=False), timeout=PROOF_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            logger.warning("snapshot store %s: old working key %s not removed yet (no answer)", store.url, key_id[:8])
            continue
        if done.stalled:
            logger.info("snapshot store %s: old working key %s not removed yet (a lock going)", store.url, key_id[:8])
        elif done.returncode == 0:
            logger.info("snapshot store %s: removed working key %s (its repository key is gone)", store.url, key_id[:8])
        else:
            told = " ".join(done.stderr.split())[-200:]
            logger.warning("snapshot store %s: old working key %s not removed yet (%s)", store.url, key_id[:8], told)

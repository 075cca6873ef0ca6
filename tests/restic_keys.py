"""Tests only: give a restic repository a key that derives in microseconds.

`restic init` calibrates scrypt to about half a second of CPU, and every restic process pays it
again when it opens the repository: hundreds of processes per suite run. The same master key,
wrapped again under scrypt N=1024 (restic's own tests use weaker), opens the repository the same
way; restic reads the parameters from the key file. Never used outside tests.

Also restic's locks as a killed restic leaves them, or as a prune at work holds the repository."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from apps.pods.stores.restic_crypto import Cost, derive, key_file_open, master_keys, seal

FAST = Cost(1024, 8, 1)


def restic_key_make_fast(repository: Path, password: str) -> None:
    """Replace the repository's only key by one with the same master key and fast parameters."""
    (old,) = list((repository / "keys").iterdir())
    key = json.loads(old.read_bytes())
    master = key_file_open(key, password.encode())
    salt = os.urandom(64)
    key.update(FAST.fields(), salt=base64.b64encode(salt).decode())
    key["data"] = base64.b64encode(seal(master, derive(password.encode(), salt, FAST))).decode()
    body = json.dumps(key).encode()
    new = repository / "keys" / hashlib.sha256(body).hexdigest()
    new.write_bytes(body)
    new.chmod(old.stat().st_mode)
    old.unlink()


def _master(repository: Path, password: str) -> bytes:
    """The master key, out of whichever key file `password` opens (the panel's working key is
    another)."""
    for key_file in (repository / "keys").iterdir():
        try:
            return key_file_open(json.loads(key_file.read_bytes()), password.encode())
        except ValueError:
            continue
    raise ValueError(f"no key of {repository} opens with this password")


def restic_lock_write(
    repository: Path, password: str, *, pid: int, hostname: str, exclusive: bool = True, written: str | None = None
) -> str:
    """Write a lock into a repository as restic 0.14 would (its JSON sealed with the master key,
    named by the sha256 of what is stored), for a restic that is gone: what a prune killed with
    SIGKILL leaves behind (`written`: restic's time, for a lock a live restic would hold).
    Returns the lock's id."""
    keys = master_keys(_master(repository, password))
    lock = {
        "time": written or "2026-01-01T00:00:00.000000000Z",
        "exclusive": exclusive,
        "hostname": hostname,
        "username": "root",
        "pid": pid,
        "uid": 0,
        "gid": 0,
    }
    sealed = seal(json.dumps(lock).encode(), keys)
    lock_id = hashlib.sha256(sealed).hexdigest()
    (repository / "locks").mkdir(exist_ok=True)
    (repository / "locks" / lock_id).write_bytes(sealed)
    return lock_id


@contextmanager
def prune_at_work(store, repository: Path, password: str) -> Iterator[Callable[[], None]]:
    """What a prune holding the repository looks like to the panel: an exclusive lock whose
    restic (a live `restic backup --stdin` here) still runs. Yields a function that ends it."""
    before = len(list((repository / "locks").iterdir()))
    holder = subprocess.Popen(
        store.command("backup", "--stdin", "--host", "elsewhere"), stdin=subprocess.PIPE, env=store.env()
    )
    deadline = time.monotonic() + 60
    while len(list((repository / "locks").iterdir())) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # its own lock first: it would not start beside an exclusive one
    time.sleep(1)  # restic 0.14 looks at the other locks again 200 ms after writing its own
    written = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    lock_id = restic_lock_write(repository, password, pid=holder.pid, hostname=socket.gethostname(), written=written)

    assert holder.poll() is None

    def end() -> None:
        (repository / "locks" / lock_id).unlink(missing_ok=True)
        if holder.poll() is None:
            holder.communicate(b"", timeout=60)

    try:
        yield end
    finally:
        end()

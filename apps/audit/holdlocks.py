"""The lock a hold's write and a deletion share, so a hold that answered "set" is never
followed by a deletion of what it holds.

A deletion takes the lock of each thing it is about to delete, reads the holds, and deletes
(or keeps) while it still has the lock; `hold_set` takes the same lock to write its hold.
Whichever comes second waits: a hold written first is seen by the deletion, and a hold asked
for while its item is being deleted is written only once the item is gone. A removal that
reaches whatever lies inside a folder takes the wide lock, which every hold write takes
shared: no hold of any kind is written while it looks and removes.

PostgreSQL: advisory locks (every process on every host). SQLite (one host): `flock` on
striped files under VAR_DIR/locks/holds. SQLite begins each transaction IMMEDIATE, so the
holds read inside one are read only once no other write is open: a hold written inside a
caller's longer transaction (the admin's) is seen once that commits.
"""

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

from controlpanel.errors import Busy

WIDE = ("*", "*")
# Lock files on SQLite: a bounded set, so two items may share one (and wait for each other).
STRIPES = 256
POLL_SECONDS = 0.02
# A hold write waits this long for a deletion of its item; less than SQLite's own 20 s, so
# a hold written inside an open transaction gives up before a deletion's writes would.
HOLD_WAIT_SECONDS = 10.0
# A deletion waits this long for hold writes in flight (each takes milliseconds).
DELETE_WAIT_SECONDS = 60.0

_taken = threading.local()


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _key(target: tuple[str, str]) -> int:
    text = f"{target[0]}\x00{target[1]}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def _lock_ids(targets: Iterable[tuple[str, str]]) -> list[int | str]:
    """One id per lock, sorted: everyone takes them in the same order and none waits in a circle."""
    if _postgres():
        return sorted({_key((str(kind), str(ident))) for kind, ident in targets})
    return sorted({f"{_key((str(kind), str(ident))) % STRIPES:03d}" for kind, ident in targets})


def _wide_id() -> int | str:
    return _key(WIDE) if _postgres() else "wide"


def _wait(try_once, *, wait: float, busy: str) -> None:
    deadline = time.monotonic() + wait
    while not try_once():
        if time.monotonic() >= deadline:
            raise Busy(busy)
        time.sleep(POLL_SECONDS)


def _pg_try(function: str, key: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [key])
        return bool(cursor.fetchone()[0])


@contextmanager
def _session_lock(lock_id: int | str, *, shared: bool, wait: float, busy: str) -> Iterator[None]:
    """Held until the block ends, whatever the transactions inside it do. Taken again by the
    same thread (a pod delete purging its own snapshots) it is counted, not waited for."""
    taken = _taken.__dict__.setdefault("counts", {})
    if lock_id in taken:
        taken[lock_id] += 1
        try:
            yield
        finally:
            taken[lock_id] -= 1
        return
    if _postgres():
        suffix = "_shared" if shared else ""
        _wait(lambda: _pg_try(f"pg_try_advisory_lock{suffix}", lock_id), wait=wait, busy=busy)
        release = lambda: _pg_try(f"pg_advisory_unlock{suffix}", lock_id)  # noqa: E731
    else:
        folder = Path(settings.VAR_DIR) / "locks" / "holds"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{lock_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB

        def try_once() -> bool:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                return False
            return True

        try:
            _wait(try_once, wait=wait, busy=busy)
        except BaseException:
            os.close(fd)
            raise
        release = lambda: os.close(fd)  # noqa: E731  (closing the file lets the flock go)
    taken[lock_id] = 1
    try:
        yield
    finally:
        del taken[lock_id]
        release()


@contextmanager
def deletion_locked(targets: Iterable[tuple[str, str]], *, busy: str) -> Iterator[None]:
    """Each target's lock, exclusively, for as long as its deletion runs; then a transaction
    begun and ended, so (SQLite) no hold written in a transaction still open goes unseen."""
    with ExitStack() as stack:
        for lock_id in _lock_ids(targets):
            stack.enter_context(_session_lock(lock_id, shared=False, wait=DELETE_WAIT_SECONDS, busy=busy))
        with transaction.atomic():
            pass
        yield


@contextmanager
def wide_locked(*, busy: str) -> Iterator[None]:
    """No hold of any kind is written while the block runs."""
    with _session_lock(_wide_id(), shared=False, wait=DELETE_WAIT_SECONDS, busy=busy):
        with transaction.atomic():
            pass
        yield


@contextmanager
def hold_write_locked(target: tuple[str, str], *, busy: str) -> Iterator[None]:
    """A transaction for one hold's write, under the wide lock (shared) and its target's lock.

    PostgreSQL keeps them until the outermost transaction commits (a hold written inside the
    admin's transaction is not visible before). SQLite takes them before the transaction
    begins: a deletion holding one may still write its progress meanwhile."""
    (target_id,) = _lock_ids([target])
    if _postgres():
        with transaction.atomic():
            _wait(lambda: _pg_try("pg_try_advisory_xact_lock_shared", _wide_id()), wait=HOLD_WAIT_SECONDS, busy=busy)
            _wait(lambda: _pg_try("pg_try_advisory_xact_lock", target_id), wait=HOLD_WAIT_SECONDS, busy=busy)
            yield
        return
    with (
        _session_lock(_wide_id(), shared=True, wait=HOLD_WAIT_SECONDS, busy=busy),
        _session_lock(target_id, shared=False, wait=HOLD_WAIT_SECONDS, busy=busy),
        transaction.atomic(),
    ):
        yield

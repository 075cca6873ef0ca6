"""Restic's repository locks: who holds one, and whether the restic that wrote it still runs.

restic 0.14 writes a lock file for each command (exclusive for forget and prune, shared for
backup and dump) and removes it when it ends, or when it is stopped with SIGINT. A restic
killed otherwise (SIGKILL with its worker, SIGPIPE when its reader let go of the pipe, SIGTERM,
which 0.14 does not catch) leaves its lock behind, and restic never skips one: every forget and
prune after it fails with "repository is already locked", retried or not.

`restic unlock` removes the locks restic calls stale (`Lock.Stale`): not rewritten for 30
minutes (a running restic rewrites its lock every 5), or written on this host by a PID that
does not accept a SIGHUP. That second test signals whatever process has the PID now (most
processes die of a SIGHUP) and takes a zombie for a live restic, so we judge the same two rules
by reading /proc instead: the PID must still be a restic, not a zombie, started before it wrote
the lock. Like restic we take a host name for one machine: workers that share a host name
(containers on the host's network) must share their PID namespace too.
"""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings

from apps.pods.stores import restic_working
from apps.pods.stores.base import StoreError
from apps.pods.stores.restic_messages import refused_working
from apps.pods.stores.restic_stalls import INTERRUPT_WAIT_SECONDS, watched
from controlpanel.errors import PanelError
from controlpanel.s3 import s3_client, s3_error

logger = logging.getLogger(__name__)

# restic's StaleLockTimeout: a lock not rewritten for this long has no restic behind it anywhere.
STALE_AFTER = timedelta(minutes=30)
_HOLDER = re.compile(
    r"already locked (?P<exclusive>exclusively )?by PID (?P<pid>\d+) on (?P<host>\S+) by (?P<user>\S+)"
    r".*?lock was created at (?P<at>[\d-]+ [\d:]+) \((?P<age>[^()]*) ago\)",
    re.DOTALL,
)
_STORAGE_ID = re.compile(r"storage ID ([0-9a-f]+)")
# How long reading one lock may take.
COMMAND_SECONDS = 60


@dataclass(frozen=True)
class ResticLock:
    lock_id: str
    pid: int
    hostname: str
    username: str
    exclusive: bool
    written_at: datetime

    @classmethod
    def parse(cls, lock_id: str, text: str) -> "ResticLock":
        """`restic cat lock ID` → a lock; ValueError for one half written."""
        body = json.loads(text)
        return cls(
            lock_id=lock_id,
            pid=int(body["pid"]),
            hostname=str(body.get("hostname", "")),
            username=str(body.get("username", "")),
            exclusive=bool(body.get("exclusive")),
            written_at=datetime.fromisoformat(body["time"]),
        )

    @property
    def here(self) -> bool:
        return self.hostname == socket.gethostname()

    def gone(self) -> bool:
        """No restic holds it any more: restic's own rule, judged without a signal."""
        if datetime.now(UTC) - self.written_at > STALE_AFTER:
            return True
        return self.here and not _restic_running(self.pid, self.written_at)

    def describe(self) -> str:
        age = int((datetime.now(UTC) - self.written_at).total_seconds())
        return _holder_sentence(self.pid, self.hostname, self.username, self.exclusive, f"{age} s")


def holder(stderr: str) -> str:
    """Who holds the lock restic met, as its error tells it ("" when it does not say)."""
    found = _HOLDER.search(stderr)
    if found is None:
        return ""
    age = re.sub(r"(\d+)\.\d+(m?s)", r"\1\2", found["age"])
    return _holder_sentence(int(found["pid"]), found["host"], found["user"], bool(found["exclusive"]), age)


def _holder_sentence(pid: int, host: str, user: str, exclusive: bool, age: str) -> str:
    """ "restic PID 42 on vm (`restic prune`), user root, an exclusive lock written 3 s ago"."""
    command = _command(pid) if host == socket.gethostname() else ""
    return (
        f"restic PID {pid} on {host}"
        + (f" (`{command}`)" if command else "")
        + f", user {user}, {'an exclusive' if exclusive else 'a shared'} lock written {age} ago"
    )


def storage_id(stderr: str) -> str:
    """The (short) id of the lock restic met."""
    found = _STORAGE_ID.search(stderr)
    return found[1] if found else ""


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _restic_running(pid: int, since: datetime) -> bool:
    """Whether `pid` on this machine is the restic that wrote a lock at `since`."""
    if not Path("/proc/self/stat").exists():  # no /proc to read: never take a lock for dead
        return True
    folder = Path(f"/proc/{pid}")
    try:
        stat = (folder / "stat").read_text()
        argv0 = (folder / "cmdline").read_bytes().split(b"\0")[0]
        booted = _boot_time()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # there, but not ours to read (another user, hidepid): assume it runs
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:  # exited, not yet waited for: it will never remove its lock
        return False
    if Path(argv0.decode(errors="replace")).name != "restic":  # the PID went to another program
        return False
    started = booted + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    # A restic started after the lock was written took over the PID of the one that wrote it.
    return started <= since.timestamp() + 1


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    if not words or Path(words[0]).name != "restic":
        return ""
    return " ".join(["restic", *[w for w in words[1:4] if w]])[:80]


class RepositoryLocked(StoreError):
    """restic met another restic's lock."""


class RepositoryLocks:
    """The lock handling of `DedupStore` (which provides `run`, `command`, `env`, `url`, `path`,
    `bucket`, `prefix`)."""

    def locked_error(self, holder: str, doing: str) -> StoreError:
        return RepositoryLocked(
            f"snapshot store {self.url} is locked by {holder} while {doing}; it is free again when that "
            "restic ends (a lock whose restic is gone is removed on the next try: at once if it ran on "
            f"this host, {socket.gethostname()}, after 30 minutes if elsewhere)"
        )

    def locks(self) -> list[ResticLock]:
        """The repository's locks, read without taking one."""
        found = []
        for lock_id in self.run("list", "locks", "--no-lock", doing="listing locks").split():
            try:
                found.append(ResticLock.parse(lock_id, self._lock_read(lock_id)))
            except (StoreError, ValueError, KeyError):  # gone meanwhile, or half written
                continue
        return found

    def _lock_read(self, lock_id: str) -> str:
        """One lock's JSON; a lock gone since the listing raises StoreError at once, where
        restic 0.14 would retry reading it for 45-55 s (it took no lock: killed, it leaves none)."""
        for working in (True, False):  # the working key removed meanwhile: once more without it
            env = self.env(working=working)
            command = self.command("cat", "lock", lock_id, "--no-lock")
            try:
                ran = watched(command, env=env, timeout=COMMAND_SECONDS, stop=signal.SIGKILL)
            except subprocess.TimeoutExpired as exc:
                raise StoreError(f"lock {lock_id[:8]} did not read within {COMMAND_SECONDS} s") from exc
            if ran.returncode == 0 and not ran.stalled:
                return ran.stdout.decode(errors="replace")
            if not (working and refused_working(env, ran.stderr)):
                break
            restic_working.forget(self, env["RESTIC_KEY_HINT"])
        raise StoreError(f"lock {lock_id[:8]} did not read: {ran.stderr.strip()[-200:]}")

    def locks_clear(self) -> list[ResticLock]:
        """Remove the locks no restic holds any more (see `restic_locks`), not `restic unlock`,
        which signals the PIDs it finds; returns the live ones."""
        live = []
        for lock in self.locks():
            if not lock.gone():
                live.append(lock)
                continue
            logger.warning(
                "snapshot store %s: removing the lock of %s, whose restic is gone", self.url, lock.describe()
            )
            self._lock_delete(lock.lock_id)
        return live

    def exclusive_wait(self, *, what: str) -> None:
        """Dead restics' locks removed, a live prune's waited out (SNAPSHOT_LOCK_WAIT_SECONDS):
        before an operation whose restics take the lock and would fail on an exclusive one."""
        deadline = time.monotonic() + settings.SNAPSHOT_LOCK_WAIT_SECONDS
        while held := [lock for lock in self.locks_clear() if lock.exclusive]:
            if time.monotonic() > deadline:
                raise RepositoryLocked(
                    f"snapshot store {self.url} is held by {held[0].describe()}; {what} was not started: "
                    "try again when that restic ends"
                )
            time.sleep(1)

    def reader_stop(self, process: subprocess.Popen) -> None:
        """A `restic dump` let go of before its end (a volume found corrupt, a read-ahead not
        needed) stops the way restic removes its lock, on SIGINT: closing its pipe would kill it
        with SIGPIPE, lock left behind, and every forget and prune after it would fail."""
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=INTERRUPT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode < 0:  # killed before it could remove its lock
            self.own_lock_remove(process.pid)

    def own_lock_remove(self, pid: int | None, *, hostname: str | None = None) -> None:
        """Remove the lock a restic process of ours (`pid`, exited; on this machine, or on the
        Docker host named `hostname`) left behind, and only that one, at once (`locks_clear`
        would find it too, when a command meets it)."""
        hostname = socket.gethostname() if hostname is None else hostname
        if pid is None:
            return
        try:
            for lock in self.locks():
                if lock.pid == pid and lock.hostname == hostname:
                    self._lock_delete(lock.lock_id)
        except PanelError:
            pass  # the store is failing: the command that meets the lock says so

    def _lock_delete(self, lock_id: str) -> None:
        if self.path is not None:
            (self.path / "locks" / lock_id).unlink(missing_ok=True)
            return
        key = f"{self.prefix}/locks/{lock_id}" if self.prefix else f"locks/{lock_id}"
        try:
            s3_client().delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise s3_error(exc, where=f"snapshot store {self.url}", what=key) from exc

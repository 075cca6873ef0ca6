"""A dedup store's object writer: one `restic backup --stdin` per object, tagged with its key
and made under the host name `panel` (`HOST`), so any worker finds it.

restic 0.14 may stall 45-55 s as it takes its lock, retrying the read of a lock that went
(restic/restic#4520; `restic_stalls.StallWatch`). It reads its input only once it holds the
lock, so until it has taken more than its pipe holds, everything written is kept: a restic
that says it stalls is stopped, and a new one is given it all again from the start."""

import fcntl
import json
import signal
import subprocess
import tempfile

from apps.pods.stores.base import ObjectWriter, StoreError
from apps.pods.stores.restic_stalls import STALL_RESTARTS, StallWatch

HOST = "panel"
PIPE_BYTES = 64 * 1024  # a pipe's size when the system does not say


class ResticWriter(ObjectWriter):
    """`restic backup --stdin` fed chunk by chunk; its output goes to a file, and its stderr to
    a thread that reads it as it comes, so a chatty restic can never block on a pipe nobody reads."""

    def __init__(self, store, key: str):
        self.store, self.key = store, key
        self.written = 0
        self.stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/abort()
        name = key.rsplit("/", 1)[-1]
        self.command = [*store.command("backup"), "--stdin", "--stdin-filename", name, "--tag", key]
        self.command += ["--host", HOST, "--json", "--quiet"]
        self.env = store.env()
        self.hint = self.env.get("RESTIC_KEY_HINT")  # the working key it was given, if any (no secret kept)
        self.held: list[bytes] | None = []  # written, and maybe not read yet by a restic without its lock
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.stdout.seek(0)
        self.stdout.truncate()
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=self.stdout, stderr=subprocess.PIPE, env=self.env
        )
        # The last restic allowed is left to wait a lock out, as restic alone would.
        self.watch = StallWatch(self.process, armed=self.restarts < STALL_RESTARTS)
        try:
            self.pipe_bytes = fcntl.fcntl(self.process.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        except OSError:
            self.pipe_bytes = PIPE_BYTES

    def _restarted(self) -> bool:
        """A restic stalled on its lock (before it read anything): stopped, its lock removed, and
        a new one started and given everything written so far; one that stalls as well while it
        is given it is replaced in turn. False when it did not stall (or the restarts ran out)."""
        while True:
            self.process.wait()
            if not (self.watch.stalled and self.held is not None and self.restarts < STALL_RESTARTS):
                return False
            self.restarts += 1
            self.watch.told()
            try:
                self.process.stdin.close()  # it has exited: no end of input reaches it
            except OSError:
                pass
            self.store.own_lock_remove(self.process.pid)
            self._start()
            try:
                for chunk in self.held:
                    self.process.stdin.write(chunk)
                self.process.stdin.flush()
                return True
            except OSError:
                continue  # it exited as well: why is looked at from the top

    def _put(self, chunk: bytes) -> None:
        while True:
            try:
                self.process.stdin.write(chunk)
                self.process.stdin.flush()  # in the pipe: what restic has read is then known
                return
            except OSError as exc:  # restic exited: stalled on its lock, or its stderr says why
                if not self._restarted():
                    raise self._failure() from exc

    def _failure(self) -> StoreError:
        self.process.wait()
        return self.store.error(f"writing {self.key}", self.watch.told(), self.written, hint=self.hint)

    def write(self, chunk: bytes) -> None:
        self._put(chunk)
        self.written += len(chunk)
        if self.held is not None:
            self.held.append(chunk)
            if self.written > self.pipe_bytes:  # restic has read some: it holds its lock
                self.held, self.watch.given = None, True

    def close(self) -> None:
        while True:
            try:
                self.process.stdin.close()
            except OSError as exc:
                if self._restarted():
                    continue
                raise self._failure() from exc
            if self.process.wait() == 0:
                break
            if not self._restarted():
                raise self._failure()
        self.watch.told()
        self.stdout.seek(0)
        lines = [line for line in self.stdout.read().decode().splitlines() if '"summary"' in line]
        if not lines:
            raise StoreError(f"{self.store.url}/{self.key}: restic finished without a summary")
        summary = json.loads(lines[-1])
        self.store_id = summary["snapshot_id"]
        self.stored_bytes = int(summary.get("data_added", 0))
        self.new_chunks = int(summary.get("data_blobs", 0))
        self.store.ids[self.key] = self.store_id
        self.stdout.close()

    def abort(self) -> None:
        # SIGINT before closing stdin: an end of input would commit a snapshot of half a volume.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.watch.told()
        self.stdout.close()
        # restic interrupted while it was writing its lock exits without removing it (a window
        # of a few tens of milliseconds, hit by a writer made early and aborted at once), and
        # every prune after it would find the repository locked: remove that lock, ours.
        self.store.own_lock_remove(self.process.pid)

"""A dedup store's object writer: one `restic backup --stdin` per object, tagged with its key
and made under the host name `panel` (`HOST`), so any worker finds it."""

import json
import signal
import subprocess
import tempfile

from apps.pods.stores.base import ObjectWriter, StoreError

HOST = "panel"


class ResticWriter(ObjectWriter):
    """`restic backup --stdin` fed chunk by chunk; its output goes to files, not pipes, so a
    chatty restic can never block on a pipe nobody reads."""

    def __init__(self, store, key: str):
        self.store, self.key = store, key
        self.written = 0
        self.stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/abort()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        name = key.rsplit("/", 1)[-1]
        command = [*store.command("backup"), "--stdin", "--stdin-filename", name, "--tag", key]
        env = store.env()
        self.hint = env.get("RESTIC_KEY_HINT")  # the working key it was given, if any (no secret kept)
        self.process = subprocess.Popen(
            [*command, "--host", HOST, "--json", "--quiet"],
            stdin=subprocess.PIPE,
            stdout=self.stdout,
            stderr=self.stderr,
            env=env,
        )

    def _failure(self) -> StoreError:
        self.process.wait()
        self.stderr.seek(0)
        told = self.stderr.read().decode(errors="replace")
        return self.store.error(f"writing {self.key}", told, self.written, hint=self.hint)

    def write(self, chunk: bytes) -> None:
        try:
            self.process.stdin.write(chunk)
        except OSError as exc:  # restic exited: its stderr says why
            raise self._failure() from exc
        self.written += len(chunk)

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError as exc:
            raise self._failure() from exc
        if self.process.wait() != 0:
            raise self._failure()
        self.stdout.seek(0)
        lines = [line for line in self.stdout.read().decode().splitlines() if '"summary"' in line]
        if not lines:
            raise StoreError(f"{self.store.url}/{self.key}: restic finished without a summary")
        summary = json.loads(lines[-1])
        self.store_id = summary["snapshot_id"]
        self.stored_bytes = int(summary.get("data_added", 0))
        self.new_chunks = int(summary.get("data_blobs", 0))
        self.store.ids[self.key] = self.store_id
        self._files_close()

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
        self._files_close()
        # restic interrupted while it was writing its lock exits without removing it (a window
        # of a few tens of milliseconds, hit by a writer made early and aborted at once), and
        # every prune after it would find the repository locked: remove that lock, ours.
        self.store.own_lock_remove(self.process.pid)

    def _files_close(self) -> None:
        self.stdout.close()
        self.stderr.close()

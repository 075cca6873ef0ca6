"""restic 0.14 stalling on a lock that went, and the watch that starts it again.

Each restic that takes a lock first lists `locks/` and reads every lock there. A lock whose
restic ends between the listing and the read is gone, and 0.14 retries reading it for 45-55 s
before it goes on (restic/restic#4520; fixed upstream in late 2023). It says so on stderr, so
the panel reads restic's stderr as it comes: a restic that says it before it did anything is
stopped, and the caller starts it again, its lock gone by then. The same rule serves the
panel's own restics (`StallWatch`, `watched`) and those in helpers beside the volumes
(`restic_helper`, which reads a container's stderr instead of a pipe)."""

import re
import signal
import subprocess
import threading
from dataclasses import dataclass

# How long a restic stopped with SIGINT may take to remove its lock and exit.
INTERRUPT_WAIT_SECONDS = 30

# restic 0.14 retrying the read of a lock file it listed: the lock went meanwhile (its restic
# ended), and 0.14 goes on retrying for 45-55 s before it gives up (restic/restic#4520).
_LOCK_RETRY = re.compile(r"Load\(<lock/[0-9a-f]+>.*retrying after")
# How often one read starts again after such a retry.
STALL_RESTARTS = 3


def retries_a_lock(line: str) -> bool:
    """restic says it retries reading a lock that went (one line of its stderr)."""
    return bool(_LOCK_RETRY.search(line))


class StallWatch:
    """A restic's stderr read as it comes, on a thread of its own. When restic retries reading
    a lock that went, and has given nothing yet (`given`), it is sent `stop` at once instead of
    waiting 45-55 s: the caller starts the same read again (`stalled`), the lock gone by then."""

    def __init__(self, process: subprocess.Popen, *, stop: int = signal.SIGINT, armed: bool = True):
        self.process, self.stop, self.armed = process, stop, armed  # not armed: only listened to
        self.given = self.stalled = False
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, name="restic-stderr", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if self.armed and not self.stalled and not self.given and retries_a_lock(line):
                self.stalled = True
                self.process.send_signal(self.stop)  # nothing once the process was waited for

    def told(self) -> str:
        """Everything restic wrote to stderr (once it has exited)."""
        self.thread.join(timeout=INTERRUPT_WAIT_SECONDS)
        self.process.stderr.close()
        return "".join(self.lines)


@dataclass
class Ran:
    """A restic command that ran to its end (`watched`)."""

    returncode: int
    stdout: bytes
    stderr: str
    stalled: bool  # stopped as it retried reading a lock that went: run it again
    pid: int


def watched(
    command: list[str], *, env: dict, timeout: float | None, stop: int = signal.SIGINT, armed: bool = True
) -> Ran:
    """A restic command run to its end, its stderr watched (`StallWatch`). Past `timeout`
    seconds it is killed and subprocess.TimeoutExpired raised."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watch, expired = StallWatch(process, stop=stop, armed=armed), threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    late = threading.Timer(timeout, expire) if timeout else None
    if late is not None:
        late.daemon = True
        late.start()
    try:
        out = process.stdout.read()
        process.wait()
    finally:
        if late is not None:
            late.cancel()
        process.stdout.close()
        told = watch.told()
    if expired.is_set():
        raise subprocess.TimeoutExpired(command, timeout)
    return Ran(process.returncode, out, told, watch.stalled, process.pid)

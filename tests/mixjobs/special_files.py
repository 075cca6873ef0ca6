"""Special files for tests (FIFOs, sockets, devices, folders named *.json) and a bound on
work that could block on them: a hang fails the test instead of holding the run."""

import errno
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from django.db import connection

# Far longer than any of these runs takes (well under a second each), far shorter than a hang.
BOUND_SECONDS = 20


def make_fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    """A unix socket file at `path` (bound under a short name: socket paths are limited to
    108 bytes, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(f"{short}/s")
            os.rename(f"{short}/s", path)
        finally:
            server.close()
    return path


def make_device(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # the kernel's null device
    return path


def make_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def unblock(fifos: list[Path]) -> None:
    """Let a reader stuck in open() on these FIFOs go (opening the writing end releases it)."""
    for fifo in fifos:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody is reading, nothing to release
                raise


def bounded(work, *, fifos: list[Path]):
    """Run `work()` in a thread; if it is still running after BOUND_SECONDS the test fails
    (and the FIFOs are opened for writing, so the stuck thread ends instead of leaking)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND_SECONDS)
    if thread.is_alive():
        unblock(fifos)
        thread.join(5)
        pytest.fail(f"still blocked after {BOUND_SECONDS} s: a special file was opened")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]

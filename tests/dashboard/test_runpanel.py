"""`make run`'s Ctrl-C stops the web server and the worker, and leaves no process behind.

How fast is measured, not asserted: the real case prints its time (about 2 s, against 16-18 s
before); the bound itself is the grace after which every process group is killed."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from apps.audit.management.commands import runpanel

# A child that ignores Ctrl-C, as a stuck worker would, and forks a grandchild that does too.
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    time.sleep(120)
    os._exit(0)
with open(sys.argv[1], "a") as out:
    out.write(f"{pid}\\n")
time.sleep(20)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_ctrl_c_kills_children_and_grandchildren_that_ignore_it(tmp_path, monkeypatch):
    pids = tmp_path / "grandchildren"
    monkeypatch.setattr(
        runpanel, "panel_commands", lambda addr: [[sys.executable, "-c", STUBBORN, str(pids)] for _ in range(2)]
    )

    def press_ctrl_c():
        while len(pids.read_text().split()) < 2 if pids.exists() else True:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    # Ctrl-C raises KeyboardInterrupt even in a suite started with SIGINT ignored (a
    # background job of a non-interactive shell).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        call_command("runpanel", grace=0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    grandchildren = [int(pid) for pid in pids.read_text().split()]
    assert grandchildren
    # SIGKILL is delivered asynchronously: give the kernel a moment, not the processes a choice.
    deadline = time.monotonic() + 5
    while [pid for pid in grandchildren if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in grandchildren if alive(pid)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _state(pid: int) -> str:
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        wchan = (proc / "wchan").read_text()
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return f"{pid}: gone"
    return f"{pid}: state {state}, waiting in {wchan or '-'}: {command}"


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_ctrl_c_on_make_run_stops_the_server_and_worker_with_nothing_left(tmp_path, capsys):
    var = tmp_path / "var"
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(VAR_DIR=str(var), DEBUG="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=settings.BASE_DIR, env=env, check=True)
    port, log = free_port(), tmp_path / "runpanel.log"
    with open(log, "w") as out:
        panel = subprocess.Popen(
            [sys.executable, "manage.py", "runpanel", "--addr", f"127.0.0.1:{port}"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own terminal group, as under `make run`
            # Ctrl-C as a terminal's foreground job gets it: a suite started in the background
            # by a non-interactive shell has SIGINT ignored, and Python keeps it ignored.
            preexec_fn=_sigint_default,
        )
    try:
        deadline = time.monotonic() + 60
        while "running." not in log.read_text() or "Quit the server" not in log.read_text():
            assert panel.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        marker = f"VAR_DIR={var}"
        assert len(processes_with(marker)) >= 4  # runpanel, runserver, qcluster and its processes
        started = time.monotonic()
        os.killpg(panel.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        try:
            code = panel.wait(timeout=60)  # a bound against hanging, not the claim
        except subprocess.TimeoutExpired:
            # Say where each process is stuck (a process in D state waits on the disk).
            states = [_state(pid) for pid in [panel.pid, *processes_with(marker)]]
            pytest.fail("runpanel still running 60 s after Ctrl-C:\n" + "\n".join(states) + "\n" + log.read_text())
        assert code == 0
        with capsys.disabled():
            print(f"\nrunpanel stopped {time.monotonic() - started:.1f} s after Ctrl-C")
        assert processes_with(marker) == [], log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        # Whatever this test started and left (found by its own VAR_DIR), by process id.
        if panel.poll() is None:
            os.killpg(panel.pid, signal.SIGKILL)
            panel.wait()
        for pid in processes_with(f"VAR_DIR={var}"):
            os.kill(pid, signal.SIGKILL)

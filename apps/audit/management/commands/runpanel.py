import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

# How long the web server and the worker get to stop by themselves after Ctrl-C before they
# are killed. django-q2's cluster drains its queue and joins its processes one by one, which
# took up to 18 s; a task it was running is found by the reaper (no heartbeat) and finished
# or failed by the next run, as after any crash.
STOP_GRACE_SECONDS = 1.5


def panel_commands(addr: str) -> list[list[str]]:
    """The web server and the worker."""
    manage = [sys.executable, "manage.py"]
    return [[*manage, "runserver", addr, "--noreload"], [*manage, "qcluster"]]


class Command(BaseCommand):
    help = "Run the web server and a django-q2 worker together; one Ctrl-C stops both within ~2 s."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--grace", type=float, default=STOP_GRACE_SECONDS, help="seconds before a kill")

    def handle(self, *args, addr, grace, **options):
        # Each child leads its own process group: the terminal's Ctrl-C reaches this command
        # only (no second, racing SIGINT), and a kill reaches every process the child forked
        # (qcluster's workers, monitor and pusher), so nothing is left running.
        children = [subprocess.Popen(command, start_new_session=True) for command in panel_commands(addr)]
        self.stdout.write(f"panel on http://{addr}/ with a qcluster worker; Ctrl-C stops both")

        def stop(*_):
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            deadline = time.monotonic() + grace
            for child in children:
                try:
                    child.wait(timeout=max(0.05, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            for child in children:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # the group has already gone: every process in it exited
                child.wait()

        signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
        self.stdout.write("stopped")

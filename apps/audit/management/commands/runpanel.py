import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server and a django-q2 worker together; one Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, *args, addr, **options):
        manage = [sys.executable, "manage.py"]
        children = [
            subprocess.Popen([*manage, "runserver", addr, "--noreload"]),
            subprocess.Popen([*manage, "qcluster"]),
        ]
        self.stdout.write(f"panel on http://{addr}/ with a qcluster worker; Ctrl-C stops both")

        def stop(*_):
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()

        signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop()

"""Concurrent failed logins against a real server (`manage.py runserver`, as `runpanel` starts
it) on PostgreSQL: every failure is counted, none twice, and the limit holds exactly.

`PanelWeb` is also what the bad-input sweep uses to meet the pages on PostgreSQL."""

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.parts import free_port, wait_for_port
from tests.scaleout.stack import BASE_DIR, PanelStack

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# The server is stopped by the test; `timeout` stops it anyway if the test process dies.
SERVER_LIFETIME_SECONDS = 900


class PanelWeb:
    """The panel's web server on a PanelStack (a fresh PostgreSQL database), on 127.0.0.1."""

    def __init__(self, stack: PanelStack, *, log: Path, **env: str):
        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**stack.env, **env}
        self.process: subprocess.Popen | None = None

    def __enter__(self):
        command = ["timeout", "--kill-after=5", str(SERVER_LIFETIME_SECONDS), sys.executable, "manage.py"]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*command, "runserver", f"127.0.0.1:{self.port}", "--noreload"],
                cwd=BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port(self.port, timeout=60, process=self.process):
            self.__exit__()
            raise AssertionError(f"the panel did not start:\n{self.log.read_text()[-3000:]}")
        return self

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def server_errors(self) -> list[str]:
        """Lines of the server's log that show a 500 or a traceback (a 503 is an answer: /healthz
        says so while no worker runs)."""
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if "Traceback" in line or re.search(r'" 50[0-2] ', line)]

    def browser(self) -> "Browser":
        return Browser(self.url)


class Browser(requests.Session):
    """One visitor: keeps its cookies and connection, sends the CSRF token like a form does."""

    def __init__(self, base_url: str):
        super().__init__()
        self.base_url = base_url

    def csrf(self, path: str = "/login/") -> str:
        self.get(self.base_url + path, timeout=60).raise_for_status()
        return self.cookies["csrftoken"]

    def log_in(self, username: str, password: str, *, token: str) -> requests.Response:
        return self.post(
            self.base_url + "/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": self.base_url + "/login/"},
            allow_redirects=False,
            timeout=120,
        )


@pytest.fixture
def stack(postgres_url, redis_url, tmp_path):
    with PanelStack(postgres_url=postgres_url, redis_url=redis_url, var_dir=tmp_path / "stack") as panel:
        (tmp_path / "stack").mkdir(exist_ok=True)
        yield panel


THREADS = 40

FAILURES = """
from django.db.models import Sum
from axes.models import AccessAttempt
def total(**who):
    return AccessAttempt.objects.filter(**who).aggregate(n=Sum("failures_since_start"))["n"] or 0
print(total(ip_address="127.0.0.1"), total(username="root"), total(username="guest1"), total(username="guest3"))
"""


def test_concurrent_failed_logins_are_all_counted_and_the_limit_is_exact(stack, tmp_path):
    stack.shell(
        "from django.contrib.auth.models import User; "
        "User.objects.create_superuser(username='root', password='pw-root-123!')"
    )
    # One more than the racing failures: none of them may lock, the next one must.
    limit = THREADS + 1
    with PanelWeb(stack, log=tmp_path / "server.log", LOGIN_RATE_LIMIT=str(limit)) as web:
        visitors = [web.browser() for _ in range(THREADS)]
        tokens = [visitor.csrf() for visitor in visitors]  # each keeps its connection open
        barrier = threading.Barrier(THREADS)
        statuses: list[int | str] = [0] * THREADS

        def fail(n: int) -> None:
            # Half on one row (root), the rest on two others: the same row raced by 20
            # requests, and a first failure (a row being created) raced by 10 each.
            username = "root" if n % 2 == 0 else f"guest{n % 4}"
            barrier.wait(timeout=60)
            try:
                response = visitors[n].log_in(username, "wrong", token=tokens[n])
                statuses[n] = response.status_code
            except requests.RequestException as exc:
                statuses[n] = repr(exc)

        threads = [threading.Thread(target=fail, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        assert not any(thread.is_alive() for thread in threads)

        assert statuses == [200] * THREADS, statuses
        assert stack.shell(FAILURES).split() == [str(THREADS), str(THREADS // 2), str(THREADS // 4), str(THREADS // 4)]

        last = web.browser()
        token = last.csrf()
        locked = last.log_in("guest9", "wrong", token=token)
        assert locked.status_code == 429
        assert "Too many failed logins. Try again in 5 minutes." in locked.text
        # Locked out by the address: the right password for another account does not get in.
        assert last.log_in("root", "pw-root-123!", token=token).status_code == 429
        assert web.server_errors() == []

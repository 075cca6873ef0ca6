"""A panel deployment made of real processes: a fresh PostgreSQL database, Redis as the
django-q2 broker, and any number of `qcluster` workers, each its own process."""

import atexit
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import redis

BASE_DIR = Path(__file__).resolve().parents[2]


_TEMPLATES: dict[str, str] = {}


def _template(stack: "PanelStack") -> str:
    """A database migrated once per test run, copied for each stack (a copy takes a fraction
    of a second, migrating a few seconds); dropped when the run ends."""
    if stack.admin_url not in _TEMPLATES:
        name = f"panel_template_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(stack.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        atexit.register(_drop, stack.admin_url, name)
        migrating = PanelStack.__new__(PanelStack)
        migrating.__dict__.update(stack.__dict__)
        migrating.env = {**stack.env, "DATABASE_URL": stack.database_url.rsplit("/", 1)[0] + f"/{name}"}
        migrating.manage("migrate", "--noinput", "-v0")
        _TEMPLATES[stack.admin_url] = name
    return _TEMPLATES[stack.admin_url]


def _drop(admin_url: str, name: str) -> None:
    try:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass  # the server went first: nothing left to drop


class PanelStack:
    def __init__(self, *, postgres_url: str, redis_url: str, var_dir: Path):
        self.name = f"panel_scaleout_{uuid.uuid4().hex[:10]}"
        self.admin_url = postgres_url.replace("postgres://", "postgresql://")
        self.database_url = postgres_url.rsplit("/", 1)[0] + f"/{self.name}"
        self.redis_url = redis_url
        self.var_dir = var_dir
        self.workers: list[subprocess.Popen] = []
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_url,
            "Q_CLUSTER_NAME": self.name,
            "Q_WORKERS": "2",
            "VAR_DIR": str(var_dir),
            "MIX_MEDIA_DIR": str(var_dir / "mix" / "media"),
            "MIX_OUTPUTS_DIR": str(var_dir / "mix" / "outputs"),
            "SNAPSHOT_STORE_URL": f"file://{var_dir / 'snapshots'}",
            "SESSIONS_VOLUME_URL": f"local://{var_dir / 'volumes' / 'music-split-jobs-data'}",
            "SECRET_KEY": "scaleout-tests-only-" + uuid.uuid4().hex,
            "DEBUG": "1",
        }

    def __enter__(self):
        template = _template(self)
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}" TEMPLATE "{template}"')
        return self

    def __exit__(self, *exc):
        self.stop_workers()
        redis.Redis.from_url(self.redis_url).flushdb()
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def shell(self, code: str, *, check: bool = True) -> str:
        return self.manage("shell", "--no-imports", "-c", code, check=check).stdout

    def spawn_shell(self, code: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
            cwd=BASE_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start_workers(self, count: int = 2) -> None:
        for _ in range(count):
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"],
                    cwd=BASE_DIR,
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        # The test is over: a clean shutdown is nice to have, not worth CI minutes.
        for worker in self.workers:
            try:
                worker.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        self.workers = []

    def wait_until(self, code: str, *, timeout: float = 60, interval: float = 0.25) -> str:
        """Run `code` (which prints something) until it prints 'yes'; return the last output.
        One process runs it over and over, each time on fresh database connections as a new
        process would: a process per look cost a Django start-up (a second of CPU) each."""
        loop = (
            "import contextlib, io, time\n"
            "from django.db import connections\n"
            f"code, deadline, interval = {code!r}, time.monotonic() + {timeout!r}, {interval!r}\n"
            "while True:\n"
            "    printed = io.StringIO()\n"
            "    with contextlib.redirect_stdout(printed):\n"
            "        exec(code, {})\n"
            "    connections.close_all()\n"
            "    output = printed.getvalue().strip()\n"
            "    if output.endswith('yes') or time.monotonic() >= deadline:\n"
            "        break\n"
            "    time.sleep(interval)\n"
            "print(output)\n"
        )
        output = self.manage("shell", "--no-imports", "-c", loop, timeout=timeout + 120).stdout.strip()
        if output.endswith("yes"):
            return output
        raise AssertionError(f"timed out waiting; last output: {output}")

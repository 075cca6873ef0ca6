"""A panel deployment on its own SQLite file and storage roots, worked on by real processes
that a test can SIGKILL at any instant.

Each process is `manage.py shell -c CODE`, calling the same task functions django-q2 calls
(`apps.audit.operations.run_operation`), so what dies is exactly a worker's work. The test
process reads the database file with `sqlite3` and Docker with the SDK to decide when to
kill, and never imports the deployment's settings."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def migrated_template(folder: Path) -> Path:
    """One migrated database file; each deployment copies it (migrating costs seconds)."""
    db = folder / "template.sqlite3"
    env = {**_clean_env(), "DATABASE_URL": f"sqlite:///{db}", "VAR_DIR": str(folder / "var")}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise AssertionError(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    return db


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "REDIS_URL", "DATABASE_URL"))}


class Deployment:
    def __init__(self, *, root: Path, template: Path, extra_env: dict[str, str] | None = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "panel.sqlite3"
        shutil.copyfile(template, self.db)
        self.snapshots = root / "snapshots"
        self.media = root / "mix" / "media"
        self.outputs = root / "mix" / "outputs"
        self.env = {
            **_clean_env(),
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings",
            "DATABASE_URL": f"sqlite:///{self.db}",
            "VAR_DIR": str(root / "var"),
            "SECRET_KEY": "reliability-tests-only-" + uuid.uuid4().hex,
            "DEBUG": "1",
            "SNAPSHOT_STORE_URL": f"file://{self.snapshots}",
            "MIX_MEDIA_DIR": str(self.media),
            "MIX_OUTPUTS_DIR": str(self.outputs),
            "SESSIONS_VOLUME_URL": f"local://{root / 'volumes' / 'music-split-jobs-data'}",
            "OPERATION_PROGRESS_INTERVAL_SECONDS": "0",
            **(extra_env or {}),
        }
        self.processes: list[subprocess.Popen] = []

    # --- processes ---------------------------------------------------------------------

    def run(self, code: str, *, timeout: float = 120) -> str:
        """Run `code` to the end in a new process; return what it printed."""
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"process failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def run_json(self, code: str, **kwargs) -> object:
        """Run `code`, which prints one JSON document as its last line."""
        return json.loads(self.run(code, **kwargs).strip().splitlines()[-1])

    def spawn(self, code: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
            cwd=BASE_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen) -> bool:
        """SIGKILL the process and its children; True if it was still working."""
        alive = process.poll() is None
        if alive:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return alive

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    # --- looking, from the outside -------------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        connection = sqlite3.connect(self.db, timeout=20)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def value(self, sql: str, params: tuple = ()):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    @staticmethod
    def wait_for(predicate: Callable[[], bool], *, timeout: float = 60, interval: float = 0.005) -> bool:
        """Poll until `predicate()` is true; False when the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return False


def recover(deployment: Deployment, *, then: str = "") -> object:
    """What the schedules do after a worker died, in a fresh process: the reaper marks its
    operation errored, reconcile rolls the work forward (run inline here instead of waiting
    for a worker), then `then` runs. Prints the reconcile report as JSON."""
    return deployment.run_json(
        "import json\n"
        "from datetime import timedelta\n"
        "from django_q.conf import Conf\n"
        "Conf.SYNC = True\n"
        "from apps.audit.services import operation_reap_stale\n"
        "from apps.pods.services import pods_reconcile\n"
        "reaped = operation_reap_stale(older_than=timedelta(0))\n"
        "report = pods_reconcile(actor='schedule:reconcile-pods')\n"
        f"{then}\n"
        "print(json.dumps({'reaped': reaped, 'resumed': report['resumed']}))\n"
    )


def dedup_deployment(*, root: Path, template: Path, pod_image: str, extra_env: dict[str, str]) -> Deployment:
    """A deployment whose snapshot store is a fresh `dedup+file://` restic repository under
    `root`; `.repository` and `.restic_env` let a test run restic beside it."""
    from tests.parts import require_part
    from tests.restic_keys import restic_key_make_fast

    if shutil.which("restic") is None:
        require_part("restic", "no restic binary", "Install Debian's restic: apt-get install restic")
    key = root / "snapshot.key"
    key.write_text(uuid.uuid4().hex)
    repository = root / "dedup-repo"
    restic_env = {
        **os.environ,
        "RESTIC_REPOSITORY": str(repository),
        "RESTIC_PASSWORD_FILE": str(key),
        "RESTIC_CACHE_DIR": str(root / "restic-cache"),
    }
    subprocess.run(["restic", "init"], env=restic_env, check=True, capture_output=True, timeout=120)
    restic_key_make_fast(repository, key.read_text())
    panel = Deployment(
        root=root / "deployment",
        template=template,
        extra_env={
            "SNAPSHOT_STORE_URL": f"dedup+file://{repository}",
            "SNAPSHOT_KEY_FILE": str(key),
            "POD_IMAGE": pod_image,
            "POD_COMMAND": "/bin/sh",
            "POD_STOP_TIMEOUT_SECONDS": "0",
            **extra_env,
        },
    )
    panel.repository, panel.restic_env = repository, restic_env
    return panel

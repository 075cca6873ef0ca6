"""A worker whose step waits without a word (a sleep, a restic lock) past Q_RETRY is alive:
the reaper leaves its operation running and reconcile queues nothing beside it. A worker
killed with SIGKILL beats no more, and its operation is still reaped.

Real worker processes on one SQLite file (tests/reliability/deployment.py), Q_RETRY of 2 s."""

import signal
import subprocess
import time

import pytest

from tests import parts
from tests.pods.conftest import remove_pod_objects
from tests.reliability.deployment import Deployment, dedup_deployment, migrated_template

Q_RETRY = 2
# Long enough for a reaper without heartbeats to take the worker for dead, several times over.
WAIT_SECONDS = 4 * Q_RETRY

# A step that waits without writing progress or log, until the test lets it go (or 120 s).
SLEEPER = """
import time
from pathlib import Path
from apps.audit.operations import OperationKind, register, run_now
def wait(operation):
    deadline = time.monotonic() + 120
    while not Path({release!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return {{}}
register(OperationKind(name="test.wait", target_type="pod", run=wait, permission="pods.view_pod",
                       audit_action="pod.stop", label="Wait"))
run_now("test.wait", "waiter", actor="worker")
print("finished", flush=True)
"""
REAP = "from apps.audit.services import operation_reap_stale\nprint(operation_reap_stale())"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return migrated_template(tmp_path_factory.mktemp("panel-template"))


@pytest.fixture
def deployment(tmp_path, template):
    panel = Deployment(root=tmp_path / "deployment", template=template, extra_env={"Q_RETRY": str(Q_RETRY)})
    yield panel
    panel.close()


def operations(deployment: Deployment, kind: str) -> list[tuple]:
    return deployment.query("SELECT status, error FROM audit_operation WHERE kind = ? ORDER BY id", (kind,))


def running(deployment: Deployment, kind: str) -> bool:
    return deployment.wait_for(lambda: [s for s, _ in operations(deployment, kind)] == ["running"], timeout=60)


def test_a_worker_waiting_silently_past_q_retry_is_not_reaped(deployment, tmp_path, fault_point, harm):
    release = tmp_path / "release"
    worker = deployment.spawn(SLEEPER.format(release=str(release)))
    assert running(deployment, "test.wait")
    time.sleep(WAIT_SECONDS)

    reaped = int(deployment.run(REAP).strip().splitlines()[-1])
    still = operations(deployment, "test.wait")
    release.touch()
    out, err = worker.communicate(timeout=60)

    survived = reaped == 0 and still == [("running", "")] and "finished" in out
    fault_point("heartbeat", "a step silent for 4 x Q_RETRY, then the reaper", survived=survived, lost_bytes=0)
    # Run twice: a second row of the operation (what a reap would let reconcile queue).
    twice = len(operations(deployment, "test.wait")) - 1
    harm("heartbeat", "a step silent for 4 x Q_RETRY, then the reaper", ran_twice=max(0, twice))
    assert reaped == 0 and still == [("running", "")], still
    assert "finished" in out, err[-2000:]
    assert operations(deployment, "test.wait") == [("succeeded", "")]


def test_a_killed_workers_operation_is_still_reaped(deployment, tmp_path, fault_point):
    worker = deployment.spawn(SLEEPER.format(release=str(tmp_path / "never")))
    assert running(deployment, "test.wait")
    assert Deployment.kill(worker)
    time.sleep(Q_RETRY + 1)

    reaped = int(deployment.run(REAP).strip().splitlines()[-1])
    [(status, error)] = operations(deployment, "test.wait")

    fault_point("sigkill", "a silent step's worker killed, then the reaper", survived=reaped == 1, lost_bytes=0)
    assert reaped == 1 and status == "errored" and "stopped sending heartbeats" in error


# --- the case: `pods delete` waiting on a restic lock ---------------------------------

DELETE_WORKER = """
from apps.audit.operations import run_now
from apps.pods.actions import DELETE
run_now(DELETE.kind, {pod_id!r}, actor="worker")
print("finished", flush=True)
"""
RECONCILE = (
    "import json\n"
    "from apps.audit.services import operation_reap_stale\n"
    "from apps.pods.services import pods_reconcile\n"
    "reaped = operation_reap_stale()\n"
    "report = pods_reconcile(actor='schedule:reconcile-pods')\n"
    "print(json.dumps({'reaped': reaped, 'resumed': report['resumed']}))\n"
)


@pytest.mark.docker
def test_a_pod_delete_waiting_on_a_restic_lock_past_q_retry_is_neither_reaped_nor_run_twice(
    tmp_path, template, pod_image, docker_client, fault_point, harm
):
    deployment = dedup_deployment(
        root=tmp_path, template=template, pod_image=pod_image, extra_env={"Q_RETRY": str(Q_RETRY)}
    )
    repository, restic_env = deployment.repository, deployment.restic_env
    pod_id = parts.pod_id("h")
    holder = None
    try:
        deployment.run(
            "from apps.pods.services import pod_provision, pod_stop\n"
            f"pod_provision(pod_id={pod_id!r}, actor='test')\n"
            f"pod_stop(pod_id={pod_id!r}, actor='test')"
        )
        # Another restic (a backup reading its stdin) holds a shared lock: the delete's forget
        # waits for it, writing nothing.
        holder = subprocess.Popen(
            ["restic", "backup", "--stdin", "--stdin-filename", "other.tar"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=restic_env,
        )
        assert deployment.wait_for(lambda: any((repository / "locks").iterdir()), timeout=60)
        worker = deployment.spawn(DELETE_WORKER.format(pod_id=pod_id))
        assert running(deployment, "pod.delete")
        time.sleep(WAIT_SECONDS)

        report = deployment.run_json(RECONCILE)
        during = operations(deployment, "pod.delete")
        holder.send_signal(signal.SIGINT)  # the other restic ends; the delete goes on
        holder.wait(timeout=60)
        out, err = worker.communicate(timeout=180)
        after = operations(deployment, "pod.delete")
        status = deployment.value("SELECT status FROM pods_pod WHERE pod_id = ?", (pod_id,))

        survived = during == [("running", "")] and after == [("succeeded", "")] and status == "deleted"
        fault_point("heartbeat", "pods delete waiting on a restic lock past Q_RETRY", survived=survived, lost_bytes=0)
        # Run twice: the deletes of this pod the panel has a row of, beyond the one asked for.
        twice = max(0, len(after) - 1)
        harm("heartbeat", "pods delete waiting on a restic lock past Q_RETRY, then reconcile", ran_twice=twice)
        assert report["reaped"] == 0 and during == [("running", "")], (report, during)
        assert "finished" in out, err[-3000:]
        assert after == [("succeeded", "")] and status == "deleted", (after, status)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()
        deployment.close()
        remove_pod_objects(docker_client, pod_id)

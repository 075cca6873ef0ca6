"""A worker killed with SIGKILL in the middle of stop-with-snapshot, restore, deprovision and
a mix-job cleanup. Whatever instant it dies at, no byte is lost, no pod counts as running
half restored, and the next run (the reaper, then reconcile) rolls the work forward to a
consistent state with no orphan volume left behind.

Each case kills a real process at a point it observes from outside (database file, Docker,
the snapshot folder), then records what it saw for `bench/faults.py`."""

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import parts
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, remove_pod_objects, run_in
from tests.reliability.deployment import Deployment, migrated_template, recover
from tests.reliability.pod_files import digests, file_sizes, lost_bytes

pytestmark = [pytest.mark.docker]

# Enough bytes that streaming a snapshot or a restore takes a visible while.
BIG_SCRIPT = WRITE_SCRIPT + (
    "dd if=/dev/urandom of=/workspace/proj/big.bin bs=1M count=24 2>/dev/null\n"
    "dd if=/dev/urandom of=/home/dev/big.bin bs=1M count=16 2>/dev/null\n"
    "dd if=/dev/urandom of=/var/lib/app/big.bin bs=1M count=8 2>/dev/null\n"
)

WORKER = """
from apps.audit.operations import run_now
from apps.pods.actions import POD_ACTIONS
run_now(POD_ACTIONS[{action!r}].kind, {pod_id!r}, actor="worker")
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return migrated_template(tmp_path_factory.mktemp("panel-template"))


@pytest.fixture
def deployment(tmp_path, template, pod_image, docker_client):
    panel = Deployment(
        root=tmp_path / "deployment",
        template=template,
        extra_env={"POD_IMAGE": pod_image, "POD_COMMAND": "/bin/sh", "POD_STOP_TIMEOUT_SECONDS": "0"},
    )
    panel.pod_ids = []
    yield panel
    panel.close()
    for pod_id in panel.pod_ids:
        remove_pod_objects(docker_client, pod_id)


def provisioned(deployment: Deployment, docker_client, *, stopped: bool = False) -> tuple[str, dict, dict]:
    """A pod with data in it: its id, the md5 of every file and their sizes."""
    pod_id = parts.pod_id("k")
    deployment.pod_ids.append(pod_id)
    deployment.run(f"from apps.pods.services import pod_provision\npod_provision(pod_id={pod_id!r}, actor='test')")
    run_in(docker_client, pod_id, BIG_SCRIPT)
    before, sizes = digests(listing(docker_client, pod_id)), file_sizes(docker_client, pod_id)
    if stopped:
        deployment.run(f"from apps.pods.services import pod_stop\npod_stop(pod_id={pod_id!r}, actor='test')")
    return pod_id, before, sizes


def pod_status(deployment: Deployment, pod_id: str) -> str:
    return deployment.value("SELECT status FROM pods_pod WHERE pod_id = ?", (pod_id,))


def snapshot_statuses(deployment: Deployment, pod_id: str) -> list[str]:
    rows = deployment.query(
        "SELECT s.status FROM pods_snapshot s JOIN pods_pod p ON p.id = s.pod_id WHERE p.pod_id = ? ORDER BY s.id",
        (pod_id,),
    )
    return [status for (status,) in rows]


def tar_bytes_in_store(deployment: Deployment) -> int:
    return sum(path.stat().st_size for path in deployment.snapshots.rglob("*") if path.is_file())


def kill_when(deployment: Deployment, worker, trigger, *, what: str) -> bool:
    """Kill the worker as soon as `trigger()` holds; True if it died before finishing."""
    fired = deployment.wait_for(lambda: worker.poll() is not None or trigger(), timeout=90)
    assert fired, f"{what}: the trigger never fired and the worker did not finish"
    killed = Deployment.kill(worker)
    # A worker that finished first tested nothing: the case must die mid-way.
    assert killed, f"{what}: the worker finished before the kill point:\n{worker.stderr.read()[-2000:]}"
    return killed


def phase(deployment: Deployment, docker_client, pod_id: str) -> str:
    return (
        f"pod {pod_status(deployment, pod_id)}, snapshots {snapshot_statuses(deployment, pod_id)}, "
        f"{len(pod_volumes(docker_client, pod_id))} volumes, container {container_exists(docker_client, pod_id)}"
    )


STOP_TRIGGERS = {
    "while streaming": lambda d, c, pod_id: (
        snapshot_statuses(d, pod_id)[-1:] == ["uploading"] and tar_bytes_in_store(d) > 4 * 1024 * 1024
    ),
    "once the snapshot is verified": lambda d, c, pod_id: "complete" in snapshot_statuses(d, pod_id),
    "while removing volumes": lambda d, c, pod_id: not container_exists(c, pod_id),
}


@pytest.mark.parametrize("point", list(STOP_TRIGGERS))
def test_worker_killed_during_stop_with_snapshot(deployment, docker_client, point, fault_point):
    pod_id, before, sizes = provisioned(deployment, docker_client)
    worker = deployment.spawn(WORKER.format(action="stop", pod_id=pod_id))
    killed = kill_when(deployment, worker, lambda: STOP_TRIGGERS[point](deployment, docker_client, pod_id), what=point)
    seen = phase(deployment, docker_client, pod_id)
    status = pod_status(deployment, pod_id)
    # Never "stopped" with a volume left, never a stop without a verified snapshot.
    consistent_now = status in {"stopping", "stopped"} and (
        status != "stopped"
        or (pod_volumes(docker_client, pod_id) == [] and "complete" in snapshot_statuses(deployment, pod_id))
    )
    volumes_or_snapshot = len(pod_volumes(docker_client, pod_id)) == 8 or "complete" in snapshot_statuses(
        deployment, pod_id
    )

    report = recover(
        deployment,
        then="from apps.pods.services import snapshots_apply_retention\nsnapshots_apply_retention(actor='test')",
    )
    stopped = pod_status(deployment, pod_id) == "stopped"
    no_orphans = pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    snapshots = snapshot_statuses(deployment, pod_id)
    one_snapshot = snapshots.count("complete") == 1 and "uploading" not in snapshots and "pending" not in snapshots
    deployment.run(f"from apps.pods.services import pod_start\npod_start(pod_id={pod_id!r}, actor='test')")
    lost = lost_bytes(sizes, before, digests(listing(docker_client, pod_id)))

    survived = consistent_now and volumes_or_snapshot and stopped and no_orphans and one_snapshot and lost == 0
    fault_point("sigkill", f"stop-with-snapshot, killed {point}", survived=survived, lost_bytes=lost)
    context = f"killed={killed}; after the kill: {seen}; recovery: {report}; snapshots after: {snapshots}"
    assert consistent_now and volumes_or_snapshot, context
    assert stopped and no_orphans and one_snapshot, context
    assert lost == 0, context


RESTORE_TRIGGERS = {
    "while creating volumes": lambda d, c, pod_id: len(pod_volumes(c, pod_id)) >= 3,
    "while streaming": lambda d, c, pod_id: (
        (
            d.value(
                "SELECT progress_done FROM audit_operation WHERE target_id = ? AND kind = 'pod.start' ORDER BY id DESC",
                (pod_id,),
            )
            or 0
        )
        > 2 * 1024 * 1024
    ),
}


@pytest.mark.parametrize("point", list(RESTORE_TRIGGERS))
def test_worker_killed_during_restore(deployment, docker_client, point, fault_point):
    pod_id, before, sizes = provisioned(deployment, docker_client, stopped=True)
    worker = deployment.spawn(WORKER.format(action="start", pod_id=pod_id))
    killed = kill_when(
        deployment, worker, lambda: RESTORE_TRIGGERS[point](deployment, docker_client, pod_id), what=point
    )
    seen = phase(deployment, docker_client, pod_id)
    # Half restored is never running.
    not_running_half = pod_status(deployment, pod_id) != "running" or not killed

    report = recover(deployment)
    running = pod_status(deployment, pod_id) == "running"
    eight = len(pod_volumes(docker_client, pod_id)) == 8
    lost = lost_bytes(sizes, before, digests(listing(docker_client, pod_id)) if running else None)

    survived = not_running_half and running and eight and lost == 0
    fault_point("sigkill", f"restore, killed {point}", survived=survived, lost_bytes=lost)
    context = f"killed={killed}; after the kill: {seen}; recovery: {report}"
    assert not_running_half and running and eight, context
    assert lost == 0, context


DEPROVISION_TRIGGERS = {
    "after the container went": lambda d, c, pod_id: not container_exists(c, pod_id),
    "with half the volumes gone": lambda d, c, pod_id: len(pod_volumes(c, pod_id)) <= 4,
}


@pytest.mark.parametrize("point", list(DEPROVISION_TRIGGERS))
def test_worker_killed_during_deprovision(deployment, docker_client, point, fault_point):
    pod_id, _, _ = provisioned(deployment, docker_client)
    # A snapshot from an earlier stop, which deprovision must keep.
    deployment.run(
        "from apps.pods.services import pod_stop, pod_start\n"
        f"pod_stop(pod_id={pod_id!r}, actor='test')\npod_start(pod_id={pod_id!r}, actor='test')"
    )
    store_before = tar_bytes_in_store(deployment)
    worker = deployment.spawn(WORKER.format(action="deprovision", pod_id=pod_id))
    killed = kill_when(
        deployment, worker, lambda: DEPROVISION_TRIGGERS[point](deployment, docker_client, pod_id), what=point
    )
    seen = phase(deployment, docker_client, pod_id)

    report = recover(deployment)
    done = pod_status(deployment, pod_id) == "deprovisioned"
    no_orphans = pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    kept = snapshot_statuses(deployment, pod_id) == ["complete"]
    lost = max(0, store_before - tar_bytes_in_store(deployment))

    survived = done and no_orphans and kept and lost == 0
    fault_point("sigkill", f"deprovision, killed {point}", survived=survived, lost_bytes=lost)
    context = f"killed={killed}; after the kill: {seen}; recovery: {report}"
    assert done and no_orphans and kept, context
    assert lost == 0, context


def test_worker_killed_while_provisioning_is_rolled_back(deployment, docker_client, fault_point):
    pod_id = parts.pod_id("k")
    deployment.pod_ids.append(pod_id)
    worker = deployment.spawn(WORKER.format(action="provision", pod_id=pod_id))
    killed = kill_when(deployment, worker, lambda: len(pod_volumes(docker_client, pod_id)) >= 4, what="provision")
    seen = phase(deployment, docker_client, pod_id)

    report = recover(deployment)
    failed = pod_status(deployment, pod_id) == "failed"
    no_orphans = pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    reason = deployment.value("SELECT last_error FROM pods_pod WHERE pod_id = ?", (pod_id,)) or ""
    # Provisioning again works from here.
    deployment.run(f"from apps.pods.services import pod_provision\npod_provision(pod_id={pod_id!r}, actor='test')")
    running = pod_status(deployment, pod_id) == "running"

    survived = (failed or not killed) and no_orphans and running
    fault_point("sigkill", "provision, killed while creating volumes", survived=survived, lost_bytes=0)
    context = f"killed={killed}; after the kill: {seen}; recovery: {report}; last_error: {reason}"
    assert no_orphans and running, context
    if killed:
        assert failed and "interrupted" in reason and "rolled back" in reason, context


# --- mix-job cleanup ------------------------------------------------------------------------

SESSIONS = 80
JOBS_PER_SESSION = 24


def _write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def seed_mixjobs(deployment: Deployment) -> dict[str, set[Path]]:
    """Sessions of only expired jobs (their output goes too), and sessions mixing expired
    and fresh jobs (their output stays). Returns the files that must go and must stay."""
    now = datetime.now(UTC).replace(tzinfo=None)
    old, fresh = (now - timedelta(days=5)).isoformat(), (now - timedelta(minutes=5)).isoformat()
    must_go, must_stay = set(), set()
    for s in range(SESSIONS):
        session = f"sess{s:03d}"
        mixed = s % 2 == 0
        for j in range(JOBS_PER_SESSION):
            job = f"{session}-job{j:03d}"
            expired = not (mixed and j % 3 == 0)
            body = {
                "job_id": job,
                "session_id": session,
                "state": "complete",
                "updated_at": old if expired else fresh,
                "extra": {"pad": "x" * 2000},
            }
            job_file = deployment.media / session / "jobs" / f"{job}.json"
            index_file = deployment.media / "jobs_index" / f"{job}.json"
            _write(job_file, json.dumps(body).encode())
            _write(index_file, json.dumps({"session_id": session}).encode())
            (must_go if expired else must_stay).update({job_file, index_file})
        output = deployment.outputs / session / "final_mix.wav"
        _write(output, os.urandom(64 * 1024))
        (must_stay if mixed else must_go).add(output)
    return {"go": must_go, "stay": must_stay}


CLEANUP_WORKER = """
from apps.audit.names import Kind
from apps.audit.operations import run_now
run_now(Kind.MIXJOBS_CLEANUP, actor="worker")
print("finished", flush=True)
"""


def jobs_gone(jobs: list[Path]):
    """How many of `jobs` no longer exist, counted from one listing of each session's jobs
    folder: the kill trigger asks every few milliseconds, and a stat per job (~1,300) kept
    a core busy beside the very cleanup it watches."""
    folders, names = {path.parent for path in jobs}, {path.name for path in jobs}

    def gone() -> int:
        left = 0
        for folder in folders:
            try:
                with os.scandir(folder) as entries:
                    left += sum(entry.name in names for entry in entries)
            except FileNotFoundError:
                pass
        return len(jobs) - left

    return gone


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_worker_killed_during_mixjob_cleanup(deployment, fraction, fault_point):
    files = seed_mixjobs(deployment)
    stay = {path: path.read_bytes() for path in files["stay"]}
    deployment.run("from apps.mixjobs.services import mixjobs_sync\nmixjobs_sync(actor='test')")
    jobs_to_go = [p for p in files["go"] if p.parent.name == "jobs"]

    worker = deployment.spawn(CLEANUP_WORKER)
    gone = jobs_gone(jobs_to_go)
    killed = kill_when(deployment, worker, lambda: gone() >= fraction * len(jobs_to_go), what=f"{fraction:.0%}")
    removed_by_killed_run = gone()
    fresh_intact_now = all(path.exists() and path.read_bytes() == body for path, body in stay.items())
    # Nothing the killed run removed left a dangling half: an index file never outlives its job file.
    no_dangling_index = all(p.exists() or not (deployment.media / "jobs_index" / p.name).exists() for p in jobs_to_go)

    deployment.run(
        "from datetime import timedelta\n"
        "from apps.audit.services import operation_reap_stale\n"
        "from apps.mixjobs.services import mixjobs_cleanup, mixjobs_sync\n"
        "operation_reap_stale(older_than=timedelta(0))\n"
        "mixjobs_cleanup(actor='schedule:mix jobs cleanup')\n"
        "mixjobs_sync(actor='schedule:mix jobs sync')\n"
    )
    leftovers = sorted(str(p) for p in files["go"] if p.exists())
    lost = sum(len(body) for path, body in stay.items() if not path.exists() or path.read_bytes() != body)
    unaccounted = deployment.value(
        "SELECT COUNT(*) FROM mixjobs_mixjob WHERE updated_at < ? AND deleted_at IS NULL AND vanished_at IS NULL",
        ((datetime.now(UTC) - timedelta(days=1)).isoformat(sep=" "),),
    )
    operation = deployment.query("SELECT status, error FROM audit_operation WHERE kind = 'mixjobs.cleanup' ORDER BY id")

    survived = fresh_intact_now and no_dangling_index and not leftovers and lost == 0 and unaccounted == 0
    fault_point("sigkill", f"mix-job cleanup, killed at {fraction:.0%} of the jobs", survived=survived, lost_bytes=lost)
    context = f"killed={killed} after {removed_by_killed_run}/{len(jobs_to_go)} jobs; operations: {operation}"
    assert fresh_intact_now and no_dangling_index, context
    assert leftovers == [], f"{context}; left behind: {leftovers[:5]}"
    assert lost == 0 and unaccounted == 0, context

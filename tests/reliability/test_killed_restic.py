"""A worker killed with SIGKILL in the middle of a restore from a dedup store: its `restic dump`
dies with it and leaves its repository lock behind. The next purge (here the pod's delete,
after recovery finished the start) removes that lock, whose restic is gone, and runs at once
instead of waiting for it and failing."""

import time

import pytest

from tests import parts
from tests.pods.conftest import listing, pod_volumes, remove_pod_objects, run_in
from tests.reliability.deployment import dedup_deployment as make_dedup_deployment
from tests.reliability.deployment import migrated_template, recover
from tests.reliability.pod_files import digests, file_sizes, lost_bytes
from tests.reliability.test_killed_workers import BIG_SCRIPT, WORKER, kill_when, pod_status

pytestmark = [pytest.mark.docker]

# With the locks of gone restics left alone, the delete would wait this long and fail.
LOCK_WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return migrated_template(tmp_path_factory.mktemp("panel-template"))


@pytest.fixture
def dedup_deployment(tmp_path, template, pod_image, docker_client):
    panel = make_dedup_deployment(
        root=tmp_path,
        template=template,
        pod_image=pod_image,
        extra_env={"SNAPSHOT_LOCK_WAIT_SECONDS": str(LOCK_WAIT_SECONDS)},
    )
    panel.pod_ids = []
    yield panel
    panel.close()
    for pod_id in panel.pod_ids:
        remove_pod_objects(docker_client, pod_id)


def test_worker_killed_during_a_dedup_restore_leaves_no_lock_that_blocks_the_purge(
    dedup_deployment, docker_client, fault_point, harm
):
    deployment = dedup_deployment
    pod_id = parts.pod_id("r")
    deployment.pod_ids.append(pod_id)
    deployment.run(f"from apps.pods.services import pod_provision\npod_provision(pod_id={pod_id!r}, actor='test')")
    run_in(docker_client, pod_id, BIG_SCRIPT)
    before, sizes = digests(listing(docker_client, pod_id)), file_sizes(docker_client, pod_id)
    deployment.run(f"from apps.pods.services import pod_stop\npod_stop(pod_id={pod_id!r}, actor='test')")
    locks = deployment.repository / "locks"
    assert list(locks.iterdir()) == []

    worker = deployment.spawn(WORKER.format(action="start", pod_id=pod_id))
    streamed = "SELECT progress_done FROM audit_operation WHERE target_id = ? AND kind = 'pod.start' ORDER BY id DESC"
    kill_when(deployment, worker, lambda: (deployment.value(streamed, (pod_id,)) or 0) > 2 * 1024 * 1024, what="dump")
    left = list(locks.iterdir())

    # The schedules finish the start (a dump takes a shared lock: the dead one does not stop it).
    report = recover(deployment)
    running = pod_status(deployment, pod_id) == "running"
    lost = lost_bytes(sizes, before, digests(listing(docker_client, pod_id)) if running else None)
    started = time.monotonic()
    deployment.run(f"from apps.pods.services import pod_delete\npod_delete(pod_id={pod_id!r}, actor='test')")
    took = time.monotonic() - started
    deleted = pod_status(deployment, pod_id) == "deleted" and pod_volumes(docker_client, pod_id) == []
    snapshots = deployment.query("SELECT status FROM pods_snapshot")

    survived = running and deleted and took < LOCK_WAIT_SECONDS and list(locks.iterdir()) == []
    fault_point("sigkill", "dedup restore, killed with its restic dump", survived=survived, lost_bytes=lost)
    harm("restic locks", "a restore worker killed with its restic dump, then a delete", lost_bytes=lost)
    context = f"locks left by the kill: {len(left)}; recovery: {report}; delete took {took:.1f} s"
    assert left, f"the kill left no lock: the case tested nothing ({context})"
    assert running and lost == 0, context
    assert deleted and took < LOCK_WAIT_SECONDS, context
    assert list(locks.iterdir()) == [] and all(status == "deleted" for (status,) in snapshots), context

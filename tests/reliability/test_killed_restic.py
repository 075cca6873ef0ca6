"""A worker killed with SIGKILL in the middle of a restore from a dedup store. With the stream
engine its `restic dump` dies with it and leaves its repository lock behind; beside the volumes
its helper's `restic restore` goes on alone, holding the pod's volumes and a lock. Recovery
finishes the start (stopping and removing a helper left on the pod first), and the next purge
(here the pod's delete) finds no lock to wait for: it runs at once instead of failing."""

import time

import pytest

from apps.pods.restic_helper import POD_OF_HELPER
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


@pytest.fixture(params=["stream", "beside"])
def dedup_deployment(request, tmp_path, template, pod_image, docker_client):
    panel = make_dedup_deployment(
        root=tmp_path,
        template=template,
        pod_image=pod_image,
        extra_env={"SNAPSHOT_LOCK_WAIT_SECONDS": str(LOCK_WAIT_SECONDS), "SNAPSHOT_ENGINE": request.param},
    )
    panel.engine = request.param
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
    if deployment.engine == "stream":  # killed while its `restic dump` streams into the volumes
        streamed = (
            "SELECT progress_done FROM audit_operation WHERE target_id = ? AND kind = 'pod.start' ORDER BY id DESC"
        )
        fired = lambda: (deployment.value(streamed, (pod_id,)) or 0) > 2 * 1024 * 1024  # noqa: E731
    else:  # killed while its helper's `restic restore` writes the volumes: the helper goes on alone
        fired = lambda: bool(docker_client.containers.list(filters={"label": f"{POD_OF_HELPER}={pod_id}"}))  # noqa: E731
    kill_when(deployment, worker, fired, what="restore")
    left = list(locks.iterdir())
    helpers = docker_client.containers.list(all=True, filters={"label": f"{POD_OF_HELPER}={pod_id}"})

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
    doing = "its restic dump" if deployment.engine == "stream" else "its restic helper restoring"
    fault_point("sigkill", f"dedup restore, killed with {doing}", survived=survived, lost_bytes=lost)
    harm("restic locks", f"a restore worker killed with {doing}, then a delete", lost_bytes=lost)
    context = (
        f"locks left by the kill: {len(left)}; helpers left: {len(helpers)}; recovery: {report}; took {took:.1f} s"
    )
    # A case that left nothing behind tested nothing: a lock of the dead restic, or the helper
    # still writing the pod's volumes (the resumed start stops and removes it first).
    assert left or helpers, f"the kill left no lock and no helper: the case tested nothing ({context})"
    assert docker_client.containers.list(all=True, filters={"label": f"{POD_OF_HELPER}={pod_id}"}) == [], context
    assert running and lost == 0, context
    assert deleted and took < LOCK_WAIT_SECONDS, context
    assert list(locks.iterdir()) == [] and all(status == "deleted" for (status,) in snapshots), context

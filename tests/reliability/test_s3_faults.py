"""S3 failing at random points of a snapshot (issue #7): refused connections, 500s and
answers slower than the read timeout, injected on the wire by `tests/fakes/s3_faults.py`
between the real boto3 client and moto's real S3 server.

Whatever the fault and wherever it lands: the stop fails with the reason, the pod is
paused with all eight volumes and its container, the snapshot is failed, the files are
untouched; once the store is back the same stop completes and a start restores every byte.
The points inside a snapshot (which part, which verification read) are drawn from
`random.Random(FAULT_SEED)`; the seed is in every test id, so `FAULT_SEED=<n>` replays one.
"""

import hashlib
import io
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pytest

from apps.pods import services, snapshots
from apps.pods.models import VOLUME_MOUNTS, Pod, Snapshot, container_name
from apps.pods.snapshots import StoreError
from controlpanel.errors import Unreachable
from tests.fakes.s3_faults import KINDS, S3FaultProxy
from tests.pods import conftest as pods_conftest
from tests.pods.conftest import (
    DOCKER_MANAGED,
    WRITE_SCRIPT,
    container_exists,
    listing,
    pod_volumes,
    run_in,
)
from tests.reliability.pod_files import digests, file_sizes, lost_bytes

# The pods tests' fixtures, shared (pytest finds fixtures among a module's names).
new_pod_id = pods_conftest.new_pod_id
pods_settings = pods_conftest.pods_settings

pytestmark = [pytest.mark.django_db, pytest.mark.docker, pytest.mark.s3]

SEED = int(os.environ.get("FAULT_SEED", "20240607"))
# S3's smallest part (moto enforces it too): the workspace volume then spans several parts.
PART_SIZE = 5 * 1024 * 1024
BIG_MIB = 16  # workspace ≈ 16 MiB → four UploadParts (5+5+5+1)
PARTS = 4
TIMEOUT = 1.0
BIG_FILE_SCRIPT = f"dd if=/dev/urandom of=/workspace/big.bin bs=1M count={BIG_MIB} 2>/dev/null"
# How each kind of fault must read in the error the person sees.
REASONS = {"refuse": "unreachable", "error500": "HTTP 500", "slow": "timeout"}


@dataclass(frozen=True)
class Point:
    label: str
    arm: dict = field(default_factory=dict)


def _stop_points(rng: random.Random) -> dict[str, Point]:
    part = rng.randint(2, PARTS - 1)
    head = rng.randint(1, len(VOLUME_MOUNTS))
    reads = [
        Point(f"HeadObject #{head} (verify)", {"operation": "HeadObject", "nth": head}),
        Point("GetObject manifest (read back)", {"operation": "GetObject", "key_suffix": "/manifest.json"}),
    ]
    return {
        "first": Point("the first request", {"nth": 1}),
        "create": Point("CreateMultipartUpload", {"operation": "CreateMultipartUpload"}),
        "part": Point(f"UploadPart #{part} of {PARTS}", {"operation": "UploadPart", "nth": part}),
        "complete": Point("CompleteMultipartUpload", {"operation": "CompleteMultipartUpload"}),
        "manifest": Point("PutObject manifest", {"operation": "PutObject", "key_suffix": "/manifest.json"}),
        "verify": rng.choice(reads),
    }


def _stop_cases(seed: int) -> list:
    """Every point once, the kinds rotated over them from a seeded offset; the part in the
    middle of an upload gets every kind."""
    rng = random.Random(seed)
    points = _stop_points(rng)
    kinds = list(KINDS)
    offset = rng.randrange(len(kinds))
    cases = [(kinds[(offset + i) % len(kinds)], point) for i, point in enumerate(points.values())]
    cases += [(kind, points["part"]) for kind in kinds if (kind, points["part"]) not in cases]
    return [
        pytest.param(kind, point, id=f"seed{seed}-{kind}-at-{point.label.replace(' ', '_')}") for kind, point in cases
    ]


@pytest.fixture
def s3_proxy(s3_server, s3_bucket, settings, monkeypatch):
    """The fault proxy in front of moto, with the panel's S3 client pointed at it and short
    timeouts, so a slow answer is a timeout in a second, not in two minutes. One attempt per
    request: these faults last until disarmed, so botocore's retries would only add time
    (the transient test turns them back on)."""
    proxy = S3FaultProxy(s3_server.endpoint_url, hold_seconds=10 * TIMEOUT).start()
    settings.AWS_ENDPOINT_URL = proxy.endpoint_url
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    settings.S3_CONNECT_TIMEOUT_SECONDS = TIMEOUT
    settings.S3_READ_TIMEOUT_SECONDS = TIMEOUT
    settings.S3_MAX_ATTEMPTS = 1
    monkeypatch.setattr(snapshots, "PART_SIZE", PART_SIZE)

    def back() -> None:
        """The store is back, as production meets it: the client's usual timeouts and
        retries. A server slowed by a busy machine (four test workers on two cores) is not
        the fault under test, and a retry that timed out after one second would say so."""
        proxy.disarm()
        settings.S3_CONNECT_TIMEOUT_SECONDS, settings.S3_READ_TIMEOUT_SECONDS = 10.0, 60.0
        settings.S3_MAX_ATTEMPTS = 3

    proxy.back = back
    yield proxy
    proxy.stop()


def archived_digests(docker_client, pod_id: str) -> dict[str, str]:
    """path → md5 of every file in the eight volumes, read through the engine's archive API:
    it works on the stopped container of a paused pod, where `listing` cannot exec."""
    found = {}
    for mount in VOLUME_MOUNTS.values():
        stream, _stat = docker_client.api.get_archive(container_name(pod_id), mount)
        # The tar holds the mount folder by its last name (`local/…` for /usr/local).
        parent = PurePosixPath(mount).parent
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r|") as tar:
            for member in tar:
                path = str(parent / member.name)
                if member.isfile() and path not in DOCKER_MANAGED:
                    found[path] = hashlib.md5(tar.extractfile(member).read(), usedforsecurity=False).hexdigest()
    return found


def running_pod_with_data(docker_client, new_pod_id) -> tuple[str, list[str], dict[str, int]]:
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, WRITE_SCRIPT + BIG_FILE_SCRIPT)
    return pod_id, listing(docker_client, pod_id), file_sizes(docker_client, pod_id)


def multipart_uploads(s3_server, bucket: str, pod_id: str) -> list[str]:
    answer = s3_server.client().list_multipart_uploads(Bucket=bucket, Prefix=f"snaps/{pod_id}/")
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def _fails_with_the_reason(action, kind: str, problems: list[str]) -> None:
    try:
        action()
        problems.append("it completed although the store failed")
    except (Unreachable, StoreError) as exc:
        if REASONS[kind] not in str(exc):
            problems.append(f"the error does not name the reason ({REASONS[kind]!r}): {exc}")
    except Exception as exc:  # a failure a person cannot read is a finding, recorded like any other
        problems.append(f"the store's failure came out as {type(exc).__name__}: {exc}")


def _restored(docker_client, pod_id: str, before: list[str], problems: list[str]) -> dict[str, str] | None:
    """Start the stopped pod; what its files hold afterwards (None if it did not start)."""
    try:
        services.pod_start(pod_id=pod_id, actor="test")
    except Exception as exc:
        problems.append(f"the retried start failed: {type(exc).__name__}: {exc}")
        return None
    after = listing(docker_client, pod_id)
    if after != before:
        problems.append(f"the restored listing differs: {sorted(set(before) ^ set(after))[:6]}")
    return digests(after)


@pytest.mark.parametrize(("kind", "point"), _stop_cases(SEED))
def test_s3_fault_during_stop_keeps_every_volume_and_the_retry_completes(
    kind, point, docker_client, new_pod_id, s3_server, s3_bucket, s3_proxy, fault_point
):
    pod_id, before, sizes = running_pod_with_data(docker_client, new_pod_id)
    problems: list[str] = []

    s3_proxy.arm(kind, **point.arm)
    _fails_with_the_reason(lambda: services.pod_stop(pod_id=pod_id, actor="test"), kind, problems)
    if not s3_proxy.injected:
        problems.append(f"the fault never struck; requests seen: {s3_proxy.operations()}")
    pod = Pod.objects.get(pod_id=pod_id)
    if pod.status != Pod.Status.PAUSED or REASONS[kind] not in pod.last_error:
        problems.append(f"pod is {pod.status} with last_error {pod.last_error!r}")
    volumes, container = pod_volumes(docker_client, pod_id), container_exists(docker_client, pod_id)
    if len(volumes) != 8 or not container:
        problems.append(f"volumes left {volumes}, container left: {container}")
    failed = Snapshot.objects.filter(pod=pod).order_by("-pk").first()
    if failed is None or failed.status != Snapshot.Status.FAILED or not failed.error:
        problems.append(f"snapshot is {failed and failed.status} with error {failed and failed.error!r}")
    during = archived_digests(docker_client, pod_id) if container else None
    if during != digests(before):
        changed = sorted(set((during or {}).items()) ^ set(digests(before).items()))
        problems.append(f"the files in the volumes changed although the stop failed: {changed[:6]}")

    # The store is back: the same stop finishes and a start restores every byte.
    s3_proxy.back()
    after = None
    try:
        result = services.pod_stop(pod_id=pod_id, actor="test")
    except Exception as exc:
        problems.append(f"the retried stop failed: {type(exc).__name__}: {exc}")
    else:
        complete = list(Snapshot.objects.filter(pod=pod, status=Snapshot.Status.COMPLETE).values_list("pk", flat=True))
        if Pod.objects.get(pod_id=pod_id).status != Pod.Status.STOPPED or pod_volumes(docker_client, pod_id):
            problems.append(f"the retried stop left volumes {pod_volumes(docker_client, pod_id)}")
        if complete != [result["snapshot"]]:
            problems.append(f"complete snapshots {complete}, expected [{result['snapshot']}]")
        # Retention purges the failed attempt, unfinished uploads its fault stranded included.
        services.snapshots_apply_retention(actor="test")
        if leftover := multipart_uploads(s3_server, s3_bucket, pod_id):
            problems.append(f"unfinished multipart uploads remain after retention: {leftover}")
        after = _restored(docker_client, pod_id, before, problems)

    lost = lost_bytes(sizes, digests(before), during, after)
    fault_point("s3", f"{kind} at {point.label} (seed {SEED})", survived=not problems, lost_bytes=lost)
    assert not problems, f"FAULT_SEED={SEED} {kind} at {point.label}: " + "; ".join(problems)
    assert lost == 0


def test_one_transient_s3_fault_is_absorbed_by_the_clients_retry(
    docker_client, new_pod_id, s3_proxy, settings, fault_point
):
    settings.S3_MAX_ATTEMPTS = 3  # the default
    part = random.Random(SEED).randint(1, PARTS)
    pod_id, before, sizes = running_pod_with_data(docker_client, new_pod_id)
    problems = []

    s3_proxy.arm("error500", operation="UploadPart", nth=part, times=1)
    try:
        services.pod_stop(pod_id=pod_id, actor="test")
    except Exception as exc:
        problems.append(f"one transient 500 failed the stop: {type(exc).__name__}: {exc}")
    if s3_proxy.injected != 1:
        problems.append(f"{s3_proxy.injected} faults struck, expected one")
    statuses = list(Snapshot.objects.filter(pod__pod_id=pod_id).values_list("status", flat=True))
    if statuses != [Snapshot.Status.COMPLETE]:
        problems.append(f"snapshots {statuses}, expected one complete")
    after = _restored(docker_client, pod_id, before, problems) if not problems else None

    lost = lost_bytes(sizes, digests(before), after)
    point = f"one 500 at UploadPart #{part}, retried by botocore (seed {SEED})"
    fault_point("s3", point, survived=not problems, lost_bytes=lost)
    assert not problems, f"FAULT_SEED={SEED} {point}: " + "; ".join(problems)
    assert lost == 0


def test_s3_fault_during_restore_puts_the_pod_back_to_stopped_and_the_retry_restores_everything(
    docker_client, new_pod_id, s3_proxy, fault_point
):
    rng = random.Random(SEED)
    kind, read = rng.choice(["refuse", "error500"]), rng.randint(1, len(VOLUME_MOUNTS))
    pod_id, before, sizes = running_pod_with_data(docker_client, new_pod_id)
    services.pod_stop(pod_id=pod_id, actor="test")
    problems = []

    s3_proxy.arm(kind, operation="GetObject", nth=read)
    _fails_with_the_reason(lambda: services.pod_start(pod_id=pod_id, actor="test"), kind, problems)
    pod = Pod.objects.get(pod_id=pod_id)
    if pod.status != Pod.Status.STOPPED or REASONS[kind] not in pod.last_error:
        problems.append(f"pod is {pod.status} with last_error {pod.last_error!r}")
    if pod_volumes(docker_client, pod_id) or container_exists(docker_client, pod_id):
        problems.append(f"a partial restore was left behind: {pod_volumes(docker_client, pod_id)}")

    s3_proxy.back()
    after = _restored(docker_client, pod_id, before, problems)

    lost = lost_bytes(sizes, digests(before), after)
    point = f"{kind} at restore GetObject #{read} (seed {SEED})"
    fault_point("s3", point, survived=not problems, lost_bytes=lost)
    assert not problems, f"FAULT_SEED={SEED} {point}: " + "; ".join(problems)
    assert lost == 0

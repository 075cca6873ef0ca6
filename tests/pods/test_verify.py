"""Verification re-reads complete snapshots from the real stores (file, S3 on both servers,
restic's dedup store): a flipped byte fails and notifies; the budget rotates across runs."""

import hashlib
import json
import os
import shutil
import uuid
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind
from apps.audit.operations import run_now, run_scheduled
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from apps.pods.selectors import overview_section
from apps.pods.snapshots import store_from_url
from tests import parts
from tests.parts import require_part

pytestmark = pytest.mark.django_db


def pod_row(pod_id: str, status: str = Pod.Status.STOPPED) -> Pod:
    return Pod.objects.create(pod_id=pod_id, host=services.host_default(), image="pinacle-base:test", status=status)


def stored_snapshot(pod: Pod, *, volumes: dict[str, bytes] | None = None, finished=None) -> Snapshot:
    """A complete snapshot whose objects and manifest really are in the configured store."""
    store = store_from_url()
    finished = finished or timezone.now()
    snapshot = Snapshot.objects.create(
        pod=pod, store_url=store.url, status=Snapshot.Status.COMPLETE, finished_at=finished, created_at=finished
    )
    manifest = {}
    for name, body in (volumes or {"workspace": os.urandom(3000)}).items():
        key = f"{snapshot.prefix}/{name}.tar"
        store.put_small(key, body)
        manifest[name] = {"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    store.put_small(f"{snapshot.prefix}/manifest.json", json.dumps({"volumes": manifest}).encode())
    Snapshot.objects.filter(pk=snapshot.pk).update(
        manifest=manifest, total_bytes=sum(e["bytes"] for e in manifest.values())
    )
    snapshot.refresh_from_db()
    return snapshot


def flip_a_byte(snapshot: Snapshot, tmp_path, s3_bucket=None) -> None:
    """Same length, one byte different, written behind the store's back."""
    url = snapshot.store_url
    key = snapshot.manifest["workspace"]["key"]
    if url.startswith("file://"):
        path = tmp_path / "snapshots" / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif url.startswith("s3://"):
        from controlpanel.s3 import s3_client

        client = s3_client()
        full = f"snap/{key}"
        data = bytearray(client.get_object(Bucket=s3_bucket, Key=full)["Body"].read())
        data[len(data) // 2] ^= 0x01
        client.put_object(Bucket=s3_bucket, Key=full, Body=bytes(data))
    else:  # restic: a pack written for this snapshot, same length, other bytes
        repository = tmp_path / "dedup-repo" / "data"
        for pack in [p for p in repository.rglob("*") if p.is_file()]:
            data = bytearray(pack.read_bytes())
            for at in range(100, len(data) - 100, 512):
                data[at] ^= 0xFF
            pack.write_bytes(bytes(data))


def use_dedup(settings, tmp_path) -> None:
    if shutil.which("restic") is None:
        require_part("restic", "no restic binary", "Install Debian's restic: apt-get install restic")
    key = tmp_path / "snapshot.key"
    key.write_text(uuid.uuid4().hex)
    settings.SNAPSHOT_KEY_FILE = str(key)
    settings.SNAPSHOT_STORE_URL = f"dedup+file://{tmp_path / 'dedup-repo'}"
    store_from_url().repository_ensure()  # with its working key: each restic opens it fast


@pytest.fixture(params=["file", "dedup"])
def local_store(request, settings, tmp_path):
    if request.param == "dedup":
        use_dedup(settings, tmp_path)


def check_flipped_byte_fails(tmp_path, receiver, bucket=None) -> None:
    pod = pod_row(parts.pod_id("v"))
    snapshot = stored_snapshot(pod)

    result = services.snapshots_verify(actor="test")
    assert result["verified"] == [snapshot.pk] and result["failed"] == {}
    snapshot.refresh_from_db()
    assert snapshot.verified_at is not None and snapshot.verify_error == ""
    assert Pod.objects.get(pk=pod.pk).proven_at is not None

    flip_a_byte(snapshot, tmp_path, bucket)
    result = services.snapshots_verify(actor="test")

    assert list(result["failed"]) == [str(snapshot.pk)]
    snapshot.refresh_from_db()
    assert snapshot.verify_error and snapshot.verify_checked_at > snapshot.verified_at
    assert f"#{snapshot.pk} will not restore as it is: run Verify on pod {pod.pod_id}'s" in snapshot.verify_error
    failure = AuditEvent.objects.get(action=AuditAction.PODS_VERIFY, target_id=str(snapshot.pk))
    assert failure.outcome == "failed"
    [body] = receiver.bodies
    assert f"Snapshot #{snapshot.pk} of pod {pod.pod_id} failed verification" == body["title"]
    attention = [item.label for item in overview_section().attention]
    assert f"snapshot #{snapshot.pk} of pod {pod.pod_id} failed verification" in attention


def test_a_flipped_byte_in_a_file_or_dedup_store_fails_verification_and_notifies(local_store, tmp_path, receiver):
    check_flipped_byte_fails(tmp_path, receiver)


@pytest.mark.s3
def test_a_flipped_byte_in_an_s3_store_fails_verification_and_notifies(s3_bucket, settings, tmp_path, receiver):
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snap"
    check_flipped_byte_fails(tmp_path, receiver, s3_bucket)


def test_the_budget_is_respected_across_runs_oldest_verified_first(settings):
    settings.VERIFY_BYTES_PER_RUN = 2500
    pod = pod_row("rotating")
    start = timezone.now() - timedelta(days=10)
    snapshots = [
        stored_snapshot(pod, volumes={"workspace": os.urandom(1000)}, finished=start + timedelta(hours=i))
        for i in range(5)
    ]
    seen = []
    for day in range(3):
        with time_machine.travel(timezone.now() + timedelta(days=day, minutes=1), tick=False):
            finished = run_scheduled(Kind.PODS_VERIFY)
        assert finished.startswith("succeeded")
        seen.append(Operation.objects.filter(kind=Kind.PODS_VERIFY).order_by("-pk").first().result["verified"])
    pks = [s.pk for s in snapshots]
    # Two of 1,000 bytes fit in 2,500 (a third would not): the never-read first, then the
    # ones read longest ago.
    assert seen == [pks[0:2], pks[2:4], [pks[4], pks[0]]]
    assert Operation.objects.filter(kind=Kind.PODS_VERIFY).first().progress_total == 2000


def test_the_button_verifies_the_pods_latest_snapshot_alone(staff_client, q_sync, django_capture_on_commit_callbacks):
    pod = pod_row("button")
    older = stored_snapshot(pod, finished=timezone.now() - timedelta(days=1))
    latest = stored_snapshot(pod)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/pods/{pod.pod_id}/verify/")
    assert response.status_code == 302
    operation = Operation.objects.get(kind=Kind.PODS_VERIFY)
    assert operation.status == "succeeded", operation.error
    assert operation.result["verified"] == [latest.pk]
    assert Snapshot.objects.get(pk=older.pk).verified_at is None


def test_a_viewer_may_not_verify(viewer_client):
    pod = pod_row("viewed")
    stored_snapshot(pod)
    assert viewer_client.post(f"/pods/{pod.pod_id}/verify/").status_code == 403
    assert "Verify latest snapshot" not in viewer_client.get(f"/pods/{pod.pod_id}/").content.decode()
    assert not Operation.objects.exists()


def test_a_verification_that_passes_after_one_failed_clears_the_failure(tmp_path):
    pod = pod_row("healed")
    snapshot = stored_snapshot(pod)
    Snapshot.objects.filter(pk=snapshot.pk).update(verify_error="earlier failure")
    assert run_now(Kind.PODS_VERIFY, actor="test").result["verified"] == [snapshot.pk]
    assert Snapshot.objects.get(pk=snapshot.pk).verify_error == ""

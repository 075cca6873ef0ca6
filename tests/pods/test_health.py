"""/healthz on the pods' real parts: the local dockerd answers, a host that accepts and never
answers is reported within the deadline, the snapshot store takes a write (file and S3)."""

import time

import pytest
import time_machine

from apps.pods.models import DockerHost
from tests.fakes.silent_server import SilentServer

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


@pytest.fixture
def silent_host():
    server = SilentServer()
    yield server
    server.close()


def test_healthz_reports_each_docker_host_and_cuts_off_a_hung_one(
    client, docker_client, pods_settings, silent_host, settings
):
    settings.HEALTH_TIMEOUT_SECONDS = 2
    DockerHost.objects.create(name="local", base_url=settings.DOCKER_HOST)
    DockerHost.objects.create(name="hung", base_url=silent_host.url)
    started = time.monotonic()
    checks = client.get("/healthz").json()["checks"]
    assert time.monotonic() - started < 4
    assert checks["docker host local"] == {"ok": True, "message": "answers and starts containers"}
    assert checks["docker host hung"] == {"ok": False, "message": "no answer within 2 s"}
    assert silent_host.url not in str(checks)


def test_a_host_that_answers_but_cannot_run_a_container_is_not_healthy(client, docker_client, pods_settings, settings):
    DockerHost.objects.create(name="local", base_url=settings.DOCKER_HOST)
    # What a pod start needs and this host cannot give: its image (the same goes for a deleted
    # bridge network or a full disk, which this test must not do to the shared daemon).
    good_image = settings.POD_IMAGE
    settings.POD_IMAGE = "pinacle-no-such-image:gone"
    check = client.get("/healthz").json()["checks"]["docker host local"]
    assert check["ok"] is False
    assert check["message"].startswith("answers, but cannot run a container: ")
    assert "pinacle-no-such-image" in check["message"]
    # Probed at most once a minute: the answer stands until then, then the host is asked again.
    settings.POD_IMAGE = good_image
    assert client.get("/healthz").json()["checks"]["docker host local"]["ok"] is False
    with time_machine.travel(time.time() + 61):
        assert client.get("/healthz").json()["checks"]["docker host local"]["ok"] is True
    assert no_probe_container_within(docker_client, seconds=10)


def no_probe_container_within(docker_client, *, seconds: float) -> bool:
    """A probe left behind stays; another xdist worker's (or panel's) probe on the same daemon
    lives about a second: a moment with none at all proves ours went."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not docker_client.containers.list(all=True, filters={"label": "pinacle.helper=probe"}):
            return True
        time.sleep(0.2)
    return False


def test_the_snapshot_store_check_writes_reads_and_cleans_up(client, docker_client, panel_paths):
    checks = client.get("/healthz").json()["checks"]
    assert checks["snapshot store"] == {"ok": True, "message": "takes a write, reads it back"}
    leftovers = [p for p in (panel_paths / "snapshots").rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.s3
def test_the_snapshot_store_check_on_s3_and_when_the_bucket_is_gone(
    client, docker_client, s3_server, s3_bucket, settings
):
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    assert client.get("/healthz").json()["checks"]["snapshot store"]["ok"] is True
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    settings.SNAPSHOT_STORE_URL = "s3://no-such-bucket-here/snaps"
    store = client.get("/healthz").json()["checks"]["snapshot store"]
    assert store["ok"] is False and "no-such-bucket-here" in store["message"]

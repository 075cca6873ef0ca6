"""Issue #17 items 1, 2, 5, 6 on the pages: one rule for pod ids before anything is queued,
an id with snapshots asks how to begin, parts that reload when work ends, honest progress."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import Operation
from apps.pods.forms import POD_ID_PATTERN
from apps.pods.models import DockerHost, Pod, Snapshot
from apps.pods.services import pod_id_check
from controlpanel.errors import InvalidInput

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def local_host():
    return DockerHost.objects.get_or_create(name="local", defaults={"base_url": "unix:///var/run/docker.sock"})[0]


@pytest.mark.parametrize(
    "pod_id",
    ["a", "abc-1_x", "x" * 64, "x" * 65, "x" * 80, "x" * 129, "sweep", "retention", "sweeps", "a b", "a/b", "é", ""],
)
def test_the_browser_pattern_and_the_server_agree_on_every_id(pod_id):
    try:
        pod_id_check(pod_id)
        server = True
    except InvalidInput:
        server = False
    assert bool(re.fullmatch(POD_ID_PATTERN, pod_id)) is server


def test_a_long_id_is_refused_next_to_the_field_keeps_its_value_and_queues_nothing(staff_client):
    long_id = "p" * 80
    response = staff_client.post(reverse("pods:provision"), {"pod_id": long_id})
    body = response.content.decode()
    assert response.status_code == 400
    assert Operation.objects.count() == 0
    assert f'value="{long_id}"' in body  # the typed value stays
    error = re.search(r'<span class="error field-error" id="pod-id-error">([^<]*)</span>', body)
    assert error and "1–64" in error.group(1) and "80 characters" in error.group(1)
    assert 'maxlength="64"' not in body  # never cut silently in the browser


def test_an_id_with_snapshots_asks_how_to_begin_and_keeps_the_old_snapshots_apart(staff_client, local_host):
    pod = Pod.objects.create(pod_id="again", host=local_host, image="img", status=Pod.Status.DEPROVISIONED)
    old = Snapshot.objects.create(pod=pod, store_url="file:///old", status="complete", total_bytes=4096)
    response = staff_client.post(reverse("pods:provision"), {"pod_id": "again"})
    body = response.content.decode()
    assert response.status_code == 400 and Operation.objects.count() == 0
    assert f"the latest #{old.pk}" in body and 'value="latest"' in body and 'value="fresh"' in body
    # A new empty pod under the old id: its page lists the earlier pod's snapshot apart.
    Pod.objects.filter(pk=pod.pk).update(status=Pod.Status.RUNNING, created_at=timezone.now() + timedelta(seconds=1))
    page = staff_client.get(reverse("pods:detail", args=["again"])).content.decode()
    mine, earlier = page.split("From an earlier pod with this id")
    assert "file:///old" in earlier and "file:///old" not in mine and "No snapshots yet." in mine


def test_choosing_the_latest_snapshot_queues_a_start(staff_client, local_host, django_capture_on_commit_callbacks):
    pod = Pod.objects.create(pod_id="back", host=local_host, image="img", status=Pod.Status.DEPROVISIONED)
    Snapshot.objects.create(pod=pod, store_url="file:///old", status="complete", total_bytes=4096)
    with django_capture_on_commit_callbacks():
        response = staff_client.post(reverse("pods:provision"), {"pod_id": "back", "start": "latest"})
    assert response.status_code == 302
    assert list(Operation.objects.values_list("kind", "target_id")) == [("pod.start", "back")]


def test_a_finished_poll_tells_the_page_to_reload_its_parts(staff_client):
    operation = Operation.objects.create(kind="pod.stop", target_type="pod", target_id="x", actor_name="t")
    url = reverse("dashboard:operation-progress", args=[operation.pk])
    assert "HX-Trigger" not in staff_client.get(url + "?seen=pending")
    assert staff_client.get(url + "?seen=pending-no-more")["HX-Trigger"] == "operation-changed"
    Operation.objects.filter(pk=operation.pk).update(status=Operation.Status.SUCCEEDED)
    assert staff_client.get(url + "?seen=running")["HX-Trigger"] == "operation-finished"


def test_a_pod_page_part_renders_alone_and_listens_for_finished_work(staff_client, local_host):
    Pod.objects.create(pod_id="parts", host=local_host, image="img", status=Pod.Status.STOPPED)
    page = staff_client.get(reverse("pods:detail", args=["parts"]))
    # Head, volumes, backups, snapshots, proven restorable, audit trail.
    assert page.content.decode().count("operation-finished from:body") == 6
    for part_name, section in [("head", "pod-head"), ("backup", "pod-backups")]:
        part = staff_client.get(reverse("pods:detail", args=["parts"]) + f"?part={part_name}").content.decode()
        assert part.lstrip().startswith(f'<section class="card" id="{section}"') and "<html" not in part


def test_progress_never_shows_done_past_its_total(staff_client):
    operation = Operation.objects.create(
        kind="pod.stop",
        target_type="pod",
        target_id="x",
        actor_name="t",
        status=Operation.Status.RUNNING,
        progress_done=630 * 2**20,
        progress_total=30 * 2**20,
        progress_unit="bytes",
        log="2026-01-01 00:00:00 streaming /workspace\n",
    )
    body = staff_client.get(reverse("dashboard:operation-progress", args=[operation.pk])).content.decode()
    assert "630.0 MiB so far" in body and "of 30.0 MiB" not in body
    assert "Streaming /workspace" in body
    assert re.search(r"<progress aria-label=\"in progress, total not known yet\"></progress>", body)
    Operation.objects.filter(pk=operation.pk).update(progress_done=10 * 2**20, log="")
    body = staff_client.get(reverse("dashboard:operation-progress", args=[operation.pk])).content.decode()
    assert "10.0 MiB of 30.0 MiB" in body and "Starting" in body

"""The shortcuts the list pages and the overview take at scale say the same as the long way:
retention counted in SQL, the capped leftover-volume leaks, mix job pages counted from the
cached totals (and a write showing on the next view), live sessions read through their index."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.audit.services import operation_create
from apps.mixjobs.services import mixjobs_sync
from apps.pods import selectors as pod_selectors
from apps.pods.models import DockerHost, Pod, PodVolume, Snapshot, volume_docker_name
from apps.separations.models import SeparationSession
from tests import scale
from tests.mixjobs.helpers import write_job

pytestmark = pytest.mark.django_db


def make_pod(pod_id: str, status: str, *, existing: int = 0, size: int = 100) -> Pod:
    host = DockerHost.objects.get_or_create(name="local", defaults={"base_url": "unix:///var/run/docker.sock"})[0]
    pod = Pod.objects.create(pod_id=pod_id, host=host, image="img", status=status)
    PodVolume.objects.bulk_create(
        PodVolume(
            pod=pod,
            name=name,
            docker_name=volume_docker_name(pod_id, name),
            mount_path=f"/{name}",
            exists=n < existing,
            size_bytes=size,
        )
        for n, name in enumerate(["workspace", "home", "root", "etc"])
    )
    return pod


def snapshot(pod: Pod, status: str, age_hours: int, *, total: int = 0, done: int = 0) -> Snapshot:
    finished = timezone.now() - timedelta(hours=age_hours)
    return Snapshot.objects.create(
        pod=pod, status=status, store_url="file:///s", total_bytes=total, bytes_done=done, finished_at=finished
    )


def test_retention_totals_in_sql_match_the_retention_run(settings):
    settings.SNAPSHOT_RETENTION = 2
    many = make_pod("many", Pod.Status.STOPPED)
    for age in range(5):  # the two newest stay, three go
        snapshot(many, "complete", age, total=1000 + age)
    snapshot(many, "failed", 9, done=33)  # failed: goes, counted by bytes done
    restoring = make_pod("restoring", Pod.Status.STARTING)
    being_restored = snapshot(restoring, "complete", 0, total=7)
    for age in range(1, 4):  # the one being restored neither goes nor counts towards the two kept
        snapshot(restoring, "complete", age, total=10 * age)
    Pod.objects.filter(pk=restoring.pk).update(restoring_snapshot=being_restored)
    busy = make_pod("busy", Pod.Status.RUNNING)
    for age in range(4):
        snapshot(busy, "complete", age, total=5)
    snapshot(busy, "failed", 9, done=5)
    operation_create(kind="pods.stop", target_type="pod", target_id="busy", actor="tests")
    snapshot(make_pod("one", Pod.Status.STOPPED), "complete", 1, total=9)

    retire = pod_selectors.snapshot_leaks()
    totals = pod_selectors.snapshot_leaks_totals()
    assert totals == {"count": len(retire), "bytes": sum(s.total_bytes or s.bytes_done for s in retire)}
    assert totals["count"] == 5  # three of "many", its failed one, the oldest of "restoring"
    assert pod_selectors.snapshot_leaks_totals(keep=1) == {
        "count": len(pod_selectors.snapshot_leaks(keep=1)),
        "bytes": sum(s.total_bytes or s.bytes_done for s in pod_selectors.snapshot_leaks(keep=1)),
    }


def test_leftover_volume_leaks_are_capped_and_the_rest_counted_in_one_line(monkeypatch):
    monkeypatch.setattr(pod_selectors, "LEFTOVERS_SHOWN", 2)
    make_pod("big", Pod.Status.DEPROVISIONED, existing=2, size=500)
    make_pod("mid", Pod.Status.STOPPED, existing=1, size=400)
    make_pod("small", Pod.Status.FAILED, existing=1, size=100)
    make_pod("tiny", Pod.Status.DELETED, existing=1, size=50)
    make_pod("fine", Pod.Status.RUNNING, existing=4, size=999)  # holds its volumes: no leak

    leaks = [leak for leak in pod_selectors.overview_section().leaks if "still exist" in leak.label]

    assert [leak.label for leak in leaks] == [
        "2 volumes of deprovisioned pod big still exist",
        "1 volumes of stopped pod mid still exist",
        "volumes of 2 more stopped, deprovisioned, deleted or failed pods still exist",
    ]
    assert [leak.bytes for leak in leaks] == [1000, 400, 150]


def test_all_leftover_leaks_listed_when_under_the_cap():
    make_pod("gone", Pod.Status.DEPROVISIONED, existing=3, size=10)
    leaks = [leak for leak in pod_selectors.overview_section().leaks if "still exist" in leak.label]
    assert [(leak.label, leak.bytes) for leak in leaks] == [("3 volumes of deprovisioned pod gone still exist", 30)]


def test_mix_job_pages_are_counted_from_the_totals_and_a_sync_shows_at_once(staff_client):
    now = timezone.now()
    for n in range(100):
        write_job(f"s{n % 7}", f"j{n}", state="complete", updated_at=now, index=None, output=False)
    mixjobs_sync(actor="tests")
    url = reverse("mixjobs:list")
    assert "page 1 of 2" in staff_client.get(url).text  # 100 live jobs, 50 a page
    assert "page 1 of 2" in staff_client.get(url).text  # again, from the cached totals
    write_job("s1", "one-more", state="error", updated_at=now, index=None, output=False)
    mixjobs_sync(actor="tests")  # drops the cached totals: the next view counts 101
    assert "page 1 of 3" in staff_client.get(url).text
    # A filtered page counts its own rows: one job in error, no second page.
    assert "page 1 of" not in staff_client.get(url, {"state": "error"}).text


def test_live_sessions_list_leaves_out_deleted_ones(staff_client, settings, tmp_path):
    volume = tmp_path / "music-split-jobs-data"
    volume.mkdir()
    settings.SESSIONS_VOLUME_URL = f"local://{volume}"
    scale.seed_sessions(3)
    SeparationSession.objects.filter(session_id="seed-1").update(status=SeparationSession.Status.DELETED)
    body = staff_client.get(reverse("separations:list")).text
    assert "seed-0" in body and "seed-2" in body and "seed-1" not in body


def test_leak_report_pages_the_rows_and_counts_every_leak(staff_client):
    for n in range(55):
        make_pod(f"gone{n:02}", Pod.Status.DEPROVISIONED, existing=1, size=1000 + n)
    url = reverse("dashboard:leaks")
    first = staff_client.get(url).text
    assert "held by 55 leaks" in first and "page 1 of 2" in first
    assert "pod gone54 still exist" in first and "pod gone00 still exist" not in first  # largest first
    second = staff_client.get(url, {"page": 2}).text
    assert "pod gone00 still exist" in second and "pod gone54 still exist" not in second

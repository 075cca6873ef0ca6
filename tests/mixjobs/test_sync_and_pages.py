import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse

from apps.audit.holds import hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import TargetType
from apps.audit.operations import run_operation
from apps.audit.overview import overview_providers
from apps.mixjobs.models import MixJob
from apps.mixjobs.services import mixjobs_cleanup, mixjobs_sync
from tests.mixjobs.helpers import NOW, atomic_write, job_path, output_path, write_job

pytestmark = pytest.mark.django_db


def test_sync_mirrors_every_field_and_marks_problems(clock):
    write_job("s1", "done", state="complete", updated_at=NOW - timedelta(hours=10), message="exported")
    write_job("s1", "busy", state="mixing", updated_at=NOW - timedelta(hours=7))
    atomic_write(job_path("s2", "broken"), b'{"job_id": "broken", "sess')
    result = mixjobs_sync(actor="tests")
    assert (result["jobs"], result["problems"]) == (3, 1)
    done = MixJob.objects.get(job_id="done")
    assert (done.state, done.progress, done.message, done.extra) == ("complete", 100, "exported", {"tracks": 4})
    assert done.updated_at == NOW - timedelta(hours=10)
    assert done.expires_at == NOW + timedelta(hours=38)
    assert done.output_bytes == output_path("s1").stat().st_size
    assert MixJob.objects.get(job_id="busy").expires_at is None
    assert "not valid JSON" in MixJob.objects.get(job_id="broken").problem


def test_sync_updates_in_place_and_marks_vanished_jobs(clock):
    write_job("s1", "a", state="mixing", updated_at=NOW)
    write_job("s1", "b", state="mixing", updated_at=NOW)
    mixjobs_sync(actor="tests")
    write_job("s1", "a", state="complete", updated_at=NOW)
    job_path("s1", "b").unlink()
    mixjobs_sync(actor="tests")
    assert MixJob.objects.count() == 2
    assert MixJob.objects.get(job_id="a").state == "complete"
    assert MixJob.objects.get(job_id="b").vanished_at == NOW


def test_sync_query_count_does_not_depend_on_the_number_of_jobs(clock, django_assert_max_num_queries):
    for index in range(10):
        write_job(f"s{index % 2}", f"small-{index}", state="complete", updated_at=NOW)
    with django_assert_max_num_queries(8):
        mixjobs_sync(actor="tests")
    for index in range(6000):
        write_job(f"s{index % 20}", f"big-{index}", state="complete", updated_at=NOW, index=None, output=False)
    # At most one query per 1,000 jobs on top of the same few: the vanished update, the size sample.
    with django_assert_max_num_queries(8 + 6):
        mixjobs_sync(actor="tests")
    assert MixJob.objects.count() == 6010


def test_list_page_filters_and_counts(staff_client, clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s1", "stuck", state="mixing", updated_at=NOW - timedelta(hours=7))
    write_job("s2", "fresh", state="queued", updated_at=NOW)
    mixjobs_sync(actor="tests")
    page = staff_client.get(reverse("mixjobs:list"))
    assert page.status_code == 200 and "old" in page.text and "fresh" in page.text
    expired = staff_client.get(reverse("mixjobs:list"), {"expired": "yes"}).text
    assert "<code>old</code>" in expired and "<code>fresh</code>" not in expired
    stalled = staff_client.get(reverse("mixjobs:list"), {"stalled": "yes"}).text
    assert "<code>stuck</code>" in stalled and "<code>old</code>" not in stalled
    by_session = staff_client.get(reverse("mixjobs:list"), {"session": "s2"}).text
    assert "<code>fresh</code>" in by_session and "<code>old</code>" not in by_session


def test_list_page_query_count_is_fixed(staff_client, clock, django_assert_max_num_queries):
    for index in range(120):
        write_job(f"s{index % 7}", f"j{index}", state="complete", updated_at=NOW, index=None, output=False)
    mixjobs_sync(actor="tests")
    # session + user, counts by state, totals, size sample, page count, page rows (+ permission lookups)
    with django_assert_max_num_queries(9):
        staff_client.get(reverse("mixjobs:list"))


def test_preview_then_confirm_runs_the_cleanup_as_an_operation(staff_client, clock, django_capture_on_commit_callbacks):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    preview = staff_client.get(reverse("mixjobs:cleanup"))
    assert str(job_path("s1", "old")) in preview.text and "Delete these jobs" in preview.text
    assert job_path("s1", "old").exists() and AuditEvent.objects.count() == 0  # looking writes nothing
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(reverse("mixjobs:cleanup-run"), {"confirm": "yes"})
    operation = Operation.objects.get(kind="mixjobs.cleanup")
    assert response["Location"] == reverse("dashboard:operation", args=[operation.pk]) and len(callbacks) == 1
    run_operation(operation.pk)  # what the worker does with the queued id
    operation.refresh_from_db()
    assert operation.status == "succeeded" and operation.result["deleted_jobs"] == 1
    assert not job_path("s1", "old").exists()


def test_preview_of_a_bad_session_id_is_a_clear_400(staff_client):
    response = staff_client.get(reverse("mixjobs:cleanup"), {"session": "../etc"})
    assert response.status_code == 400 and "is not valid" in response.text


def test_viewer_sees_the_preview_but_cannot_confirm(viewer_client, clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    assert viewer_client.get(reverse("mixjobs:cleanup")).status_code == 200
    assert viewer_client.post(reverse("mixjobs:cleanup-run"), {"confirm": "yes"}).status_code == 403
    assert job_path("s1", "old").exists()


def test_admin_action_opens_the_same_preview(staff_client, clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    mixjobs_sync(actor="tests")
    job = MixJob.objects.get()
    response = staff_client.post(
        reverse("admin:mixjobs_mixjob_changelist"), {"action": "clean_up_expired", "_selected_action": [job.pk]}
    )
    assert response.status_code == 302 and response["Location"] == reverse("mixjobs:cleanup") + "?session=s1"


def test_cli_cleanup_json_and_dry_run(clock, capsys):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s1", "new", state="complete", updated_at=NOW)
    call_command("mixjobs", "cleanup", "--dry-run", "--json")
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and [j["job_id"] for j in dry["deleted_jobs"]] == ["old"]
    assert job_path("s1", "old").exists()
    call_command("mixjobs", "cleanup", "--session", "s1", "--json")
    real = json.loads(capsys.readouterr().out)
    assert set(real) >= {"deleted_jobs", "deleted_files", "bytes_reclaimed", "skipped"}
    assert [j["job_id"] for j in real["deleted_jobs"]] == ["old"] and real["bytes_reclaimed"] > 0
    assert not job_path("s1", "old").exists() and job_path("s1", "new").exists()
    assert list(AuditEvent.objects.values_list("outcome", flat=True).order_by("id")) == ["dry_run", "succeeded"]


def test_cli_refuses_a_bad_session_with_one_line(clock):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="session id '../x' is not valid"):
        call_command("mixjobs", "cleanup", "--session", "../x")


def test_the_leak_is_what_the_cleanup_reclaims(clock):
    # s1: every job expired, so its output goes too; s2: a fresh job keeps the output; s3 is held.
    write_job("s1", "a", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s1", "b", state="error", updated_at=NOW - timedelta(hours=30))
    write_job("s2", "c", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s2", "d", state="complete", updated_at=NOW)
    write_job("s3", "e", state="complete", updated_at=NOW - timedelta(hours=50))
    hold_set(target_type=TargetType.MIXJOB_SESSION, target_id="s3", reason="keep", actor="tests")
    mixjobs_sync(actor="tests")
    section = next(p for p in overview_providers() if p.app_label == "mixjobs").section()
    (leak,) = section.leaks
    assert leak.label == "3 expired mix jobs not yet removed"
    report = mixjobs_cleanup(actor="tests")
    assert report.bytes_reclaimed > 0 and leak.bytes == report.bytes_reclaimed


def test_overview_reports_expired_jobs_as_a_leak(staff_client, clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    mixjobs_sync(actor="tests")
    leaks = staff_client.get(reverse("dashboard:leaks")).text
    assert "1 expired mix job not yet removed" in leaks and reverse("mixjobs:cleanup") in leaks

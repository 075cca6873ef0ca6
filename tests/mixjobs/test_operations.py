import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind
from apps.audit.operations import SCHEDULE_TASK, kind_get, request, run_now, run_scheduled
from apps.audit.overview import Leak, OverviewSection, overview_providers
from apps.audit.schedules import collect_schedules
from apps.mixjobs.services import mixjobs_sync
from controlpanel.formatting import humanize_bytes
from controlpanel.preview import Preview
from tests.mixjobs.helpers import NOW, atomic_write, index_path, job_path, output_path, write_job

pytestmark = pytest.mark.django_db


def test_each_kind_is_declared_once_with_its_schedule():
    schedules = collect_schedules()
    assert ("mix jobs sync", SCHEDULE_TASK, repr("mixjobs.sync"), 15) in schedules
    assert ("mix jobs cleanup", SCHEDULE_TASK, repr("mixjobs.cleanup"), 60) in schedules
    session = kind_get(Kind.MIXJOBS_CLEANUP_SESSION)
    assert session.schedule is None and session.permission == "mixjobs.cleanup_mixjob"
    assert kind_get(Kind.MIXJOBS_SYNC).permission == "mixjobs.cleanup_mixjob"


def test_the_scheduled_cleanup_runs_as_an_operation(clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    held = sum(path.stat().st_size for path in (job_path("s1", "old"), index_path("old"), output_path("s1")))
    outcome = run_scheduled(Kind.MIXJOBS_CLEANUP)
    assert outcome == (
        f"succeeded: Deleted 1 expired job (3 files), reclaiming {humanize_bytes(held)}; 0 files skipped."
    )
    operation = Operation.objects.get()
    assert (operation.kind, operation.target_id, operation.actor_name) == (
        "mixjobs.cleanup",
        "cleanup",
        "schedule:mix jobs cleanup",
    )
    assert not job_path("s1", "old").exists() and not output_path("s1").exists()
    assert AuditEvent.objects.get().operation == operation


def test_a_scheduled_sync_skips_its_turn_while_a_sync_is_queued(clock, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        queued = request(Kind.MIXJOBS_SYNC, actor="tests")
    assert run_scheduled(Kind.MIXJOBS_SYNC).startswith("skipped: ")
    assert list(Operation.objects.values_list("pk", flat=True)) == [queued.pk]


def test_a_sync_says_what_it_found_in_one_sentence(clock):
    write_job("s1", "a", state="complete", updated_at=NOW)
    held = sum(path.stat().st_size for path in (job_path("s1", "a"), index_path("a"), output_path("s1")))
    operation = run_now(Kind.MIXJOBS_SYNC, actor="tests")
    assert operation.result["jobs"] == 1 and " KiB" in humanize_bytes(held)
    assert operation.result["summary"] == f"Mirrored 1 job (0 with problems); 0 vanished; {humanize_bytes(held)} held."


def test_confirming_several_sessions_queues_all_or_none(staff_client, clock, django_capture_on_commit_callbacks):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    url = reverse("mixjobs:cleanup-run")
    with django_capture_on_commit_callbacks() as callbacks:
        refused = staff_client.post(url, {"confirm": "yes", "session": ["s1", "../etc"]}, follow=True)
    # The first session was accepted before the second was refused: it must not stay pending.
    assert not Operation.objects.exists() and callbacks == []
    assert any("session id '../etc' is not valid" in str(m) for m in refused.context["messages"])

    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(url, {"confirm": "yes", "session": ["s1", "s2", "s1"]})
    operations = list(Operation.objects.order_by("pk"))
    assert [(o.kind, o.target_id, o.status) for o in operations] == [
        ("mixjobs.cleanup-session", "s1", "pending"),
        ("mixjobs.cleanup-session", "s2", "pending"),
    ]
    assert len(callbacks) == 2 and response["Location"] == reverse("dashboard:operation", args=[operations[0].pk])


def test_unconfirmed_post_queues_nothing(staff_client, clock):
    response = staff_client.post(reverse("mixjobs:cleanup-run"), {"session": "s1"})
    assert response.status_code == 302 and not Operation.objects.exists()


def test_preview_lists_every_file_that_would_go_and_every_file_kept(staff_client, clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s2", "done", state="complete", updated_at=NOW - timedelta(hours=1))
    write_job("s2", "busy", state="mixing", updated_at=NOW - timedelta(hours=90))
    atomic_write(job_path("s3", "broken"), b'{"job_id": "broken"')

    response = staff_client.get(reverse("mixjobs:cleanup"))

    preview = response.context["preview"]
    assert isinstance(preview, Preview) and response.status_code == 200
    gone = {item.path: item for item in preview.delete}
    expected = [index_path("old"), job_path("s1", "old"), output_path("s1")]
    assert list(gone) == [str(path) for path in expected]
    assert all(gone[str(path)].bytes == path.stat().st_size for path in expected)
    assert gone[str(job_path("s1", "old"))].why == "complete job old, expired 2026-11-20 10:00 UTC"
    assert gone[str(output_path("s1"))].why == "the session's output; none of its jobs remain"
    assert gone[str(index_path("old"))].name == "jobs_index/old.json"
    kept = {item.path: item.why for item in preview.keep}
    assert kept[str(job_path("s2", "done"))] == "complete, expires 2026-11-22 11:00 UTC"
    assert kept[str(job_path("s2", "busy"))] == "mixing: still in progress, never expires"
    assert kept[str(output_path("s2"))] == "the session's output; 2 jobs of the session remain"
    assert "not valid JSON" in kept[str(job_path("s3", "broken"))]
    assert preview.total_bytes == sum(path.stat().st_size for path in expected)
    assert "1 expired job in all sessions" in response.text and "Delete these jobs" in response.text
    assert not AuditEvent.objects.exists() and not Operation.objects.exists()
    assert all(path.exists() for path in expected)


def test_preview_with_nothing_expired_offers_no_button(staff_client, clock):
    write_job("s1", "new", state="complete", updated_at=NOW)
    response = staff_client.get(reverse("mixjobs:cleanup"), {"session": "s1"})
    assert "Nothing has expired: there is nothing to delete." in response.text
    assert "Delete these jobs" not in response.text and reverse("mixjobs:cleanup-run") not in response.text


def test_overview_provider_offers_a_typed_section_with_leaks(clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    mixjobs_sync(actor="tests")
    provider = next(p for p in overview_providers() if p.app_label == "mixjobs")
    assert (provider.title, provider.order) == ("Mix jobs", 30)
    section = provider.section()
    assert isinstance(section, OverviewSection) and section.url == reverse("mixjobs:list")
    assert section.bytes == job_path("s1", "old").stat().st_size + index_path("old").stat().st_size + 4096
    assert section.leaks == [
        Leak(
            label="1 expired mix job not yet removed",
            domain="mixjobs",
            bytes=section.bytes,  # the cleanup takes the job, its index and the session's output
            fix_url=reverse("mixjobs:cleanup"),
            fix_label="Clean up expired jobs",
        )
    ]


def test_cli_cleanup_and_sync_run_as_operations(clock, capsys):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    call_command("mixjobs", "sync", "--json")
    assert json.loads(capsys.readouterr().out)["jobs"] == 1
    call_command("mixjobs", "cleanup", "--session", "s1")
    assert capsys.readouterr().out.startswith("deleted 1 job(s), ")
    call_command("mixjobs", "cleanup", "--dry-run")
    assert capsys.readouterr().out.startswith("would delete 0 job(s), 0 bytes; 0 skipped")
    rows = list(Operation.objects.order_by("pk").values_list("kind", "target_id", "actor_name", "status"))
    assert rows == [
        ("mixjobs.sync", "sync", "cli", "succeeded"),
        ("mixjobs.cleanup-session", "s1", "cli", "succeeded"),
    ]

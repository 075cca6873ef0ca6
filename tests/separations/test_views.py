import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from apps.audit.models import AuditEvent, Operation
from apps.audit.overview import Leak, OverviewSection, overview_providers
from apps.audit.services import operation_create, storage_sample_record
from apps.separations import selectors
from apps.separations.models import SeparationSession
from apps.separations.services import TARGET_TYPE
from tests.separations.helpers import put_session, session_bytes, sync_now, volume_root

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
VOLUME = "music-split-jobs-data"


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def on_disk(session_id):
    return (volume_root() / "sessions" / session_id).exists()


# -- list page -----------------------------------------------------------------------------


def test_list_shows_sessions_with_age_bytes_stems_and_status(staff_client):
    put_session("alpha", mtime=NOW - timedelta(hours=3))
    put_session("beta", mtime=NOW - timedelta(minutes=5), stems=("drums", "bass"))
    sync_now(actor="test")
    page = staff_client.get(reverse("separations:list")).content.decode()
    assert "alpha" in page and "beta" in page
    assert "3 h" in page
    assert "2/4" in page and "4/4" in page
    assert "badge-complete" in page and "badge-partial" in page


def test_gauge_turns_red_over_budget_and_lists_the_oldest(staff_client, settings):
    settings.SESSIONS_VOLUME_MAX_BYTES = 2000
    put_session("oldest", mtime=NOW - timedelta(hours=9))
    put_session("newer", mtime=NOW - timedelta(hours=1))
    sync_now(actor="test")
    page = staff_client.get(reverse("separations:list")).content.decode()
    assert 'class="gauge over"' in page
    assert "Oldest sessions to clean" in page
    assert page.index("oldest") < page.index("newer")


def test_gauge_is_calm_under_budget(staff_client):
    put_session("a", mtime=NOW)
    sync_now(actor="test")
    page = staff_client.get(reverse("separations:list")).content.decode()
    assert 'class="gauge"' in page and "Oldest sessions to clean" not in page


def test_list_page_query_count(staff_client, settings, django_assert_num_queries):
    settings.SESSIONS_VOLUME_MAX_BYTES = 10  # over budget, so the oldest-sessions table is queried too
    for i in range(30):
        put_session(f"s{i:02d}", mtime=NOW - timedelta(hours=i))
    sync_now(actor="test")
    # 1 session, 2 user, 3 latest size sample (gauge), 4 count and 5 rows of the page,
    # 6 chart samples, 7 oldest sessions, 8 recent batches, 9 audit events.
    # A superuser's permission checks need no query.
    with django_assert_num_queries(9):
        response = staff_client.get(reverse("separations:list"))
    assert response.status_code == 200


def test_list_shows_the_size_chart(staff_client):
    storage_sample_record(domain="sessions", subject=VOLUME, total_bytes=10)
    storage_sample_record(domain="sessions", subject=VOLUME, total_bytes=20)
    page = staff_client.get(reverse("separations:list")).content.decode()
    assert "<polyline" in page


def test_bad_volume_url_is_one_line_on_the_page(staff_client, settings):
    settings.SESSIONS_VOLUME_URL = "ftp://nowhere"
    response = staff_client.get(reverse("separations:list"))
    assert response.status_code == 200
    assert "not supported" in response.content.decode()


def test_detail_page(staff_client):
    put_session("alpha", mtime=NOW)
    sync_now(actor="test")
    assert staff_client.get(reverse("separations:detail", args=["alpha"])).status_code == 200
    assert staff_client.get("/sessions/a.b/").status_code == 404


# -- confirm and run -----------------------------------------------------------------------


def test_get_previews_the_batch_and_changes_nothing(staff_client):
    put_session("old", mtime=NOW - timedelta(hours=3))
    put_session("young", mtime=NOW)
    response = staff_client.get(reverse("separations:cleanup", args=["exit"]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "old" in page and "young" not in page
    assert on_disk("old")
    assert not Operation.objects.exists() and not AuditEvent.objects.exists()


def test_preview_of_an_unknown_session_says_so(staff_client):
    volume_root().mkdir(parents=True)
    response = staff_client.get(reverse("separations:cleanup", args=["manual"]) + "?session=nope")
    assert response.status_code == 404
    assert "is not on volume" in response.content.decode()
    assert 'name="confirm"' not in response.content.decode()


def test_post_queues_the_batch_and_the_worker_deletes(staff_client, q_sync, django_capture_on_commit_callbacks):
    put_session("old", mtime=NOW - timedelta(hours=3))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("separations:cleanup-run", args=["exit"]), {"confirm": "yes"})
    operation = Operation.objects.get(kind="sessions.cleanup")
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:operation", args=[operation.pk])
    operation.refresh_from_db()
    assert operation.status == "succeeded" and operation.result["deleted"] == ["old"]
    assert not on_disk("old")


def test_manual_cleanup_from_the_page(staff_client, q_sync, django_capture_on_commit_callbacks):
    put_session("one", mtime=NOW)
    put_session("two", mtime=NOW)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("separations:cleanup-run", args=["manual"]), {"confirm": "yes", "session": ["one"]})
    assert not on_disk("one") and on_disk("two")


def test_post_while_a_batch_runs_says_already_in_progress(staff_client):
    put_session("old", mtime=NOW - timedelta(hours=3))
    operation_create(kind="sessions.cleanup", target_type=TARGET_TYPE, target_id=VOLUME, actor="x")
    response = staff_client.post(reverse("separations:cleanup-run", args=["exit"]), {"confirm": "yes"}, follow=True)
    assert "already has sessions.cleanup in progress" in response.content.decode()
    assert on_disk("old")


def test_viewer_cannot_run_a_cleanup(viewer_client):
    put_session("old", mtime=NOW - timedelta(hours=3))
    response = viewer_client.post(reverse("separations:cleanup-run", args=["exit"]), {"confirm": "yes"})
    assert response.status_code == 403
    assert on_disk("old")


def test_sync_button(staff_client, q_sync, django_capture_on_commit_callbacks):
    put_session("a", mtime=NOW)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("separations:sync"))
    assert SeparationSession.objects.get().session_id == "a"


# -- admin ---------------------------------------------------------------------------------


def test_admin_cleanup_action_opens_the_same_confirmation(staff_client):
    put_session("a", mtime=NOW)
    put_session("b", mtime=NOW)
    sync_now(actor="test")
    ids = list(SeparationSession.objects.values_list("pk", flat=True))
    response = staff_client.post(
        reverse("admin:separations_separationsession_changelist"),
        {"action": "cleanup_selected", "_selected_action": ids},
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("separations:cleanup", args=["manual"]))
    assert "session=a" in response["Location"] and "session=b" in response["Location"]
    assert on_disk("a") and on_disk("b")
    assert staff_client.get(response["Location"]).status_code == 200


def test_admin_changelist_renders(staff_client):
    put_session("a", mtime=NOW)
    sync_now(actor="test")
    assert staff_client.get(reverse("admin:separations_separationsession_changelist")).status_code == 200


# -- overview ------------------------------------------------------------------------------


def test_overview_section_reports_bytes_budget_and_leaks(settings, django_assert_max_num_queries):
    settings.SESSIONS_VOLUME_MAX_BYTES = 2000
    put_session("stale", mtime=NOW - timedelta(hours=5))
    put_session("fresh", mtime=NOW)
    sync_now(actor="test")
    with django_assert_max_num_queries(2):  # latest sample, one aggregate over the mirror
        section = selectors.overview_section()
    assert isinstance(section, OverviewSection) and section.title == "Separation sessions"
    assert section.bytes == 2 * session_bytes()
    assert ("Sessions", 2) in section.rows
    [leak] = section.leaks
    assert isinstance(leak, Leak) and leak.domain == "sessions"
    assert leak.bytes == session_bytes() and "1 session older than 2 h" in leak.label
    assert "over its budget" in leak.label
    assert leak.fix_url == reverse("separations:cleanup", args=["exit"])


def test_the_overview_provider_is_registered():
    [provider] = [p for p in overview_providers() if p.app_label == "separations"]
    assert provider.order == 20 and provider.title == "Separation sessions"
    assert provider.section is selectors.overview_section


def test_overview_page_renders_the_section(staff_client):
    put_session("a", mtime=NOW)
    sync_now(actor="test")
    assert "Separation sessions" in staff_client.get(reverse("dashboard:overview")).content.decode()


# -- CLI -----------------------------------------------------------------------------------


def test_cli_sync_and_cleanup(capsys):
    put_session("old", mtime=NOW - timedelta(hours=3))
    put_session("young", mtime=NOW)
    call_command("sessions", "sync")
    assert "2 sessions" in capsys.readouterr().out
    call_command("sessions", "cleanup", "--policy", "exit", "--dry-run", "--json")
    plan = json.loads(capsys.readouterr().out)
    assert plan["would_delete"] == ["old"] and on_disk("old")
    call_command("sessions", "cleanup", "--policy", "exit", "--json")
    assert json.loads(capsys.readouterr().out)["deleted"] == ["old"]
    assert not on_disk("old")


def test_cli_manual_and_errors(capsys):
    put_session("one", mtime=NOW)
    call_command("sessions", "cleanup", "--policy", "manual", "--session", "one")
    assert "deleted 1 sessions" in capsys.readouterr().out
    with pytest.raises(CommandError, match="is not on volume"):
        call_command("sessions", "cleanup", "--policy", "manual", "--session", "one")
    with pytest.raises(CommandError, match="not valid"):
        call_command("sessions", "cleanup", "--policy", "manual", "--session", "../etc")
    with pytest.raises(CommandError, match="needs --policy"):
        call_command("sessions", "cleanup")
    failed = Operation.objects.filter(status="failed")
    assert failed.count() == 1  # the unknown session; the bad id never made an operation


def test_preview_with_modal_down_is_one_line_on_the_page(staff_client, modal_server, settings):
    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}"
    modal_server.create_volume(VOLUME)
    modal_server.stop()
    response = staff_client.get(reverse("separations:cleanup", args=["exit"]))
    assert response.status_code == 503  # the one rule (controlpanel.errors.http_status): unreachable
    page = response.content.decode()
    assert "unreachable" in page and "Traceback" not in page
    assert 'name="confirm"' not in page  # no button to confirm a batch that cannot be previewed


def test_preview_on_modal_lists_what_would_go(staff_client, modal_server, settings):
    from tests.separations.helpers import put_modal_session

    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}"
    put_modal_session(modal_server, VOLUME, "old", mtime=NOW - timedelta(hours=5))
    put_modal_session(modal_server, VOLUME, "young", mtime=NOW)
    page = staff_client.get(reverse("separations:cleanup", args=["exit"])).content.decode()
    assert "old" in page and "young" not in page
    assert modal_server.removals() == []

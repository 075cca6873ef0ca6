"""The sessions volume's kinds of work, declared once, and every door that asks for them."""

import getpass
import os
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.urls import reverse

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import kind_get, request, user_may
from apps.audit.schedules import collect_schedules
from apps.separations.models import SeparationSession
from apps.separations.services import cleanup_plan, cleanup_sentence, policy_get, sessions_backend, sync_sentence
from controlpanel.errors import Forbidden, IllegalTransition, InvalidInput
from tests.separations.helpers import put_session, session_bytes, volume_root

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
VOLUME = "music-split-jobs-data"
TOKEN = "s3cr3t-token-for-tests-0123456789"


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def on_disk(session_id: str) -> bool:
    return (volume_root() / "sessions" / session_id).exists()


# -- the declarations ----------------------------------------------------------------------


def test_both_kinds_are_declared_on_the_sessions_volume():
    cleanup, sync = kind_get(Kind.SESSIONS_CLEANUP), kind_get(Kind.SESSIONS_SYNC)
    for kind in (cleanup, sync):
        assert kind.target_type == TargetType.SESSION_VOLUME and kind.exclusive
        assert kind.target(None) == VOLUME  # named from settings, never passed by a caller
    assert cleanup.permission == "separations.cleanup_separationsession"
    assert cleanup.audit_action == AuditAction.SESSIONS_CLEANUP and cleanup.progress_unit == "sessions"
    assert sync.permission == "separations.sync_separationsession"
    assert sync.audit_action == AuditAction.SESSIONS_SYNC and sync.progress_unit == "entries"
    assert cleanup.schedule is None
    assert (sync.schedule.name, sync.schedule.minutes, sync.schedule.actor) == (
        "sync separation sessions",
        15,
        "schedule:sync-sessions",
    )
    assert ("sync separation sessions", "apps.audit.operations.run_scheduled", "'sessions.sync'", 15) in (
        collect_schedules()
    )


def test_the_sentences_humanise_bytes():
    result = {"deleted": ["a", "b", "c", "d"], "bytes_reclaimed": 248 * 1024 * 1024, "commits": 0, "looked_at": 9}
    assert cleanup_sentence(result) == "Deleted 4 sessions, 248.0 MiB reclaimed."
    assert cleanup_sentence({**result, "deleted": ["a"], "commits": 1}) == (
        "Deleted 1 session, 248.0 MiB reclaimed, 1 commit."
    )
    assert cleanup_sentence({**result, "deleted": []}) == "Nothing was due: looked at 9 sessions, deleted none."
    sync = {"volume": VOLUME, "sessions": 12, "new": 2, "gone": 1, "total_bytes": 1536, "total_files": 60}
    assert sync_sentence(sync) == f"Mirrored 12 sessions on {VOLUME} (2 new, 1 gone); 1.5 KiB in 60 files."


def test_a_viewer_is_refused_by_the_kind_itself(viewer_user):
    put_session("old", mtime=NOW - timedelta(hours=3))
    assert not user_may(viewer_user, Kind.SESSIONS_CLEANUP)
    with pytest.raises(Forbidden):
        request(Kind.SESSIONS_CLEANUP, actor=viewer_user, policy="exit")
    assert not Operation.objects.exists() and on_disk("old")


@pytest.mark.parametrize(
    "params",
    [{"policy": "everything"}, {"policy": "manual"}, {"policy": "exit", "session_ids": ["a"]}],
    ids=["unknown policy", "manual without ids", "exit with ids"],
)
def test_a_request_that_names_the_wrong_sessions_leaves_no_row(params):
    with pytest.raises(InvalidInput):
        request(Kind.SESSIONS_CLEANUP, actor="test", **params)
    assert not Operation.objects.exists()


# -- every door leaves an operation of the declared kind and an audit event ----------------


def assert_one_cleanup_with_its_audit(*, actor_name: str, deleted: list[str]) -> None:
    operation = Operation.objects.get(kind=Kind.SESSIONS_CLEANUP)
    assert operation.status == Operation.Status.SUCCEEDED
    assert (operation.target_type, operation.target_id) == (TargetType.SESSION_VOLUME, VOLUME)
    assert operation.actor_name == actor_name and operation.result["deleted"] == deleted
    assert operation.result["summary"] == f"Deleted 1 session, {session_bytes() / 1024:.1f} KiB reclaimed."
    event = AuditEvent.objects.get(operation=operation)
    assert event.action == AuditAction.SESSIONS_CLEANUP and event.actor_name == actor_name
    assert (event.target_type, event.target_id) == (TargetType.SESSION_VOLUME, VOLUME)
    assert event.bytes_reclaimed == session_bytes() and event.outcome == AuditEvent.Outcome.SUCCEEDED


def test_the_api_leaves_an_operation_and_an_audit_event(client, settings):
    settings.SESSIONS_API_TOKEN = TOKEN
    put_session("old", mtime=NOW - timedelta(hours=3))
    response = client.post("/api/sessions/cleanup-on-exit", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert_one_cleanup_with_its_audit(actor_name="api:separation-service", deleted=["old"])
    assert not on_disk("old")


def test_the_page_leaves_an_operation_and_an_audit_event(
    staff_client, staff_user, q_sync, django_capture_on_commit_callbacks
):
    put_session("old", mtime=NOW - timedelta(hours=3))
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("separations:cleanup-run", args=["exit"]), {"confirm": "yes"})
    assert_one_cleanup_with_its_audit(actor_name=staff_user.get_username(), deleted=["old"])
    assert Operation.objects.get().actor_user == staff_user
    assert not on_disk("old")


def test_the_cli_leaves_an_operation_and_an_audit_event(capsys):
    put_session("old", mtime=NOW - timedelta(hours=3))
    call_command("sessions", "cleanup", "--policy", "exit")
    assert "deleted 1 sessions" in capsys.readouterr().out
    assert_one_cleanup_with_its_audit(actor_name=f"cli:{getpass.getuser()}", deleted=["old"])
    assert not on_disk("old")


def test_the_sync_doors_leave_a_sync_operation(staff_client, q_sync, django_capture_on_commit_callbacks):
    put_session("a", mtime=NOW)
    call_command("sessions", "sync")
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("separations:sync"))
    operations = Operation.objects.filter(kind=Kind.SESSIONS_SYNC).order_by("pk")
    assert [op.status for op in operations] == ["succeeded", "succeeded"]
    assert all(op.target_id == VOLUME and op.progress_unit == "entries" for op in operations)
    assert operations[0].result["summary"].startswith(f"Mirrored 1 session on {VOLUME} (1 new, 0 gone)")
    assert operations[1].result["summary"].startswith(f"Mirrored 1 session on {VOLUME} (0 new, 0 gone)")


# -- the state machine ---------------------------------------------------------------------


def test_a_deleted_session_cannot_be_deleted_again():
    row = SeparationSession(volume=VOLUME, session_id="s", status=SeparationSession.Status.COMPLETE)
    row.transition(SeparationSession.Status.DELETED, by="alice", reason="manual")
    assert (row.status, row.deleted_at, row.deleted_by, row.deleted_reason) == ("deleted", NOW, "alice", "manual")
    with pytest.raises(IllegalTransition, match="session 's' is deleted"):
        row.transition(SeparationSession.Status.DELETED, by="bob")
    assert row.deleted_by == "alice"


def test_a_session_that_comes_back_loses_its_deletion_stamp():
    row = SeparationSession(volume=VOLUME, session_id="s", status=SeparationSession.Status.DELETED)
    row.deleted_at, row.deleted_by, row.deleted_reason = NOW, "alice", "manual"
    row.transition(SeparationSession.Status.PARTIAL)
    assert (row.status, row.deleted_at, row.deleted_by, row.deleted_reason) == ("partial", None, "", "")


# -- the dry run ---------------------------------------------------------------------------


def test_the_preview_names_what_goes_and_what_stays(tmp_path):
    put_session("old", mtime=NOW - timedelta(hours=3))
    put_session("young", mtime=NOW)
    linked = put_session("linked", mtime=NOW - timedelta(hours=4))
    elsewhere = tmp_path / "elsewhere.flac"
    elsewhere.write_bytes(b"\0" * 10)
    (linked / "extra.flac").hardlink_to(elsewhere)
    put_session("bad.name", mtime=NOW - timedelta(hours=9))
    for path in [linked / "extra.flac", linked]:
        stamp = (NOW - timedelta(hours=4)).timestamp()
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    preview = cleanup_plan(backend=sessions_backend(), policy=policy_get("exit")).preview()
    [gone] = preview.delete
    assert (gone.name, gone.path, gone.bytes) == ("old", "sessions/old", session_bytes())
    assert "older than 2 h" in gone.why and "5 files" in gone.why
    assert preview.total_bytes == session_bytes() and preview.has_work
    kept = {item.name: item.why for item in preview.keep}
    assert "hard-linked" in kept["linked"] and "not a session id" in kept["bad.name"]
    assert "young" not in kept  # not due: not part of this batch at all
    assert on_disk("old") and on_disk("linked")

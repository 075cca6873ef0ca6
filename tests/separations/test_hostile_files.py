"""Hostile session folders (issue #15, items 1 and 2): FIFOs and sockets never block a sync,
a dry run or a cleanup and are reported; an unreadable session is skipped with its reason
while the other expired sessions are still deleted; a volume whose `sessions/` cannot be
read is refused, never mirrored as "every session gone". Each run is bounded by a deadline."""

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command

from apps.audit.models import AuditEvent, Operation
from apps.separations.models import SeparationSession
from apps.separations.services import cleanup_plan, policy_get, sessions_backend
from apps.volumes.backends import Unreadable, backend_for_url
from tests.separations.helpers import cleanup_now, put_session, session_bytes, sync_now, volume_root
from tests.volumes.helpers import deadline, locked_folder, make_special_files, permissions_bind_root

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
DEADLINE = 30  # seconds: a blocked open() on a FIFO would take forever


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def sessions() -> Path:
    return volume_root() / "sessions"


# -- item 1: special files in a session ----------------------------------------------------------


def test_special_files_in_a_session_never_block_sync_dry_run_or_cleanup(capsys):
    put_session("withfifo", mtime=NOW - timedelta(hours=3))
    names = make_special_files(sessions() / "withfifo" / "jobs")
    old = (NOW - timedelta(hours=3)).timestamp()
    for path in [
        *(sessions() / "withfifo" / "jobs").iterdir(),
        sessions() / "withfifo" / "jobs",
        sessions() / "withfifo",
    ]:
        os.utime(path, (old, old), follow_symlinks=False)  # sets times on the inode, never opens it
    put_session("plain", mtime=NOW - timedelta(hours=3))

    with deadline(DEADLINE):
        result = sync_now()
    assert result["problem_count"] == len(names)
    assert "sessions/withfifo/jobs/stuck.json: FIFO, never opened" in result["problems"]
    row = SeparationSession.objects.get(session_id="withfifo")
    assert "stuck.json (FIFO)" in row.problems and "agent.sock (socket)" in row.problems
    assert row.file_count == 5 and row.total_bytes == session_bytes()  # special files are not counted

    with deadline(DEADLINE):
        call_command("sessions", "cleanup", "--policy", "exit", "--dry-run", "--json")
    assert sorted(json.loads(capsys.readouterr().out)["would_delete"]) == ["plain", "withfifo"]
    plan = cleanup_plan(backend=sessions_backend(), policy=policy_get("exit"))
    why = {item.name: item.why for item in plan.preview().delete}
    assert "jobs/stuck.json (FIFO)" in why["withfifo"] and "unlinked unopened" in why["withfifo"]

    with deadline(DEADLINE):
        result = cleanup_now(policy="exit")
    assert sorted(result["deleted"]) == ["plain", "withfifo"]
    assert not (sessions() / "withfifo").exists() and not (sessions() / "plain").exists()


# -- item 2: unreadable sessions -----------------------------------------------------------------


def test_a_policy_batch_skips_an_unreadable_session_and_deletes_the_others():
    """`chmod 000` on one session's output folder, read with root's override capabilities
    dropped (`permissions_bind_root`): the kernel refuses the listing as for any user."""
    for session_id in ("first", "locked", "last"):
        put_session(session_id, mtime=NOW - timedelta(hours=3))
    with locked_folder(sessions() / "locked" / "output"), permissions_bind_root(), deadline(DEADLINE):
        plan = cleanup_plan(backend=sessions_backend(), policy=policy_get("exit"))
        kept = {item.name: item.why for item in plan.preview().keep}
        result = cleanup_now(policy="exit")

    assert "could not be read" in kept["locked"] and "output (Permission denied)" in kept["locked"]
    assert sorted(result["deleted"]) == ["first", "last"]
    assert result["bytes_reclaimed"] == 2 * session_bytes()
    assert result["skipped"] == ["locked: could not read 1 folder: output (Permission denied)"]
    assert (sessions() / "locked").exists()
    assert not (sessions() / "first").exists() and not (sessions() / "last").exists()
    operation = Operation.objects.get(kind="sessions.cleanup")
    assert operation.status == Operation.Status.SUCCEEDED
    assert "Skipped 1 session that could not be read or removed: locked" in operation.result["summary"]
    event = AuditEvent.objects.get(action="sessions.cleanup")
    assert event.outcome == AuditEvent.Outcome.SUCCEEDED and "skipped 1" in event.message


def test_a_manual_cleanup_of_an_unreadable_session_skips_it_with_the_reason(client, settings):
    settings.SESSIONS_API_TOKEN = "t" * 32
    put_session("locked", mtime=NOW)
    with locked_folder(sessions() / "locked"), permissions_bind_root(), deadline(DEADLINE):
        response = client.post("/api/sessions/locked/cleanup", HTTP_AUTHORIZATION=f"Bearer {'t' * 32}")
    assert response.status_code == 200
    assert response.json() == {
        "deleted": [],
        "bytes_reclaimed": 0,
        "commits": 0,
        "skipped": ["locked: could not read 1 folder: . (Permission denied)"],
    }
    assert (sessions() / "locked" / "input.wav").exists()


def test_sync_keeps_an_unreadable_session_live_and_says_its_totals_are_a_lower_bound():
    put_session("locked", mtime=NOW - timedelta(hours=3))
    sync_now()
    with locked_folder(sessions() / "locked" / "output"), permissions_bind_root(), deadline(DEADLINE):
        result = sync_now()
    row = SeparationSession.objects.get(session_id="locked")
    assert row.is_live and row.problems == "could not read 1 folder: output (Permission denied)"
    assert row.total_bytes == 1000  # input.wav only: the stems could not be read
    assert result["problems"] == ["sessions/locked/output: could not be read (Permission denied)"]


def test_an_unreadable_sessions_folder_is_refused_and_nothing_is_marked_gone():
    put_session("a", mtime=NOW - timedelta(hours=3))
    put_session("b", mtime=NOW - timedelta(hours=3))
    sync_now()
    with locked_folder(sessions()), permissions_bind_root(), deadline(DEADLINE):
        with pytest.raises(Unreadable, match="sessions of sessions volume .* cannot be read"):
            sync_now()
        with pytest.raises(Unreadable):
            cleanup_now(policy="exit")
    assert SeparationSession.objects.filter(status=SeparationSession.Status.DELETED).count() == 0
    assert (sessions() / "a").exists() and (sessions() / "b").exists()


def test_a_folder_that_cannot_be_removed_is_one_line(tmp_path):
    root = tmp_path / "volumes" / "v"
    (root / "sessions" / "x").mkdir(parents=True)
    backend = backend_for_url(f"local://{root}")
    with locked_folder(root / "sessions" / "x" / "inner"), permissions_bind_root():
        (root / "sessions" / "x" / "keep.wav").write_bytes(b"1")
        with pytest.raises(Unreadable, match=r"sessions/x on v could not be removed: Permission denied"):
            backend.remove("sessions/x", recursive=True)


def test_a_session_that_cannot_be_removed_is_skipped_and_the_batch_goes_on(monkeypatch):
    """The folder becomes unreadable after the plan read it (a fault injected between the
    plan and the removal): the real rmtree meets a real EACCES for that session only, and
    the session after it (oldest first, then by id) is still deleted."""
    from apps.separations.services import cleanup as cleanup_module

    for session_id in ("a-first", "b-turns", "c-last"):
        put_session(session_id, mtime=NOW - timedelta(hours=3))
    real_plan = cleanup_module.cleanup_plan
    locked = sessions() / "b-turns" / "output"

    def plan_then_lock(**kwargs):
        plan = real_plan(**kwargs)
        os.chmod(locked, 0)
        return plan

    monkeypatch.setattr(cleanup_module, "cleanup_plan", plan_then_lock)
    try:
        with permissions_bind_root(), deadline(DEADLINE):
            result = cleanup_now(policy="exit")
    finally:
        os.chmod(locked, 0o700)
    assert sorted(result["deleted"]) == ["a-first", "c-last"]
    assert len(result["skipped"]) == 1 and result["skipped"][0].startswith("b-turns: sessions/b-turns on ")
    assert "could not be removed: Permission denied" in result["skipped"][0]
    assert Operation.objects.get(kind="sessions.cleanup").status == Operation.Status.SUCCEEDED
    assert SeparationSession.objects.filter(status=SeparationSession.Status.DELETED).count() == 2

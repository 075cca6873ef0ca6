import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.audit.services import operation_create
from apps.separations.models import SeparationSession
from apps.separations.services import TARGET_TYPE, sessions_cleanup
from apps.volumes.backends import backend_for_url
from controlpanel.errors import Busy, InvalidInput, NotFound, Unreachable
from tests.separations.helpers import (
    cleanup_now,
    put_modal_session,
    put_session,
    session_bytes,
    sync_now,
    volume_root,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
VOLUME = "music-split-jobs-data"


def ago(**kwargs) -> datetime:
    return NOW - timedelta(**kwargs)


def summary(result: dict) -> dict:
    return {key: result[key] for key in ("deleted", "bytes_reclaimed", "commits")}


def on_disk(session_id: str) -> bool:
    return (volume_root() / "sessions" / session_id).exists()


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


# -- sync ----------------------------------------------------------------------------------


def test_sync_mirrors_sessions_and_samples_the_volume_size(clock):
    put_session("complete1", mtime=ago(hours=3))
    put_session("partial1", mtime=ago(minutes=5), stems=("drums",))
    (volume_root() / "sessions" / "empty1").mkdir()
    (volume_root() / "other.txt").write_bytes(b"x" * 7)  # outside sessions/: counted in the volume size only
    result = sync_now(actor="test")
    rows = {row.session_id: row for row in SeparationSession.objects.all()}
    assert rows["complete1"].status == "complete" and rows["complete1"].stems_present == 4
    assert rows["complete1"].total_bytes == session_bytes() and rows["complete1"].file_count == 5
    assert rows["complete1"].modified_at == ago(hours=3)
    assert rows["partial1"].status == "partial" and rows["partial1"].input_present
    assert rows["empty1"].status == "empty"
    sample = StorageSample.objects.get(domain="sessions", subject=VOLUME)
    assert sample.total_bytes == session_bytes() + session_bytes(stems=1) + 7
    assert result["sessions"] == 3
    # Progress counts entries streamed: sessions/, 7 + 4 + 1 in the sessions, other.txt.
    assert Operation.objects.get(kind="sessions.sync").progress_done == 14


def test_sync_marks_sessions_gone_from_the_volume_as_deleted(clock):
    put_session("a", mtime=ago(hours=1))
    put_session("b", mtime=ago(hours=1))
    sync_now(actor="test")
    import shutil

    shutil.rmtree(volume_root() / "sessions" / "a")
    sync_now(actor="test")
    gone = SeparationSession.objects.get(session_id="a")
    assert gone.status == "deleted" and "gone from the volume" in gone.deleted_reason
    assert SeparationSession.objects.get(session_id="b").status == "complete"


def test_sync_ignores_names_that_are_not_ids(clock):
    put_session("ok", mtime=ago(hours=1))
    put_session("bad.name", mtime=ago(hours=9))
    result = sync_now(actor="test")
    assert list(SeparationSession.objects.values_list("session_id", flat=True)) == ["ok"]
    assert result["ignored"] == ["bad.name"]


# -- policies ------------------------------------------------------------------------------


def test_download_policy_deletes_only_sessions_strictly_older_than_one_hour(clock):
    put_session("exactly1h", mtime=ago(hours=1))
    put_session("older", mtime=ago(hours=1, seconds=1))
    put_session("young", mtime=ago(minutes=59))
    result = cleanup_now(policy="download", actor="test")
    assert result["deleted"] == ["older"]
    assert result["bytes_reclaimed"] == session_bytes()
    assert not on_disk("older")
    assert on_disk("exactly1h") and on_disk("young")


def test_download_policy_never_looks_past_the_20_oldest(clock, settings):
    # 20 old-enough sessions that are the oldest, then a 21st that is also old enough.
    for i in range(20):
        put_session(f"s{i:02d}", mtime=ago(hours=5, minutes=i))
    put_session("s21st", mtime=ago(hours=2))
    result = cleanup_now(policy="download", actor="test")
    assert len(result["deleted"]) == 20
    assert on_disk("s21st")
    event = AuditEvent.objects.get(action="sessions.cleanup")
    assert event.details["looked_at"] == 20


def test_exit_policy_looks_at_100_oldest_older_than_two_hours(clock):
    put_session("a", mtime=ago(hours=2))  # exactly the limit: kept
    put_session("b", mtime=ago(hours=2, minutes=1))
    put_session("c", mtime=ago(hours=1, minutes=30))  # old for download, young for exit
    result = cleanup_now(policy="exit", actor="test")
    assert result["deleted"] == ["b"]
    assert on_disk("a") and on_disk("c")


def test_policies_are_configurable(clock, settings):
    settings.SESSIONS_POLICY_DOWNLOAD_LIMIT = 1
    settings.SESSIONS_POLICY_DOWNLOAD_AGE_MINUTES = 10
    put_session("a", mtime=ago(minutes=30))
    put_session("b", mtime=ago(minutes=20))
    assert cleanup_now(policy="download", actor="test")["deleted"] == ["a"]
    assert on_disk("b")


def test_manual_cleanup_deletes_one_session_now_whatever_its_age(clock):
    put_session("fresh", mtime=ago(seconds=1))
    put_session("other", mtime=ago(hours=9))
    result = cleanup_now(policy="manual", session_ids=["fresh"], actor="test")
    assert result["deleted"] == ["fresh"]
    assert not on_disk("fresh") and on_disk("other")
    row = SeparationSession.objects.get(session_id="fresh")
    assert row.status == "deleted" and row.deleted_by == "test" and row.deleted_at == NOW


def test_manual_cleanup_of_an_unknown_session_is_not_found_and_touches_nothing(clock):
    put_session("a", mtime=ago(hours=9))
    with pytest.raises(NotFound):
        cleanup_now(policy="manual", session_ids=["nope"], actor="test")
    assert on_disk("a")


@pytest.mark.parametrize("bad", ["..", "../etc", "a/b", "a b", "", "x" * 129, "a\x00"])
def test_bad_ids_are_refused_before_anything(clock, bad):
    put_session("a", mtime=ago(hours=9))
    with pytest.raises(InvalidInput):
        cleanup_now(policy="manual", session_ids=[bad], actor="test")
    assert on_disk("a")
    assert not Operation.objects.exists()


def test_the_tmp_uuid_form_is_a_valid_id(clock):
    session_id = f"tmp{uuid.uuid4().hex}"
    put_session(session_id, mtime=ago(hours=3))
    assert cleanup_now(policy="manual", session_ids=[session_id], actor="t")["deleted"] == [session_id]


def test_unknown_policy_is_refused(clock):
    with pytest.raises(InvalidInput):
        cleanup_now(policy="everything", actor="test")


# -- safety --------------------------------------------------------------------------------


def test_a_symlink_in_a_session_is_removed_never_followed(clock, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.wav").write_bytes(b"k" * 10)
    folder = put_session("linked", mtime=ago(hours=3))
    (folder / "output" / "escape").symlink_to(outside)
    (folder / "input-link.wav").symlink_to(outside / "keep.wav")
    for path in [folder / "output" / "escape", folder / "input-link.wav", folder / "output", folder]:
        os.utime(path, (ago(hours=3).timestamp(),) * 2, follow_symlinks=False)
    result = cleanup_now(policy="download", actor="test")
    assert result["deleted"] == ["linked"]
    assert not folder.exists()
    assert (outside / "keep.wav").read_bytes() == b"k" * 10
    # The link's target is never counted as the session's bytes.
    assert result["bytes_reclaimed"] == session_bytes()


def test_a_session_folder_that_is_a_symlink_loses_the_link_only(clock, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "input.wav").write_bytes(b"x")
    (volume_root() / "sessions").mkdir(parents=True)
    (volume_root() / "sessions" / "linkdir").symlink_to(outside)
    result = cleanup_now(policy="manual", session_ids=["linkdir"], actor="test")
    assert result["deleted"] == ["linkdir"]
    assert not (volume_root() / "sessions" / "linkdir").is_symlink()
    assert (outside / "input.wav").exists()


def test_a_sessions_folder_pointing_outside_the_volume_is_refused(clock, tmp_path):
    outside = tmp_path / "outside-sessions"
    put_session("victim", mtime=ago(hours=9), root=outside.parent / "fake-root")
    volume_root().mkdir(parents=True)
    (volume_root() / "sessions").symlink_to(outside.parent / "fake-root" / "sessions")
    with pytest.raises(InvalidInput):
        cleanup_now(policy="manual", session_ids=["victim"], actor="test")
    # The policy scan does not follow the link either: nothing is due, nothing removed.
    assert cleanup_now(policy="exit", actor="test")["deleted"] == []
    assert (outside.parent / "fake-root" / "sessions" / "victim" / "input.wav").exists()


def test_nothing_outside_sessions_is_touched(clock):
    put_session("old", mtime=ago(hours=9))
    keep = volume_root() / "models" / "weights.bin"
    keep.parent.mkdir()
    keep.write_bytes(b"w")
    os.utime(keep, (ago(days=30).timestamp(),) * 2)
    cleanup_now(policy="exit", actor="test")
    assert keep.exists()
    assert not on_disk("old")


# -- batches, commits and the audit --------------------------------------------------------


def test_a_batch_writes_one_audit_event_with_its_commit_count(clock):
    put_session("a", mtime=ago(hours=3))
    put_session("b", mtime=ago(hours=4))
    cleanup_now(policy="exit", actor="test")
    event = AuditEvent.objects.get(action="sessions.cleanup")
    assert event.target_type == TARGET_TYPE and event.target_id == VOLUME
    assert sorted(event.details["deleted"]) == ["a", "b"]
    assert event.details["commits"] == 0  # a local folder has nothing to commit
    assert event.bytes_reclaimed == 2 * session_bytes()
    assert Operation.objects.get(kind="sessions.cleanup").status == "succeeded"


def test_a_second_batch_while_one_runs_is_refused(clock):
    put_session("a", mtime=ago(hours=3))
    operation_create(kind="sessions.cleanup", target_type=TARGET_TYPE, target_id=VOLUME, actor="other")
    with pytest.raises(Busy, match="already has sessions.cleanup in progress"):
        cleanup_now(policy="exit", actor="test")
    assert on_disk("a")


@pytest.mark.django_db(transaction=True)
def test_two_batches_at_once_only_one_runs(clock, monkeypatch):
    """Two threads ask at the same moment; the volume's exclusive operation lets one in."""
    for i in range(3):
        put_session(f"s{i}", mtime=ago(hours=3))
    import apps.separations.services.cleanup as batch

    entered, release = threading.Event(), threading.Event()
    real_plan = batch.cleanup_plan

    def slow_plan(**kwargs):  # hold the first batch inside its work
        entered.set()
        release.wait(timeout=10)
        return real_plan(**kwargs)

    monkeypatch.setattr(batch, "cleanup_plan", slow_plan)
    outcomes = {}

    def first():
        try:
            outcomes["first"] = cleanup_now(policy="exit", actor="first")
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(timeout=10)
    with pytest.raises(Busy):
        cleanup_now(policy="exit", actor="second")
    release.set()
    thread.join(timeout=20)
    assert sorted(outcomes["first"]["deleted"]) == ["s0", "s1", "s2"]
    assert AuditEvent.objects.filter(action="sessions.cleanup").count() == 1


# -- Modal: commits ------------------------------------------------------------------------


def test_modal_from_outside_removes_without_commit(clock, modal_server, settings):
    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}?environment=main"
    put_modal_session(modal_server, VOLUME, "old", mtime=ago(hours=3))
    put_modal_session(modal_server, VOLUME, "new", mtime=ago(minutes=3))
    result = cleanup_now(policy="download", actor="test")
    assert summary(result) == {"deleted": ["old"], "bytes_reclaimed": session_bytes(), "commits": 0}
    assert modal_server.removals(VOLUME) == ["sessions/old"]
    assert modal_server.commits() == 0
    assert not any(p.startswith("sessions/old") for p in modal_server.paths(VOLUME))


def test_modal_sync_samples_the_volume(clock, modal_server, settings):
    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}"
    put_modal_session(modal_server, VOLUME, "a", mtime=ago(hours=3))
    modal_server.put_file(VOLUME, "cache/x.bin", size=5)
    sync_now(actor="test")
    assert SeparationSession.objects.get(session_id="a").status == "complete"
    assert StorageSample.objects.get(subject=VOLUME).total_bytes == session_bytes() + 5


def test_modal_unreachable_fails_with_one_line_and_touches_nothing(clock, modal_server, settings):
    from controlpanel.errors import Unreachable

    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}"
    put_modal_session(modal_server, VOLUME, "old", mtime=ago(hours=3))
    modal_server.stop()
    with pytest.raises(Unreachable) as caught:
        cleanup_now(policy="exit", actor="test")
    assert "\n" not in str(caught.value)
    assert Operation.objects.get().status == "failed"


@pytest.fixture
def in_container(modal_server, settings, monkeypatch, tmp_path):
    """The panel inside a Modal container: the volume mounted at a folder, one commit per batch."""
    from tests.fakes.modal_fixtures import modal_client_reset

    mount = tmp_path / "data"
    mount.mkdir()
    modal_server.create_volume(VOLUME)
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    modal_client_reset()
    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}?mount={mount}"
    return mount


def test_inside_a_container_a_batch_commits_exactly_once(clock, in_container, modal_server):
    for i in range(5):
        put_session(f"s{i}", mtime=ago(hours=3), root=in_container)
    put_session("young", mtime=ago(minutes=1), root=in_container)
    result = cleanup_now(policy="exit", actor="test")
    assert len(result["deleted"]) == 5 and result["commits"] == 1
    assert modal_server.commits(VOLUME) == 1
    assert sorted(p.name for p in (in_container / "sessions").iterdir()) == ["young"]
    assert AuditEvent.objects.get(action="sessions.cleanup").details["commits"] == 1


def test_inside_a_container_a_batch_that_deletes_nothing_commits_nothing(clock, in_container, modal_server):
    put_session("young", mtime=ago(minutes=1), root=in_container)
    result = cleanup_now(policy="exit", actor="test")
    assert summary(result) == {"deleted": [], "bytes_reclaimed": 0, "commits": 0}
    assert modal_server.commits() == 0


def test_a_failed_commit_fails_the_batch_and_says_so(clock, in_container, modal_server):
    from grpclib.const import Status

    put_session("old", mtime=ago(hours=3), root=in_container)
    modal_server.fail_next("VolumeCommit", Status.FAILED_PRECONDITION, "volume busy")
    with pytest.raises(Exception, match="commit failed"):
        cleanup_now(policy="exit", actor="test")
    event = AuditEvent.objects.get(action="sessions.cleanup")
    assert event.outcome == "failed"
    assert Operation.objects.get().status == "failed"


def test_the_service_can_run_against_a_given_backend(clock, tmp_path):
    root = tmp_path / "another"
    put_session("x", mtime=ago(hours=3), root=root)
    result = sessions_cleanup(policy="exit", actor="test", backend=backend_for_url(f"local://{root}"))
    assert result["deleted"] == ["x"] and result["volume"] == "another"


def test_a_deleted_session_that_reappears_is_live_again(clock):
    put_session("back", mtime=ago(hours=3))
    cleanup_now(policy="manual", session_ids=["back"], actor="test")
    put_session("back", mtime=ago(minutes=1))
    sync_now(actor="test")
    row = SeparationSession.objects.get(session_id="back")
    assert row.status == "complete" and row.deleted_at is None
    assert SeparationSession.objects.count() == 1


def test_the_schedule_steps_aside_while_a_batch_runs(clock):
    from apps.audit.names import Kind
    from apps.audit.operations import run_scheduled

    put_session("a", mtime=ago(hours=1))
    operation_create(kind="sessions.cleanup", target_type=TARGET_TYPE, target_id=VOLUME, actor="x")
    assert run_scheduled(Kind.SESSIONS_SYNC).startswith("skipped")
    assert not SeparationSession.objects.exists()
    Operation.objects.update(status="succeeded")
    assert run_scheduled(Kind.SESSIONS_SYNC).startswith(f"succeeded: Mirrored 1 session on {VOLUME} (1 new, 0 gone)")
    assert SeparationSession.objects.get().session_id == "a"
    assert Operation.objects.get(kind="sessions.sync").actor_name == "schedule:sync-sessions"


def test_a_removal_refused_by_modal_stops_the_batch_and_is_audited(clock, modal_server, settings):
    from grpclib.const import Status

    settings.SESSIONS_VOLUME_URL = f"modal://{VOLUME}"
    put_modal_session(modal_server, VOLUME, "a", mtime=ago(hours=5))
    put_modal_session(modal_server, VOLUME, "b", mtime=ago(hours=4))
    modal_server.fail_next("VolumeRemoveFile2", Status.PERMISSION_DENIED, "read-only token")
    with pytest.raises(Unreachable, match="read-only token"):
        cleanup_now(policy="exit", actor="test")
    # The first refusal stops the batch: "b" was never tried, both are still there.
    assert modal_server.removals(VOLUME) == ["sessions/a"]
    assert {"sessions/a", "sessions/b"} <= set(modal_server.paths(VOLUME))
    event = AuditEvent.objects.get(action="sessions.cleanup")
    assert event.outcome == "failed" and event.details["deleted"] == [] and event.details["commits"] == 0
    assert not SeparationSession.objects.filter(status="deleted").exists()

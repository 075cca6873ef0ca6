"""Issue #21, part 2: a hold set while a batch runs is honoured at the moment of each deletion.

Each hold here is set by another thread on its own database connection (as a person's click
would be, in another worker) at a point inside the run: between two items, or while one item
is being deleted. A hold set before an item's turn keeps it, and the result and the audit say
"on hold"; a hold asked for while the item is being deleted waits until it is gone, so a
hold that answered "set" is never followed by the deletion of what it holds."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.holds import Held, hold_set
from apps.audit.models import AuditEvent, Hold, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import request, run_now
from apps.audit.services import Progress
from apps.volumes.models import LayoutRule, Volume
from apps.volumes.services.removal import volume_folder_preview
from controlpanel.errors import PanelError
from tests.mixjobs.helpers import job_path, media, write_job
from tests.separations.helpers import cleanup_now, put_session, volume_root

# Threads write on their own connections: the test's rows must be committed to be seen.
pytestmark = pytest.mark.django_db(transaction=True)
OLD = timezone.now() - timedelta(days=5)


class HoldFromAnotherThread:
    """`hold_set` on another connection; `when` is the moment it returned "set"."""

    def __init__(self, target_type: str, target_id: str):
        self.when: float | None = None
        self.refused = ""
        self.thread = threading.Thread(target=self._run, args=(target_type, target_id))
        self.thread.start()

    def _run(self, target_type: str, target_id: str) -> None:
        try:
            hold_set(target_type=target_type, target_id=target_id, reason="set mid-batch", actor="another person")
            self.when = time.monotonic()
        except PanelError as exc:
            self.refused = str(exc)
        finally:
            connection.close()

    def join(self) -> "HoldFromAnotherThread":
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self


def held_gone() -> int:
    """Sessions (either kind) on hold now whose files are no longer on disk."""
    gone = 0
    for hold in Hold.objects.filter(released_at=None):
        if hold.target_type == TargetType.SEPARATION_SESSION:
            gone += not (volume_root() / "sessions" / hold.target_id / "input.wav").exists()
        elif hold.target_type == TargetType.MIXJOB_SESSION:
            gone += not any((media() / hold.target_id / "jobs").glob("*.json"))
    return gone


def after_progress(monkeypatch, calls: int, action) -> None:
    """Run `action` once the run has reported `calls` items done (between two items)."""
    original, seen = Progress.advance, []

    def advance(self, count: int = 1) -> None:
        original(self, count)
        seen.append(count)
        if len(seen) == calls:
            action()

    monkeypatch.setattr(Progress, "advance", advance)


def test_a_session_held_while_an_exit_batch_runs_is_kept_and_reported_on_hold(monkeypatch, harm):
    for session_id in ("s1", "s2", "s3"):
        put_session(session_id, mtime=OLD)
    # Oldest first, all equally old: s1, s2, s3. The hold on s3 comes once s1 is gone.
    after_progress(monkeypatch, 1, lambda: HoldFromAnotherThread(TargetType.SEPARATION_SESSION, "s3").join())
    result = cleanup_now(policy="exit")
    harm("holds", "a session held between two items of an exit batch", held_deleted=held_gone())
    assert result["deleted"] == ["s1", "s2"]
    assert result["on_hold"] == ["s3"]
    assert (volume_root() / "sessions" / "s3" / "input.wav").exists()
    event = AuditEvent.objects.get(action=AuditAction.SESSIONS_CLEANUP)
    assert "s3" not in event.details["deleted"] and event.details["on_hold"] == ["s3"]


def test_a_hold_asked_for_while_a_session_is_being_removed_waits_until_it_is_gone(monkeypatch, harm):
    put_session("going", mtime=OLD)
    from apps.volumes.backends.local import LocalBackend

    original, asked = LocalBackend.remove, []

    def remove(self, path: str, *, recursive: bool = False):
        asked.append(HoldFromAnotherThread(TargetType.SEPARATION_SESSION, "going"))
        time.sleep(0.5)  # the hold's write has every chance to overtake the removal
        assert asked[0].when is None, "a hold answered 'set' while its session was being removed"
        original(self, path, recursive=recursive)
        asked.append(time.monotonic())

    monkeypatch.setattr(LocalBackend, "remove", remove)
    result = cleanup_now(policy="manual", session_ids=["going"])
    hold, removed_at = asked[0].join(), asked[1]
    # Held and deleted: the hold answered "set" before the folder was gone.
    held_then_removed = hold.when is not None and hold.when <= removed_at
    harm("holds", "a hold asked for while its session is being removed", held_deleted=int(held_then_removed))
    assert result["deleted"] == ["going"] and not (volume_root() / "sessions" / "going").exists()
    # The hold was written, but only once the folder was gone: never "set" and then deleted.
    assert hold.when is not None and hold.when > removed_at


def test_a_mix_job_session_held_while_the_cleanup_runs_keeps_its_jobs(monkeypatch, harm):
    write_job("a-first", "j1", state="complete", updated_at=OLD)
    write_job("b-second", "j2", state="complete", updated_at=OLD)
    after_progress(monkeypatch, 1, lambda: HoldFromAnotherThread(TargetType.MIXJOB_SESSION, "b-second").join())
    operation = run_now(Kind.MIXJOBS_CLEANUP, actor="test")
    harm("holds", "a mix-job session held between two items of the cleanup", held_deleted=held_gone())
    assert operation.status == Operation.Status.SUCCEEDED
    assert not job_path("a-first", "j1").exists()
    assert job_path("b-second", "j2").exists()
    assert [entry["reason"] for entry in operation.result["skipped"]] == ["on hold"]
    assert operation.result["deleted_jobs"] == 1


def sessions_volume_with_rule() -> Volume:
    """The sessions volume registered for inspection, with a rule that forbids `sessions/`."""
    volume = Volume.objects.create(name="split-data", url=f"local://{volume_root()}")
    LayoutRule.objects.create(volume=volume, kind=LayoutRule.Kind.FOLDER_ABSENT, path="sessions", description="x")
    return volume


def test_remove_folder_refuses_a_folder_holding_a_held_session(harm):
    put_session("kept", mtime=OLD)
    put_session("other", mtime=OLD)
    volume = sessions_volume_with_rule()
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="kept", reason="legal", actor="t")
    words = "folder sessions/ on volume split-data contains session kept, which is on hold by t (legal)"
    point = "remove-folder over a folder holding a held session"
    with harm.around("holds", point, held_deleted=held_gone):
        with pytest.raises(Held, match=words.replace("(", r"\(").replace(")", r"\)")):
            request(Kind.VOLUME_REMOVE_FOLDER, "split-data:sessions", actor="test")
        with pytest.raises(Held):
            volume_folder_preview(volume=volume, path="sessions")
    assert (volume_root() / "sessions" / "kept" / "input.wav").exists()


def test_remove_folder_keeps_a_folder_whose_session_was_held_after_it_was_asked_for(monkeypatch, harm):
    put_session("kept", mtime=OLD)
    sessions_volume_with_rule()
    # The hold comes while the run measures the folder, after every check made when it was asked for.
    from apps.volumes.services import removal

    measure = removal._measure

    def measured(*args, **kwargs):
        contents = measure(*args, **kwargs)
        HoldFromAnotherThread(TargetType.SEPARATION_SESSION, "kept").join()
        return contents

    monkeypatch.setattr(removal, "_measure", measured)
    point = "a session held while remove-folder measures its folder"
    with (
        harm.around("holds", point, held_deleted=held_gone),
        pytest.raises(Held, match="contains session kept, which is on hold by another person"),
    ):
        run_now(Kind.VOLUME_REMOVE_FOLDER, "split-data:sessions", actor="test")
    assert Operation.objects.get(kind=Kind.VOLUME_REMOVE_FOLDER).status == Operation.Status.FAILED
    assert (volume_root() / "sessions" / "kept" / "input.wav").exists()
    event = AuditEvent.objects.get(action=AuditAction.VOLUME_REMOVE_FOLDER)
    assert event.outcome == AuditEvent.Outcome.FAILED and event.bytes_reclaimed == 0
    assert event.details["on_hold"]
    assert Hold.objects.filter(target_id="kept", released_at=None).exists()


def test_the_api_batch_answers_on_hold_for_a_session_held_while_it_ran(client, settings, monkeypatch, harm):
    settings.SESSIONS_API_TOKEN = "t" * 40
    for session_id in ("s1", "s2"):
        put_session(session_id, mtime=OLD)
    after_progress(monkeypatch, 1, lambda: HoldFromAnotherThread(TargetType.SEPARATION_SESSION, "s2").join())
    response = client.post("/api/sessions/cleanup-on-exit", HTTP_AUTHORIZATION=f"Bearer {'t' * 40}")
    harm("holds", "a session held while the API's exit batch runs", held_deleted=held_gone())
    assert response.status_code == 200
    assert response.json()["deleted"] == ["s1"] and response.json()["on_hold"] == ["s2"]
    assert (volume_root() / "sessions" / "s2" / "input.wav").exists()


def test_a_session_held_while_the_batch_is_planned_is_reported_on_hold(monkeypatch, harm):
    for session_id in ("s1", "s2", "s3"):
        put_session(session_id, mtime=OLD)
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="s1", reason="first", actor="t")
    from apps.separations.services import plan

    read, reads = plan.held_ids, []

    def reading(**kwargs):
        held = read(**kwargs)
        reads.append(held)
        if len(reads) == 1:  # the plan read the holds once; another comes before it reads again
            HoldFromAnotherThread(TargetType.SEPARATION_SESSION, "s2").join()
        return held

    monkeypatch.setattr(plan, "held_ids", reading)
    result = cleanup_now(policy="exit")
    harm("holds", "a session held between two reads of the plan", held_deleted=held_gone())
    assert result["deleted"] == ["s3"]
    assert sorted(result["on_hold"]) == ["s1", "s2"]
    assert (volume_root() / "sessions" / "s2" / "input.wav").exists()

"""Holds on real files: a scheduled or automatic cleanup keeps a held session and says so; a
person's request to delete a held session is refused until the hold is released."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.holds import Held, hold_release, hold_set
from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import request, run_now, run_scheduled
from apps.mixjobs.services import cleanup_expired_jobs
from tests.mixjobs.helpers import job_path, write_job
from tests.separations.helpers import cleanup_now, put_session, volume_root

pytestmark = pytest.mark.django_db
OLD = timezone.now() - timedelta(days=5)


def test_a_session_policy_keeps_held_sessions_and_deletes_the_rest():
    put_session("held-one", mtime=OLD)
    put_session("free-one", mtime=OLD)
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="held-one", reason="customer asked", actor="t")
    result = cleanup_now(policy="exit")
    assert result["deleted"] == ["free-one"]
    assert result["on_hold"] == ["held-one"]
    assert (volume_root() / "sessions" / "held-one" / "input.wav").exists()
    assert not (volume_root() / "sessions" / "free-one").exists()


def test_a_manual_cleanup_naming_a_held_session_is_refused_and_writes_no_row(staff_user):
    put_session("held-one", mtime=OLD)
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="held-one", reason="legal", actor="t")
    with pytest.raises(Held, match="session held-one is on hold by t \\(legal\\)"):
        request(Kind.SESSIONS_CLEANUP, actor=staff_user, policy="manual", session_ids=["held-one"])
    assert not Operation.objects.exists()
    hold_release(target_type=TargetType.SEPARATION_SESSION, target_id="held-one", actor="t")
    assert cleanup_now(policy="manual", session_ids=["held-one"])["deleted"] == ["held-one"]


def test_mix_job_cleanups_keep_a_held_session():
    write_job("held", "j1", state="complete", updated_at=OLD)
    write_job("free", "j2", state="complete", updated_at=OLD)
    hold_set(target_type=TargetType.MIXJOB_SESSION, target_id="held", reason="dispute", actor="t")
    assert run_scheduled(Kind.MIXJOBS_CLEANUP).startswith("succeeded")
    assert job_path("held", "j1").exists()
    assert not job_path("free", "j2").exists()
    skipped = Operation.objects.get(kind=Kind.MIXJOBS_CLEANUP).result["skipped"]
    assert [entry["reason"] for entry in skipped] == ["on hold"]
    # The mixing service's routine call deletes nothing there either.
    assert cleanup_expired_jobs("held") == 0
    assert job_path("held", "j1").exists()


def test_a_persons_cleanup_of_a_held_mix_job_session_is_refused(staff_user):
    write_job("held", "j1", state="complete", updated_at=OLD)
    hold_set(target_type=TargetType.MIXJOB_SESSION, target_id="held", reason="dispute", actor="t")
    with pytest.raises(Held, match="release the hold first"):
        run_now(Kind.MIXJOBS_CLEANUP_SESSION, "held", actor=staff_user)
    assert job_path("held", "j1").exists()
    assert not Operation.objects.exists()

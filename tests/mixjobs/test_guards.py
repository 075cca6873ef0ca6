"""Issue #15 item 11: each safety check of the mix-job cleanup and pages has a test that
fails when the check is taken out (each was proven by planting that bug once)."""

import json
import os
import stat
from datetime import timedelta

import pytest
from django.urls import reverse

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.mixjobs import aside
from apps.mixjobs.models import MixJob
from apps.mixjobs.services import cleanup as cleanup_service
from apps.mixjobs.services import mixjobs_cleanup, mixjobs_sync
from tests.mixjobs.helpers import NOW, atomic_write, index_path, job_path, write_job
from tests.mixjobs.special_files import bounded, make_fifo

pytestmark = pytest.mark.django_db

OLD = NOW - timedelta(hours=50)


def between_reread_and_delete(monkeypatch, change) -> None:
    """Run `change()` right after cleanup's re-read of the job (its second read), before any
    file goes: what a writer could do in that moment."""
    real_read = cleanup_service.read_job_file
    reads = []

    def read_then_change(**options):
        job = real_read(**options)
        reads.append(options["path"])
        if len(reads) == 2:
            change()
        return job

    monkeypatch.setattr(cleanup_service, "read_job_file", read_then_change)


def write_index(job_id: str, session_id: str) -> None:
    atomic_write(index_path(job_id), json.dumps({"job_id": job_id, "session_id": session_id}).encode())


@pytest.mark.django_db(transaction=True)  # bounded() runs the cleanup in a thread
def test_an_index_unreadable_at_scan_time_is_deleted_only_if_it_then_names_the_session(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=OLD, index=None)
    fifo = make_fifo(index_path("j"))  # unreadable at scan time: the scan cannot know whose index it is
    # Before the delete the job id's index is written for session s2 (the id was reused there).
    between_reread_and_delete(monkeypatch, lambda: write_index("j", "s2"))
    report = bounded(lambda: mixjobs_cleanup(actor="tests", session_id="s1"), fifos=[fifo])
    assert [job["job_id"] for job in report.deleted_jobs] == ["j"] and not job_path("s1", "j").exists()
    assert json.loads(index_path("j").read_text())["session_id"] == "s2"  # s2's index is kept
    assert {"path": str(index_path("j")), "reason": "index names session 's2', left alone"} in report.skipped


@pytest.mark.django_db(transaction=True)
def test_an_index_unreadable_at_scan_time_that_names_the_session_by_the_delete_goes_too(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=OLD, index=None)
    fifo = make_fifo(index_path("j"))
    between_reread_and_delete(monkeypatch, lambda: write_index("j", "s1"))
    report = bounded(lambda: mixjobs_cleanup(actor="tests", session_id="s1"), fifos=[fifo])
    assert not index_path("j").exists() and str(index_path("j")) in report.deleted_files


def test_the_index_is_read_again_under_the_lock_before_it_is_deleted(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=OLD)  # its index names s1 when scanned
    between_reread_and_delete(monkeypatch, lambda: write_index("j", "s2"))
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert not job_path("s1", "j").exists()
    assert json.loads(index_path("j").read_text())["session_id"] == "s2"
    assert str(index_path("j")) not in report.deleted_files


def test_a_job_rewritten_since_the_scan_is_kept_even_when_still_expired(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=OLD)
    # Rewritten between the scan and the re-read: still expired, but not the job that was judged.
    real_read = cleanup_service.read_job_file
    reads = []

    def rewrite_before_the_reread(**options):
        reads.append(options["path"])
        if len(reads) == 2:
            write_job("s1", "j", state="error", updated_at=NOW - timedelta(hours=30), message="retried, failed")
        return real_read(**options)

    monkeypatch.setattr(cleanup_service, "read_job_file", rewrite_before_the_reread)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert report.deleted_jobs == [] and report.skipped[0]["reason"] == "changed since it was scanned"
    assert json.loads(job_path("s1", "j").read_text())["message"] == "retried, failed"
    assert index_path("j").exists()


def test_a_fresh_job_renamed_in_after_the_reread_is_put_back_not_deleted(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=OLD)
    # A writer without the lock restarts the job between the re-read and the delete.
    between_reread_and_delete(monkeypatch, lambda: write_job("s1", "j", state="queued", updated_at=NOW))
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert report.deleted_jobs == [] and report.deleted_files == []
    assert json.loads(job_path("s1", "j").read_text())["state"] == "queued" and index_path("j").exists()
    assert report.skipped == [
        {"path": str(job_path("s1", "j")), "reason": "rewritten while it was being removed; put back"}
    ]
    assert sorted(p.name for p in job_path("s1", "j").parent.iterdir()) == [".lock", "j.json"]


def test_a_newer_job_written_while_one_is_set_aside_is_the_one_kept(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=OLD)
    between_reread_and_delete(monkeypatch, lambda: write_job("s1", "j", state="queued", updated_at=NOW))
    real_put_back = aside.put_back

    def newer_rewrite_while_set_aside(set_aside, path):
        # The writer renames a newer job in while the first restart sits under the aside name.
        write_job("s1", "j", state="mixing", updated_at=NOW)
        return real_put_back(set_aside, path)

    monkeypatch.setattr(aside, "put_back", newer_rewrite_while_set_aside)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert json.loads(job_path("s1", "j").read_text())["state"] == "mixing"
    assert report.skipped[0]["reason"] == (
        "rewritten while it was being removed; a newer file took its place and is kept"
    )
    assert sorted(p.name for p in job_path("s1", "j").parent.iterdir()) == [".lock", "j.json"]


def test_a_job_rewritten_in_place_after_the_reread_is_put_back_not_deleted(clock, monkeypatch, harm):
    """Issue #21 item 8: a writer without the lock rewrites the job in place (same inode, new
    bytes) between the re-read and the set-aside: only the content comparison can tell."""
    write_job("s1", "j", state="complete", updated_at=OLD)
    path = job_path("s1", "j")
    inode = path.stat().st_ino
    fresh = json.loads(path.read_text()) | {"state": "queued", "updated_at": NOW.replace(tzinfo=None).isoformat()}

    def rewrite_in_place():
        with open(path, "r+b") as job:  # no temporary file, no rename: the inode stays
            job.write(json.dumps(fresh).encode())
            job.truncate()

    between_reread_and_delete(monkeypatch, rewrite_in_place)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    # Lost: the writer's new bytes, unless the job file is there holding exactly them.
    kept = path.exists() and path.read_bytes() == json.dumps(fresh).encode()
    harm(
        "mix jobs",
        "a job rewritten in place between the re-read and the set-aside",
        lost_bytes=0 if kept else len(json.dumps(fresh)),
    )
    assert path.stat().st_ino == inode and json.loads(path.read_text())["state"] == "queued"
    assert report.deleted_jobs == [] and report.deleted_files == [] and index_path("j").exists()
    assert report.skipped == [{"path": str(path), "reason": "rewritten while it was being removed; put back"}]


@pytest.mark.django_db(transaction=True)  # bounded() runs the sync in a thread
def test_a_fifo_swapped_in_between_lstat_and_open_is_not_waited_on(clock, monkeypatch):
    """Issue #21 item 8: the job file is a regular file when `lstat` looks and a FIFO when it
    is opened; without O_NONBLOCK the open would wait for a writer for good."""
    write_job("s1", "j", state="complete", updated_at=OLD)
    path = job_path("s1", "j")
    real_lstat = os.lstat
    swapped = []

    def lstat_then_swap(target, *args, **kwargs):
        found = real_lstat(target, *args, **kwargs)
        if os.fspath(target) == str(path) and not swapped:
            os.unlink(path)
            swapped.append(make_fifo(path))
        return found

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    operation = bounded(lambda: run_now(Kind.MIXJOBS_SYNC, actor="tests"), fifos=[path])
    monkeypatch.undo()
    assert swapped and operation.status == "succeeded"
    assert MixJob.objects.get(job_id="j").problem == "FIFO, not a regular file"
    assert stat.S_ISFIFO(os.lstat(path).st_mode)  # left as it was


def test_pages_count_a_job_as_expired_at_exactly_48_hours(staff_client, clock):
    write_job("s1", "edge", state="complete", updated_at=NOW - timedelta(hours=48))
    write_job("s1", "second-younger", state="complete", updated_at=NOW - timedelta(hours=48) + timedelta(seconds=1))
    mixjobs_sync(actor="tests")
    # The cleanup deletes `edge` now (now >= expires_at): the pages must say it is expired too.
    expired = staff_client.get(reverse("mixjobs:list"), {"expired": "yes"}).text
    assert "<code>edge</code>" in expired and "<code>second-younger</code>" not in expired
    assert "1 expired mix job not yet removed" in staff_client.get(reverse("dashboard:leaks")).text
    assert [job["job_id"] for job in mixjobs_cleanup(actor="tests", dry_run=True).deleted_jobs] == ["edge"]

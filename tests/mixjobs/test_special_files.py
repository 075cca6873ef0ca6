"""Issue #15 items 1 and 7: nothing the mix-job path reads can block it, and an over-large
job file counts in the bytes held. Every run here is bounded: a hang fails the test."""

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.urls import reverse

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import mixjobs_held_bytes
from apps.mixjobs.services import mixjobs_cleanup, mixjobs_sync
from tests.mixjobs.helpers import index_path, job_path, media, output_path, write_job
from tests.mixjobs.special_files import (
    BOUND_SECONDS,
    bounded,
    make_device,
    make_fifo,
    make_folder,
    make_socket,
    unblock,
)

OLD = datetime.now(UTC) - timedelta(hours=50)


@pytest.fixture
def hostile_session():
    """Session s1 with a fresh job, an expired job, and special files named *.json in its
    jobs/ folder and in jobs_index/ (the indexes of two more expired jobs)."""
    write_job("s1", "fresh", state="complete", updated_at=datetime.now(UTC))
    write_job("s1", "old", state="complete", updated_at=OLD)
    for job_id in ("old-fifo-index", "old-socket-index"):
        write_job("s1", job_id, state="error", updated_at=OLD, index=None)
    jobs = media() / "s1" / "jobs"
    special = {
        make_fifo(jobs / "fifo.json"): "FIFO, not a regular file",
        make_socket(jobs / "sock.json"): "socket, not a regular file",
        make_folder(jobs / "folder.json"): "folder, not a regular file",
        make_device(jobs / "device.json"): "character device, not a regular file",
    }
    indexes = {
        make_fifo(index_path("old-fifo-index")): "index is FIFO, not a regular file",
        make_socket(index_path("old-socket-index")): "index is socket, not a regular file",
    }
    return special, indexes


def special_kinds(paths) -> list[str]:
    return sorted(stat.filemode(os.lstat(path).st_mode)[0] for path in paths)


@pytest.mark.django_db(transaction=True)
def test_sync_never_opens_a_fifo_socket_device_or_folder_named_json(hostile_session):
    special, indexes = hostile_session
    fifos = [p for p in [*special, *indexes] if stat.S_ISFIFO(os.lstat(p).st_mode)]
    operation = bounded(lambda: run_now(Kind.MIXJOBS_SYNC, actor="tests"), fifos=fifos)
    assert operation.status == "succeeded"
    for path, reason in special.items():
        assert MixJob.objects.get(job_id=path.stem).problem == reason
    skipped = {s["path"]: s["reason"] for s in operation.result["skipped"]}
    assert {Path(p): r for p, r in skipped.items() if Path(p) in indexes} == indexes
    assert MixJob.objects.get(job_id="old").problem == ""
    assert special_kinds([*special, *indexes]) == sorted("ppsscd")  # all still there, untouched


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "cleanup"])
def test_cleanup_never_opens_a_special_file_and_says_why_it_stays(hostile_session, dry_run):
    special, indexes = hostile_session
    fifos = [p for p in [*special, *indexes] if stat.S_ISFIFO(os.lstat(p).st_mode)]
    if dry_run:
        report = bounded(lambda: mixjobs_cleanup(actor="tests", session_id="s1", dry_run=True), fifos=fifos)
        result = report.as_dict()
    else:
        operation = bounded(lambda: run_now(Kind.MIXJOBS_CLEANUP_SESSION, "s1", actor="tests"), fifos=fifos)
        assert operation.status == "succeeded"
        result = operation.result
    reasons = {Path(s["path"]): s["reason"] for s in result["skipped"]}
    for path, reason in special.items():
        assert reasons[path] == f"problem: {reason}"
    for path, reason in indexes.items():
        assert reasons[path] == f"{reason}; left alone"
    gone = {"old", "old-fifo-index", "old-socket-index"}
    if dry_run:
        assert {job["job_id"] for job in result["deleted_jobs"]} == gone
    else:
        assert result["deleted_jobs"] == 3
        assert not any(job_path("s1", job_id).exists() for job_id in gone)
    assert job_path("s1", "fresh").exists() and output_path("s1").exists()
    assert special_kinds([*special, *indexes]) == sorted("ppsscd")  # the special files stay as they were


@pytest.mark.django_db(transaction=True)
def test_a_fifo_in_place_of_the_lock_file_refuses_the_session_without_waiting():
    write_job("s1", "old", state="complete", updated_at=OLD)
    lock = make_fifo(media() / "s1" / "jobs" / ".lock")
    report = bounded(lambda: mixjobs_cleanup(actor="tests", session_id="s1"), fifos=[lock])
    assert report.skipped == [
        {"path": str(lock), "reason": f"{lock} cannot be used as a lock: a FIFO; session left alone"}
    ]
    assert job_path("s1", "old").exists()


def test_the_cli_finishes_sync_cleanup_and_dry_run_beside_fifos(tmp_path, settings):
    """`manage.py mixjobs sync`, `cleanup --dry-run` and `cleanup` as separate processes, each
    killed (and the test failed) if it runs past its bound."""
    write_job("s1", "old", state="complete", updated_at=OLD)
    write_job("s1", "old-fifo-index", state="complete", updated_at=OLD, index=None)
    fifos = [make_fifo(media() / "s1" / "jobs" / "fifo.json"), make_fifo(index_path("old-fifo-index"))]
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "MIX_MEDIA_DIR": str(settings.MIX_MEDIA_DIR),
        "MIX_OUTPUTS_DIR": str(settings.MIX_OUTPUTS_DIR),
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=settings.BASE_DIR, check=True, timeout=120)
    results = {}
    for name, args in [("sync", ["sync"]), ("dry-run", ["cleanup", "--dry-run"]), ("cleanup", ["cleanup"])]:
        try:
            done = subprocess.run(
                [*manage, "mixjobs", *args, "--json"],
                env=env,
                cwd=settings.BASE_DIR,
                capture_output=True,
                text=True,
                timeout=BOUND_SECONDS + 30,  # the process starts Django too
            )
        except subprocess.TimeoutExpired:
            unblock(fifos)
            pytest.fail(f"`mixjobs {' '.join(args)}` was still running after its bound: it opened a FIFO")
        assert done.returncode == 0, done.stderr
        results[name] = json.loads(done.stdout)
    assert results["sync"]["problems"] == 1 and results["sync"]["jobs"] == 3
    reasons = {s["path"]: s["reason"] for s in results["cleanup"]["skipped"]}
    assert reasons[str(fifos[0])] == "problem: FIFO, not a regular file"
    assert reasons[str(fifos[1])] == "index is FIFO, not a regular file; left alone"
    assert sorted(job["job_id"] for job in results["cleanup"]["deleted_jobs"]) == ["old", "old-fifo-index"]
    assert all(stat.S_ISFIFO(os.lstat(fifo).st_mode) for fifo in fifos)


@pytest.mark.django_db
def test_an_over_large_job_file_counts_in_the_bytes_held_and_is_a_problem(staff_client):
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with time_machine.travel(now, tick=False):
        write_job("s1", "small", state="complete", updated_at=now - timedelta(hours=50))
        huge = job_path("s1", "huge")
        with open(huge, "wb") as out:
            out.truncate(200 * 1024 * 1024)  # 200 MB (sparse: nothing is written, nothing is read)
        held = sum(os.lstat(p).st_size for p in (job_path("s1", "small"), index_path("small"), output_path("s1"), huge))
        result = mixjobs_sync(actor="tests")
        row = MixJob.objects.get(job_id="huge")
        assert row.job_bytes == 200 * 1024 * 1024 and "larger than" in row.problem
        assert result["bytes"] == held == mixjobs_held_bytes()
        assert result["problems"] == 1
        page = staff_client.get(reverse("mixjobs:list"), {"problem": "yes"}).text
        assert "<code>huge</code>" in page and "<code>small</code>" not in page

        report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert huge.exists() and not job_path("s1", "small").exists()
    assert [s for s in report.skipped if s["path"] == str(huge)] == [
        {"path": str(huge), "reason": "problem: 200.0 MiB, larger than the 16.0 MiB limit; not read"}
    ]

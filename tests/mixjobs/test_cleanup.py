import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from subprocess import PIPE

import pytest

from apps.audit.models import AuditEvent, Operation
from apps.mixjobs import files
from apps.mixjobs.aside import SetAside
from apps.mixjobs.services import cleanup as cleanup_service
from apps.mixjobs.services import cleanup_expired_jobs, mixjobs_cleanup, session_lock
from controlpanel.errors import InvalidInput
from tests.mixjobs.helpers import NOW, atomic_write, index_path, job_path, media, output_path, write_job

pytestmark = pytest.mark.django_db


def test_complete_job_expires_at_exactly_48_hours_not_a_second_before(clock):
    write_job("s1", "just-expired", state="complete", updated_at=NOW - timedelta(hours=48))
    write_job("s1", "almost", state="complete", updated_at=NOW - timedelta(hours=48) + timedelta(seconds=1))
    assert cleanup_expired_jobs("s1") == 1
    assert not job_path("s1", "just-expired").exists() and not index_path("just-expired").exists()
    assert job_path("s1", "almost").exists() and index_path("almost").exists()
    assert output_path("s1").exists()  # a sibling job remains: the shared output stays


def test_the_mixing_services_cleanup_is_an_operation_with_an_audit_event(clock):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s1", "new", state="complete", updated_at=NOW)
    assert cleanup_expired_jobs("s1") == 1
    operation = Operation.objects.get()
    assert (operation.kind, operation.target_type, operation.target_id) == (
        "mixjobs.cleanup-session",
        "mixjob-session",
        "s1",
    )
    assert (operation.status, operation.actor_name, operation.result["deleted_jobs"]) == (
        "succeeded",
        "mixing-service",
        1,
    )
    assert operation.result["summary"].startswith("Deleted 1 expired job (2 files), reclaiming ")
    event = AuditEvent.objects.get()
    assert (event.action, event.target_id, event.actor_name, event.operation) == (
        "mixjobs.cleanup",
        "s1",
        "mixing-service",
        operation,
    )
    assert event.bytes_reclaimed == operation.result["bytes_reclaimed"] > 0


def test_a_refused_session_id_leaves_no_operation(clock):
    with pytest.raises(InvalidInput):
        cleanup_expired_jobs("../etc")
    assert not Operation.objects.exists() and not AuditEvent.objects.exists()


def test_failed_jobs_expire_after_24_hours(clock):
    write_job("s1", "failed-old", state="error", updated_at=NOW - timedelta(hours=24))
    write_job("s1", "failed-new", state="error", updated_at=NOW - timedelta(hours=23, minutes=59))
    assert cleanup_expired_jobs("s1") == 1
    assert not job_path("s1", "failed-old").exists() and job_path("s1", "failed-new").exists()


@pytest.mark.parametrize(
    "state", ["queued", "loading_stems", "aligning_stems", "processing_tracks", "mixing", "mastering", "exporting"]
)
def test_jobs_in_progress_never_expire_however_old(clock, state):
    write_job("s1", "running", state=state, updated_at=NOW - timedelta(days=90))
    assert cleanup_expired_jobs("s1") == 0
    assert job_path("s1", "running").exists()


def test_ttls_come_from_settings(clock, settings):
    settings.JOB_TTL_HOURS = 1
    write_job("s1", "done", state="complete", updated_at=NOW - timedelta(hours=1))
    assert cleanup_expired_jobs("s1") == 1


def test_output_goes_with_the_sessions_last_job_and_is_counted(clock):
    write_job("s1", "a", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s1", "b", state="error", updated_at=NOW - timedelta(hours=30))
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert sorted(job["job_id"] for job in report.deleted_jobs) == ["a", "b"]
    assert not output_path("s1").exists()
    assert report.bytes_reclaimed == sum(report.file_bytes.values()) and report.bytes_reclaimed > 4096
    event = AuditEvent.objects.get(action="mixjobs.cleanup")
    assert (event.target_id, event.bytes_reclaimed, event.outcome) == ("s1", report.bytes_reclaimed, "succeeded")


def test_index_that_names_another_session_is_left_alone(clock):
    write_job("s1", "job", state="complete", updated_at=NOW - timedelta(hours=50))
    # The index now belongs to s2 (the job id was reused there): the job is a problem, not expired.
    atomic_write(index_path("job"), json.dumps({"job_id": "job", "session_id": "s2"}).encode())
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert report.deleted_jobs == []
    assert job_path("s1", "job").exists() and index_path("job").exists()
    assert "index points at session 's2'" in report.skipped[0]["reason"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not valid JSON"),
        (b'{"job_id": "bad", "session_id": "s1", "state": "compl', "not valid JSON"),
        (b"[1, 2, 3]", "JSON is a list"),
        (b'{"job_id": "bad", "session_id": "s1", "state": "complete"}', "missing updated_at"),
        (
            b'{"job_id": "bad", "session_id": "other", "state": "complete", "updated_at": "2020-01-01T00:00:00"}',
            "differs from its folder",
        ),
        (b'{"job_id": "bad", "session_id": "s1", "state": "complete", "updated_at": "yesterday"}', "not an ISO 8601"),
        (
            b'{"job_id": "bad", "session_id": "s1", "state": "done", "updated_at": "2020-01-01T00:00:00"}',
            "unknown state",
        ),
    ],
)
def test_problem_files_are_reported_and_never_deleted(clock, content, reason):
    atomic_write(job_path("s1", "bad"), content)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert job_path("s1", "bad").exists()
    assert report.deleted_jobs == [] and reason in report.skipped[0]["reason"]


def test_huge_job_file_is_a_problem_not_a_memory_hog(clock, monkeypatch):
    monkeypatch.setattr(files, "MAX_JOB_FILE_BYTES", 1000)
    write_job("s1", "big", state="complete", updated_at=NOW - timedelta(hours=50), extra={"blob": "x" * 5000})
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert job_path("s1", "big").exists() and "larger than the 1000 B limit" in report.skipped[0]["reason"]


@pytest.mark.parametrize("session_id", ["..", "../etc", "a/b", "", "a\x00b", "x" * 200, "\u0430dmin"])
def test_traversal_and_hostile_session_ids_are_refused(clock, session_id):
    with pytest.raises(InvalidInput):
        cleanup_expired_jobs(session_id)


def test_symlinked_job_file_pointing_out_of_the_root_is_not_followed_or_deleted(clock, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(
        json.dumps({"job_id": "evil", "session_id": "s1", "state": "complete", "updated_at": "2020-01-01T00:00:00"})
    )
    (media() / "s1" / "jobs").mkdir(parents=True)
    (media() / "s1" / "jobs" / "evil.json").symlink_to(outside)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert outside.exists() and (media() / "s1" / "jobs" / "evil.json").is_symlink()
    assert "symlink, not followed" in report.skipped[0]["reason"]


def test_symlinked_session_or_output_folder_is_not_followed(clock, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_job("real", "j", state="complete", updated_at=NOW - timedelta(hours=50))
    os.rename(media() / "real", elsewhere)
    (media() / "linked").symlink_to(elsewhere)
    report = mixjobs_cleanup(actor="tests")
    assert (elsewhere / "jobs" / "j.json").exists()
    assert any(s["reason"] == "symlink, not followed" for s in report.skipped)

    write_job("s2", "k", state="complete", updated_at=NOW - timedelta(hours=50), output=False)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"keep me")
    output_path("s2").parent.mkdir(parents=True, exist_ok=True)
    output_path("s2").symlink_to(secret)
    mixjobs_cleanup(actor="tests", session_id="s2")
    assert secret.read_bytes() == b"keep me"


def test_job_rewritten_between_scan_and_delete_is_kept(clock, monkeypatch):
    write_job("s1", "j", state="complete", updated_at=NOW - timedelta(hours=50))
    real_read = cleanup_service.read_job_file
    calls = {"n": 0}

    def read_then_writer_updates(*, session_id, path, **options):
        calls["n"] += 1
        if calls["n"] == 2:  # the re-read just before deletion: the service restarted the job meanwhile
            write_job("s1", "j", state="queued", updated_at=NOW)
        return real_read(session_id=session_id, path=path, **options)

    monkeypatch.setattr(cleanup_service, "read_job_file", read_then_writer_updates)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    assert report.deleted_jobs == []
    assert json.loads(job_path("s1", "j").read_text())["state"] == "queued"
    assert report.skipped[0]["reason"] == "changed since it was scanned"


@pytest.mark.django_db(transaction=True)
def test_cleanup_waits_for_the_writers_lock(clock):
    write_job("s1", "j", state="complete", updated_at=NOW - timedelta(hours=50))
    jobs_folder = media() / "s1" / "jobs"
    release = threading.Event()
    taken = threading.Event()

    def writer():
        with session_lock(jobs_folder):
            taken.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    taken.wait(5)
    result = {}
    cleaner = threading.Thread(target=lambda: result.update(n=cleanup_expired_jobs("s1")))
    cleaner.start()
    cleaner.join(0.5)
    assert cleaner.is_alive() and job_path("s1", "j").exists()  # blocked behind the writer
    release.set()
    cleaner.join(10)
    thread.join()
    assert result == {"n": 1} and not job_path("s1", "j").exists()


def test_two_cleanups_at_once_in_two_processes_delete_each_job_once(tmp_path, settings):
    """Three `manage.py mixjobs cleanup` processes on one database and one media folder:
    one over all sessions, two over single sessions, so they meet on the same files and
    only the per-session lock file keeps them apart."""
    old = datetime.now(UTC) - timedelta(hours=50)
    for index in range(60):
        write_job(f"s{index % 4}", f"j{index}", state="complete", updated_at=old)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "MIX_MEDIA_DIR": str(settings.MIX_MEDIA_DIR),
        "MIX_OUTPUTS_DIR": str(settings.MIX_OUTPUTS_DIR),
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=settings.BASE_DIR, check=True)
    scopes = [[], ["--session", "s1"], ["--session", "s2"]]
    runs = [
        subprocess.Popen(
            [*manage, "mixjobs", "cleanup", "--json", *scope], env=env, cwd=settings.BASE_DIR, stdout=PIPE, stderr=PIPE
        )
        for scope in scopes
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    reports = [json.loads(out) for out, _ in outputs]
    deleted = [job["job_id"] for report in reports for job in report["deleted_jobs"]]
    assert sorted(deleted) == sorted(f"j{i}" for i in range(60))  # every job once, none twice
    assert not [p for i in range(4) for p in (media() / f"s{i}" / "jobs").glob("*.json")]


def test_dry_run_deletes_nothing_and_says_what_would_go(clock):
    write_job("s1", "j", state="complete", updated_at=NOW - timedelta(hours=50))
    report = mixjobs_cleanup(actor="tests", dry_run=True)
    assert [job["job_id"] for job in report.deleted_jobs] == ["j"]
    assert job_path("s1", "j").exists() and output_path("s1").exists()
    assert AuditEvent.objects.get().outcome == "dry_run"


def test_naive_and_offset_times_are_both_utc(clock):
    write_job("s1", "z", state="complete", updated_at=NOW, updated_at_override=None)
    path = job_path("s1", "z")
    content = json.loads(path.read_text())
    content["updated_at"] = (NOW - timedelta(hours=48)).strftime("%Y-%m-%dT%H:%M:%SZ")
    atomic_write(path, json.dumps(content).encode())
    assert cleanup_expired_jobs("s1") == 1


@pytest.mark.parametrize(
    ("killed_at", "call"),
    [((cleanup_service, "_claim"), 1), ((SetAside, "unlink"), 1), ((SetAside, "unlink"), 2)],
    ids=["setting-the-job-aside", "before-any-unlink", "between-the-two-unlinks"],
)
def test_a_cleanup_killed_with_files_set_aside_is_finished_by_the_next_run(clock, monkeypatch, killed_at, call):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(days=3), output=False)
    body = job_path("s1", "old").read_bytes()
    original = getattr(*killed_at)
    calls = []

    def killed(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise KeyboardInterrupt("the worker is killed here")
        return original(*args, **kwargs)

    monkeypatch.setattr(*killed_at, killed)
    with pytest.raises(KeyboardInterrupt):
        cleanup_expired_jobs("s1")
    jobs = media() / "s1" / "jobs"
    set_aside = sorted(p.name for p in jobs.glob(".old.json*.panel-cleanup-*"))
    # An index never outlives its job; the job's bytes are under its name or set aside.
    assert job_path("s1", "old").exists() or not index_path("old").exists()
    if call == 1:
        held = [path.read_bytes() for path in [job_path("s1", "old"), *(jobs / n for n in set_aside)] if path.exists()]
        assert body in held
    else:
        assert [name.split(".panel-cleanup-")[0] for name in set_aside] == [".old.json.index"]

    monkeypatch.setattr(*killed_at, original)
    report = mixjobs_cleanup(actor="tests", session_id="s1")
    # The next run puts the files back, judges the job again and finishes it.
    assert len(report.restored) == len(set_aside)
    assert [job["job_id"] for job in report.deleted_jobs] == (["old"] if call == 1 else [])
    assert not job_path("s1", "old").exists() and not index_path("old").exists()
    assert [p.name for p in jobs.iterdir()] == [".lock"]


def test_an_output_left_without_jobs_goes_once_older_than_any_ttl(clock):
    for session_id, age in [("orphan", timedelta(hours=49)), ("recent", timedelta(hours=1))]:
        atomic_write(output_path(session_id), b"RIFF" + b"\0" * 100)
        stamp = (NOW - age).timestamp()
        os.utime(output_path(session_id), (stamp, stamp))
        job_path(session_id, "x").parent.mkdir(parents=True)

    report = mixjobs_cleanup(actor="test")

    assert not output_path("orphan").exists()
    assert output_path("recent").exists()  # it may be a session whose first job is being written
    assert report.bytes_reclaimed == 104


def test_an_output_left_by_a_run_killed_after_its_sessions_last_job_goes_at_the_next_run(clock):
    # The mirror knows the sessions' jobs (a sync read them); a run killed between a session's
    # last job file and its output removed the job files and nothing else.
    from apps.mixjobs.services import mixjobs_sync

    jobs = {"killed": ("j1", "complete"), "writing": ("j2", "mixing")}
    for session_id, (job_id, state) in jobs.items():
        write_job(session_id, job_id, state=state, updated_at=NOW - timedelta(hours=50), output=True)
    mixjobs_sync(actor="tests")
    for session_id, (job_id, _state) in jobs.items():
        job_path(session_id, job_id).unlink()
        index_path(job_id).unlink()

    report = mixjobs_cleanup(actor="tests")

    # Its jobs had all expired: the fresh output was theirs. A session whose job had no expiry
    # (still mixing when last read) keeps its output, however it came to have no job file.
    assert not output_path("killed").exists()
    assert output_path("writing").exists()
    assert report.bytes_reclaimed > 0

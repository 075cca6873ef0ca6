"""Mix jobs at scale: time `sync` and `cleanup` against a minimal reference loop
(scandir + json + unlink) over an identical tree, in the same run, and print the ratios.

    .venv/bin/python bench/mixjobs.py                 # 100,000 jobs in 5,000 sessions, half expired
    .venv/bin/python bench/mixjobs.py --jobs 5000 --sessions 250   # a quick smoke run

Targets: cleanup within 2x of the reference loop (ours also takes the session lock,
re-reads each job before deleting it, checks every path and writes the audit event);
sync's query count the same for a tenth of the jobs and for all of them, give or take
one statement per 1,000 jobs.
"""

import os
import sys

# bench/inspect.py is named like the standard library's `inspect`: take bench/ off the path.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [ROOT, *(p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench"))]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402


def write_tree(media: Path, outputs: Path, *, jobs: int, sessions: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    (media / "jobs_index").mkdir(parents=True)
    for s in range(sessions):
        (media / f"s{s}" / "jobs").mkdir(parents=True)
        (outputs / f"s{s}").mkdir(parents=True)
        (outputs / f"s{s}" / "final_mix.wav").write_bytes(b"\0" * 2048)
    for j in range(jobs):
        session = f"s{j % sessions}"
        # Half the jobs are complete and 3 days old (expired), half are a day old.
        updated = now - timedelta(days=3 if j % 2 == 0 else 1)
        content = {
            "job_id": f"j{j}",
            "session_id": session,
            "state": "complete",
            "progress": 100,
            "message": "",
            "error": None,
            "created_at": updated.isoformat(),
            "updated_at": updated.isoformat(),
            "extra": {"tracks": [1, 2, 3, 4]},
        }
        (media / session / "jobs" / f"j{j}.json").write_text(json.dumps(content))
        (media / "jobs_index" / f"j{j}.json").write_text(json.dumps({"job_id": f"j{j}", "session_id": session}))


def reference_cleanup(media: Path, outputs: Path, ttl: timedelta) -> int:
    """The least a cleanup can do: read every job, unlink the expired ones and their index."""
    now = datetime.now(UTC)
    deleted = 0
    for session in os.scandir(media):
        if session.name == "jobs_index":
            continue
        remaining = 0
        for entry in os.scandir(os.path.join(session.path, "jobs")):
            with open(entry.path, "rb") as handle:
                job = json.load(handle)
            updated = datetime.fromisoformat(job["updated_at"]).replace(tzinfo=UTC)
            if job["state"] == "complete" and now - updated >= ttl:
                os.unlink(entry.path)
                os.unlink(media / "jobs_index" / entry.name)
                deleted += 1
            else:
                remaining += 1
        if remaining == 0:
            os.unlink(outputs / session.name / "final_mix.wav")
    return deleted


def setup_django(workdir: Path, media: Path, outputs: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings",
            "VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "MIX_MEDIA_DIR": str(media),
            "MIX_OUTPUTS_DIR": str(outputs),
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=5_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours_media, ours_outputs = work / "ours" / "media", work / "ours" / "outputs"
        ref_media, ref_outputs = work / "ref" / "media", work / "ref" / "outputs"
        start = time.perf_counter()
        write_tree(ours_media, ours_outputs, jobs=args.jobs, sessions=args.sessions)
        shutil.copytree(work / "ours", work / "ref")
        print(f"wrote {args.jobs} jobs in {args.sessions} sessions twice in {time.perf_counter() - start:.1f}s")
        (work / "var").mkdir()
        setup_django(work, ours_media, ours_outputs)

        from django.conf import settings
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from apps.mixjobs.services import mixjobs_cleanup, mixjobs_sync

        with CaptureQueriesContext(connection) as first:
            sync_seconds, sync_result = timed(lambda: mixjobs_sync(actor="bench"))
        resync_seconds, _ = timed(lambda: mixjobs_sync(actor="bench"))

        ttl = timedelta(hours=settings.JOB_TTL_HOURS)
        ref_seconds, ref_deleted = timed(lambda: reference_cleanup(ref_media, ref_outputs, ttl))
        ours_seconds, report = timed(lambda: mixjobs_cleanup(actor="bench"))
        assert len(report.deleted_jobs) == ref_deleted, (len(report.deleted_jobs), ref_deleted)

        # Query count against a tenth of the jobs, in a fresh database table.
        from apps.mixjobs.models import MixJob

        MixJob.objects.all().delete()
        small = work / "small"
        write_tree(small / "media", small / "outputs", jobs=args.jobs // 10, sessions=max(1, args.sessions // 10))
        settings.MIX_MEDIA_DIR, settings.MIX_OUTPUTS_DIR = small / "media", small / "outputs"
        with CaptureQueriesContext(connection) as tenth:
            mixjobs_sync(actor="bench")

    jobs, tenth_jobs = sync_result["jobs"], args.jobs // 10
    print(
        f"\nsync:    {sync_seconds:7.2f}s for {jobs} jobs ({jobs / sync_seconds:,.0f}/s), re-sync {resync_seconds:.2f}s"
    )
    print(f"queries: {len(tenth.captured_queries)} for {tenth_jobs} jobs, {len(first.captured_queries)} for {jobs}")
    extra = len(first.captured_queries) - len(tenth.captured_queries)
    print(f"sync queries per 1,000 more jobs: {1000 * extra / max(1, jobs - tenth_jobs):.2f} (target <= 1)")
    print(
        f"cleanup: {ours_seconds:7.2f}s ours vs {ref_seconds:.2f}s reference loop, {ref_deleted} jobs deleted by each"
    )
    ratio = ours_seconds / ref_seconds
    print(f"\ncleanup ratio {ratio:.2f} (target <= 2.00)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

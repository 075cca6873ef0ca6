"""Issue #15 item 6: a writer that skips the session lock can never lose a fresh job to cleanup."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from apps.mixjobs.aside import ASIDE_MARK
from apps.mixjobs.services import mixjobs_cleanup
from tests.mixjobs.helpers import media

pytestmark = pytest.mark.django_db

WRITER = Path(__file__).with_name("lockless_writer.py")
# Two atomic-rename rewrites per job (expired, then restarted fresh): 20,000 rewrites.
JOBS = 10_000
WRITER_DEADLINE_SECONDS = 120
TMPFS = "/dev/shm"


@pytest.fixture
def fast_media(settings):
    """The mix folders on tmpfs when there is one: on ext4 every rename over an existing file
    flushes it first (auto_da_alloc), which makes 20,000 rewrites take minutes, not seconds."""
    if not os.path.isdir(TMPFS):
        yield
        return
    with tempfile.TemporaryDirectory(dir=TMPFS, prefix="mixjobs-") as folder:
        settings.MIX_MEDIA_DIR = Path(folder) / "media"
        settings.MIX_OUTPUTS_DIR = Path(folder) / "outputs"
        yield


def test_a_writer_that_skips_the_lock_never_loses_a_fresh_job_to_cleanup(fast_media):
    folder = media() / "s1" / "jobs"
    folder.mkdir(parents=True)
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(folder), str(JOBS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + WRITER_DEADLINE_SECONDS
    runs = deleted = put_back = 0
    try:
        # Cleanups back to back for as long as the writer rewrites (the panel's lock is taken,
        # the writer never asks for it).
        while writer.poll() is None:
            assert time.monotonic() < deadline, f"the writer did not finish in {WRITER_DEADLINE_SECONDS} s"
            report = mixjobs_cleanup(actor="tests", session_id="s1")
            runs += 1
            deleted += len(report.deleted_jobs)
            put_back += sum("rewritten while it was being removed" in s["reason"] for s in report.skipped)
        out, err = writer.communicate(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    counts = json.loads(out)
    seen = f"{counts}, {runs} cleanups deleted {deleted} expired jobs, {put_back} put back"
    assert counts["rewrites"] >= 20_000, seen
    # The cleanups really raced the writer: they deleted expired jobs it was about to restart.
    assert deleted > 0 and counts["expired_deleted_before_restart"] > 0, seen
    assert counts["fresh_lost"] == 0, seen
    assert not [p.name for p in folder.iterdir() if ASIDE_MARK in p.name], "a file was left set aside"

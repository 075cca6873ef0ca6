"""Issue #17 item 4: the mix-job cleanup preview lists each file's size, kept and skipped
files too (measured by lstat, never opened)."""

import os
from datetime import timedelta

import pytest

from apps.mixjobs.services import mixjobs_cleanup_preview
from tests.mixjobs.helpers import NOW, job_path, output_path, write_job

pytestmark = pytest.mark.django_db


def test_every_file_in_the_preview_has_its_size(clock, tmp_path):
    write_job("s1", "old", state="complete", updated_at=NOW - timedelta(hours=50))
    write_job("s1", "new", state="complete", updated_at=NOW)
    linked = write_job("s2", "linked", state="complete", updated_at=NOW - timedelta(hours=50))
    os.link(linked, tmp_path / "another-name.json")  # a hard link is skipped, never removed
    preview = mixjobs_cleanup_preview()
    sizes = {item.path: item.bytes for item in preview.delete + preview.keep}
    assert sizes[str(job_path("s1", "old"))] == job_path("s1", "old").stat().st_size
    assert sizes[str(job_path("s1", "new"))] == job_path("s1", "new").stat().st_size  # kept: not expired
    assert sizes[str(output_path("s1"))] == 4096  # kept: a job of the session remains
    assert sizes[str(linked)] == linked.stat().st_size  # skipped: hard link
    assert all(size is not None for size in sizes.values()), sizes
    why = {item.path: item.why for item in preview.keep}
    assert why[str(output_path("s1"))] == "the session's output; 1 job of the session remains"

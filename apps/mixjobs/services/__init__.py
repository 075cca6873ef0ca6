"""Mix jobs: mirror the mixing service's files and expire them by TTL.

Split by seam: reading and locking the files is `apps.mixjobs.files`, the mirror is
`services.sync`, deletion by TTL is `services.cleanup`. The files are the truth: cleanup
works on them directly (the mixing service calls `cleanup_expired_jobs(session_id)` without
any sync). The names below are the public ones; pages, the CLI and schedules start this
work through the kinds in `apps.mixjobs.operations`.
"""

from apps.mixjobs.files import JobFile, Skipped, read_job_file, session_lock
from apps.mixjobs.services.cleanup import (
    CleanupReport,
    cleanup_expired_jobs,
    mixjobs_cleanup,
    mixjobs_cleanup_preview,
)
from apps.mixjobs.services.sync import mixjobs_sync

__all__ = [
    "CleanupReport",
    "JobFile",
    "Skipped",
    "cleanup_expired_jobs",
    "mixjobs_cleanup",
    "mixjobs_cleanup_preview",
    "mixjobs_sync",
    "read_job_file",
    "session_lock",
]

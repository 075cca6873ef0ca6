"""Separation sessions on their volume, split by seam: `scan` reads the volume, `plan` holds
the cleanup policies and a batch's dry run, `cleanup` runs a batch, `mirror` keeps the
`SeparationSession` rows and the size samples. Work is asked for through the kinds declared
in `apps/separations/operations.py` (`request` / `run_now`), never by calling these directly
from a page, the API or the CLI.
"""

from apps.audit.names import TargetType
from apps.separations.services.cleanup import CLEANUP_PROGRESS_UNIT, cleanup_sentence, sessions_cleanup
from apps.separations.services.mirror import (
    DELETION_FIELDS,
    MIRROR_FIELDS,
    SAMPLE_DOMAIN,
    SYNC_PROGRESS_UNIT,
    mirror_deleted,
    sessions_sync,
    sync_sentence,
)
from apps.separations.services.plan import (
    POLICIES,
    CleanupPlan,
    Policy,
    clean_session_ids,
    cleanup_check,
    cleanup_params_check,
    cleanup_plan,
    policy_get,
)
from apps.separations.services.scan import (
    SESSIONS_DIR,
    STEM_FILES,
    SessionScan,
    VolumeScan,
    session_scan,
    sessions_backend,
    sessions_volume_name,
    volume_check,
    volume_scan,
)

TARGET_TYPE = TargetType.SESSION_VOLUME

__all__ = [
    "CLEANUP_PROGRESS_UNIT",
    "DELETION_FIELDS",
    "MIRROR_FIELDS",
    "POLICIES",
    "SAMPLE_DOMAIN",
    "SESSIONS_DIR",
    "STEM_FILES",
    "SYNC_PROGRESS_UNIT",
    "TARGET_TYPE",
    "CleanupPlan",
    "Policy",
    "SessionScan",
    "VolumeScan",
    "clean_session_ids",
    "cleanup_check",
    "cleanup_params_check",
    "cleanup_plan",
    "cleanup_sentence",
    "mirror_deleted",
    "policy_get",
    "session_scan",
    "sessions_backend",
    "sessions_cleanup",
    "sessions_sync",
    "sessions_volume_name",
    "sync_sentence",
    "volume_check",
    "volume_scan",
]

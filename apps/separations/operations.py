"""The sessions volume's two kinds of work, declared once (see `apps/audit/operations.py`).

Both hold the whole volume (`target_id` names it from settings), so a sync steps aside while
a cleanup batch runs and two batches never race. Pages, the admin, the API, the CLI and the
schedule ask for them with `request` / `run_now` and nothing else.
"""

from apps.audit.models import Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import OperationKind, Schedule
from apps.separations.services import (
    CLEANUP_PROGRESS_UNIT,
    SYNC_PROGRESS_UNIT,
    cleanup_check,
    cleanup_sentence,
    sessions_cleanup,
    sessions_sync,
    sessions_volume_name,
    sync_sentence,
)

CLEANUP_PERMISSION = "separations.cleanup_separationsession"
SYNC_PERMISSION = "separations.sync_separationsession"


def cleanup_run(operation: Operation) -> dict:
    return sessions_cleanup(
        policy=operation.params["policy"],
        session_ids=operation.params.get("session_ids") or (),
        actor=operation.actor,
        operation=operation,
    )


def sync_run(operation: Operation) -> dict:
    return sessions_sync(actor=operation.actor, operation=operation)


SESSIONS_CLEANUP = OperationKind(
    name=Kind.SESSIONS_CLEANUP.value,  # a plain str: schedules write repr(name) as the task args
    target_type=TargetType.SESSION_VOLUME,
    target_id=sessions_volume_name,
    run=cleanup_run,
    check=cleanup_check,
    permission=CLEANUP_PERMISSION,
    audit_action=AuditAction.SESSIONS_CLEANUP,
    label=Kind.SESSIONS_CLEANUP.label,
    progress_unit=CLEANUP_PROGRESS_UNIT,
    describe=cleanup_sentence,
)

SESSIONS_SYNC = OperationKind(
    name=Kind.SESSIONS_SYNC.value,  # a plain str: schedules write repr(name) as the task args
    target_type=TargetType.SESSION_VOLUME,
    target_id=sessions_volume_name,
    run=sync_run,
    permission=SYNC_PERMISSION,
    audit_action=AuditAction.SESSIONS_SYNC,
    label=Kind.SESSIONS_SYNC.label,
    progress_unit=SYNC_PROGRESS_UNIT,
    describe=sync_sentence,
    schedule=Schedule("sync separation sessions", 15, "schedule:sync-sessions"),
)

KINDS = (SESSIONS_SYNC, SESSIONS_CLEANUP)

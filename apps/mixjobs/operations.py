"""The kinds of work on mix jobs, declared once (registered in MixjobsConfig.ready()).

Pages, the admin, the CLI, schedules and `cleanup_expired_jobs` start them through
`apps.audit.operations` (`request`, `request_many`, `run_now`), never by calling the
services below directly.
"""

from apps.audit.holds import hold_refuse
from apps.audit.models import Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import OperationKind, Schedule
from apps.mixjobs.services import mixjobs_cleanup, mixjobs_sync
from controlpanel.formatting import humanize_bytes, plural
from controlpanel.paths import validate_id

# Cleaning up and syncing need the same permission: both rewrite what the panel knows of the files.
CLEANUP_PERMISSION = "mixjobs.cleanup_mixjob"


def _count(value) -> int:
    # The CLI asks for every deleted job and file (`itemised`); everyone else gets counts.
    return value if isinstance(value, int) else len(value)


def describe_sync(result: dict) -> str:
    return (
        f"Mirrored {plural(result['jobs'], 'job')} ({result['problems']} with problems); "
        f"{result['vanished']} vanished; {humanize_bytes(result['bytes'])} held."
    )


def describe_cleanup(result: dict) -> str:
    return (
        f"Deleted {plural(_count(result['deleted_jobs']), 'expired job')} "
        f"({plural(_count(result['deleted_files']), 'file')}), "
        f"reclaiming {humanize_bytes(result['bytes_reclaimed'])}; "
        f"{plural(len(result['skipped']), 'file')} skipped."
    )


def run_sync(operation: Operation) -> dict:
    return mixjobs_sync(actor=operation.actor, operation=operation)


def run_cleanup(operation: Operation) -> dict:
    report = mixjobs_cleanup(actor=operation.actor, operation=operation)
    return report.as_result(itemised=bool(operation.params.get("itemised")))


def run_cleanup_session(operation: Operation) -> dict:
    report = mixjobs_cleanup(actor=operation.actor, session_id=operation.target_id, operation=operation)
    return report.as_result(itemised=bool(operation.params.get("itemised")))


def check_session(target_id: str, params: dict) -> None:
    validate_id(target_id, kind="session id")
    # Asking for one session's cleanup is a manual deletion: refused while it is on hold.
    hold_refuse(target_type=TargetType.MIXJOB_SESSION, target_id=target_id, what=f"mix-job session {target_id}")


MIXJOBS_SYNC = OperationKind(
    name=Kind.MIXJOBS_SYNC.value,
    target_type=TargetType.MIXJOBS,
    target_id="sync",
    run=run_sync,
    permission=CLEANUP_PERMISSION,
    audit_action=AuditAction.MIXJOBS_SYNC,
    label=Kind.MIXJOBS_SYNC.label,
    progress_unit="jobs",
    describe=describe_sync,
    schedule=Schedule("mix jobs sync", 15, "schedule:mix jobs sync"),
)


def _cleanup_kind(name: Kind, **declared) -> OperationKind:
    """Both cleanups share all but their target: one session, or every session."""
    return OperationKind(
        name=name.value,  # a plain string: schedules store it as their argument
        label=name.label,
        permission=CLEANUP_PERMISSION,
        # There is no separate action for one session: the event's target names the session.
        audit_action=AuditAction.MIXJOBS_CLEANUP,
        progress_unit="sessions",
        describe=describe_cleanup,
        **declared,
    )


MIXJOBS_CLEANUP = _cleanup_kind(
    Kind.MIXJOBS_CLEANUP,
    target_type=TargetType.MIXJOBS,
    target_id="cleanup",
    run=run_cleanup,
    schedule=Schedule("mix jobs cleanup", 60, "schedule:mix jobs cleanup"),
)

MIXJOBS_CLEANUP_SESSION = _cleanup_kind(
    Kind.MIXJOBS_CLEANUP_SESSION,
    target_type=TargetType.MIXJOB_SESSION,
    run=run_cleanup_session,
    check=check_session,
    # The session's lock file already keeps two cleanups of one session (and the mixing
    # service's writes) apart; a row left `running` by a killed process must not refuse
    # the mixing service's next `cleanup_expired_jobs` until the reaper frees it.
    exclusive=False,
)

KINDS = [MIXJOBS_SYNC, MIXJOBS_CLEANUP, MIXJOBS_CLEANUP_SESSION]

"""django-q2 entry points: each receives an operation id and calls the service."""

import logging

from apps.audit.services import operation_execute
from apps.separations.services import sessions_cleanup_run, sessions_sync_now, sessions_sync_run
from controlpanel.errors import Busy, PanelError

logger = logging.getLogger(__name__)

SCHEDULES = [
    ("sync separation sessions", "apps.separations.tasks.sessions_sync_scheduled", "I", 15),
]


def sessions_cleanup_task(operation_id: int):
    return operation_execute(operation_id=operation_id, work=lambda op: sessions_cleanup_run(operation=op)).status


def sessions_sync_task(operation_id: int):
    return operation_execute(operation_id=operation_id, work=lambda op: sessions_sync_run(operation=op)).status


def sessions_sync_scheduled() -> str:
    """The periodic sync; it steps aside while a cleanup batch holds the volume."""
    try:
        result = sessions_sync_now(actor="schedule:sync-sessions")
    except Busy as exc:
        logger.info("sessions sync skipped: %s", exc)
        return f"skipped: {exc}"
    except PanelError as exc:
        return f"failed: {exc}"  # the operation row holds the failure for the task panel
    return f"{result['sessions']} sessions, {result['total_bytes']} bytes"

"""django-q2 entry points: load the operation, call the service, nothing else."""

from apps.audit.services import operation_execute
from apps.mixjobs.services import (
    mixjobs_cleanup_run,
    mixjobs_cleanup_start,
    mixjobs_sync_run,
    mixjobs_sync_start,
)
from controlpanel.errors import Busy

SCHEDULES = [
    ("mix jobs sync", "apps.mixjobs.tasks.mixjobs_sync_scheduled", "I", 15),
    ("mix jobs cleanup", "apps.mixjobs.tasks.mixjobs_cleanup_scheduled", "I", 60),
]


def mixjobs_cleanup_task(operation_id: int) -> str:
    return operation_execute(operation_id=operation_id, work=lambda op: mixjobs_cleanup_run(operation=op)).status


def mixjobs_sync_task(operation_id: int) -> str:
    return operation_execute(operation_id=operation_id, work=lambda op: mixjobs_sync_run(operation=op)).status


def mixjobs_cleanup_scheduled() -> str:
    try:
        operation = mixjobs_cleanup_start(actor="schedule:mix jobs cleanup")
    except Busy as exc:
        return f"skipped: {exc}"  # an admin's cleanup is running; this turn is not needed
    return operation_execute(operation_id=operation.pk, work=lambda op: mixjobs_cleanup_run(operation=op)).status


def mixjobs_sync_scheduled() -> str:
    try:
        operation = mixjobs_sync_start(actor="schedule:mix jobs sync")
    except Busy as exc:
        return f"skipped: {exc}"
    return operation_execute(operation_id=operation.pk, work=lambda op: mixjobs_sync_run(operation=op)).status

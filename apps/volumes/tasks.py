"""django-q2 entry points: each receives an operation id and calls the service."""

from apps.audit.services import operation_execute
from apps.volumes.services import volume_crosscheck_run, volume_inspect_run, volumes_inspect_all

SCHEDULES = [
    ("inspect volumes", "apps.volumes.tasks.volumes_inspect_scheduled", "I", 360),
]


def volume_inspect_task(operation_id: int):
    return operation_execute(operation_id=operation_id, work=lambda op: volume_inspect_run(operation=op)).status


def volume_crosscheck_task(operation_id: int):
    return operation_execute(operation_id=operation_id, work=lambda op: volume_crosscheck_run(operation=op)).status


def volumes_inspect_scheduled() -> str:
    queued = volumes_inspect_all(actor="schedule:inspect-volumes")
    return f"{len(queued)} inspections queued"

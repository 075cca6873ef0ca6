"""django-q2 entry points: receive an operation id (or nothing, for schedules), call services."""

from apps.audit.services import operation_execute
from apps.pods.services import pod_operation_run, pods_operation_create
from controlpanel.errors import Busy

# (name, dotted function, schedule type, minutes between runs); see apps/audit/tasks.py.
SCHEDULES = [
    ("reconcile pods", "apps.pods.tasks.reconcile_pods_task", "I", 1),
    ("sweep orphaned pod volumes", "apps.pods.tasks.sweep_orphans_task", "I", 60),
    ("apply snapshot retention", "apps.pods.tasks.snapshot_retention_task", "I", 60),
]


def run_pod_operation(operation_id: int) -> None:
    operation_execute(operation_id=operation_id, work=pod_operation_run)


def _scheduled(action: str, actor: str) -> str:
    try:
        operation = pods_operation_create(action=action, actor=actor)
    except Busy as exc:
        # The previous run is still going; this one has nothing to add.
        return str(exc)
    done = operation_execute(operation_id=operation.pk, work=pod_operation_run)
    return done.status


def reconcile_pods_task() -> str:
    return _scheduled("reconcile", "schedule:reconcile-pods")


def sweep_orphans_task() -> str:
    return _scheduled("sweep-orphans", "schedule:sweep-orphans")


def snapshot_retention_task() -> str:
    return _scheduled("retention", "schedule:snapshot-retention")

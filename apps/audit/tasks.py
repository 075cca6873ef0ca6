"""Scheduled housekeeping of our own history."""

from apps.audit.services import operation_reap_stale

# Each app's tasks.py lists its schedules here; `manage.py setup_schedules` creates them.
# (name, dotted function, schedule type, minutes between runs)
SCHEDULES = [
    ("reap stale operations", "apps.audit.tasks.reap_stale_operations_task", "I", 5),
]


def reap_stale_operations_task() -> int:
    return operation_reap_stale()

"""Scheduled housekeeping of our own history. Every kind of work runs through
`apps.audit.operations.run_operation` / `run_scheduled` instead."""

from apps.audit.services import operation_reap_stale


def reap_stale_operations_task() -> int:
    return operation_reap_stale()

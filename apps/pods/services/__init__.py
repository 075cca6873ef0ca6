"""Every side effect on pods: one function per action, called (through the operation kinds
in `apps.pods.operations`) by the admin, the pages, the schedules and `manage.py pods`.

A package split along its seams; every public name is importable from here:
  hosts         the Docker hosts and their engines
  state         the pod row: lookup, lock, recorded failures, its eight volume rows
  snapshotting  streaming volumes into the snapshot store, verifying, restoring, purging
  lifecycle     provision, stop, start, deprovision, delete
  capture       the streaming core a stop and a backup share
  backup        backups of running pods (and the schedule's `backups`)
  housekeeping  reconcile (and resume), orphan sweep
  retention     snapshot retention by policy (keep last / daily / weekly, never held)
  verify        re-reading complete snapshots against their manifests
  drill         restore drills into temporary volumes, and their leftovers
  previews      what a request must pass, and what a confirmation page shows
"""

from apps.pods.actions import POD_ACTIONS, RESUME_ACTIONS, pod_action, pod_action_allowed
from apps.pods.services.backup import backup_check, pod_backup
from apps.pods.services.drill import drill_check, drills_leftover_remove, pod_drill
from apps.pods.services.hosts import engine_for, host_default, host_get
from apps.pods.services.housekeeping import orphans_plan, orphans_sweep, pods_reconcile, pods_resume_interrupted
from apps.pods.services.lifecycle import pod_delete, pod_deprovision, pod_provision, pod_start, pod_stop
from apps.pods.services.previews import orphans_preview, pod_action_check, pod_preview
from apps.pods.services.retention import retention_preview, snapshots_apply_retention, snapshots_to_retire
from apps.pods.services.snapshotting import VOLUME_STREAMS
from apps.pods.services.state import RESERVED_POD_IDS, _volume_rows_ensure, pod_get, pod_id_check
from apps.pods.services.verify import snapshots_verify

__all__ = [
    "POD_ACTIONS",
    "RESERVED_POD_IDS",
    "RESUME_ACTIONS",
    "VOLUME_STREAMS",
    "_volume_rows_ensure",
    "backup_check",
    "drill_check",
    "drills_leftover_remove",
    "engine_for",
    "host_default",
    "host_get",
    "orphans_plan",
    "orphans_preview",
    "orphans_sweep",
    "pod_action",
    "pod_action_allowed",
    "pod_action_check",
    "pod_backup",
    "pod_delete",
    "pod_drill",
    "pod_deprovision",
    "pod_get",
    "pod_id_check",
    "pod_preview",
    "pod_provision",
    "pod_start",
    "pod_stop",
    "pods_reconcile",
    "pods_resume_interrupted",
    "retention_preview",
    "snapshots_apply_retention",
    "snapshots_to_retire",
    "snapshots_verify",
]

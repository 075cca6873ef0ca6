"""The panel's vocabulary, defined once: operation kinds, audit actions and target types.

Strings only (no imports from the domain apps): each domain declares what its kinds do in
its own `operations.py`; this module only names them so that a typo is an AttributeError,
not a kind nobody runs or an action no filter finds.
"""

from django.db import models


class TargetType(models.TextChoices):
    POD = "pod", "pod"
    PODS = "pods", "all pods"
    SESSION_VOLUME = "session-volume", "sessions volume"
    MIXJOB_SESSION = "mixjob-session", "mix-job session"
    MIXJOBS = "mixjobs", "all mix jobs"
    VOLUME = "volume", "volume"
    VOLUMES = "volumes", "all volumes"
    PANEL = "panel", "the panel"
    SNAPSHOT = "snapshot", "snapshot"
    SEPARATION_SESSION = "separation-session", "separation session"
    VOLUME_FOLDER = "volume-folder", "volume folder"
    NOTIFICATION = "notification", "notification"
    API_TOKEN = "api-token", "API token"


class Kind(models.TextChoices):
    """Operation kinds: `apps/<app>/operations.py` declares what each one does."""

    POD_PROVISION = "pod.provision", "Provision pod"
    POD_STOP = "pod.stop", "Stop pod"
    POD_START = "pod.start", "Start pod"
    POD_DEPROVISION = "pod.deprovision", "Deprovision pod"
    POD_DELETE = "pod.delete", "Delete pod"
    PODS_RECONCILE = "pods.reconcile", "Reconcile pods"
    PODS_SWEEP_ORPHANS = "pods.sweep-orphans", "Sweep orphaned pod volumes"
    PODS_RETENTION = "pods.retention", "Apply snapshot retention"
    PODS_MEASURE = "pods.measure", "Measure pod volume sizes"
    PODS_VERIFY = "pods.verify", "Verify snapshots"
    PODS_DRILL = "pods.drill", "Restore drill"
    PODS_DRILL_ROTATION = "pods.drill-rotation", "Rotate restore drills"
    PODS_IDLE_STOP = "pods.idle-stop", "Stop idle pods"
    PODS_DORMANCY = "pods.dormancy", "Mark dormant pods"
    SESSIONS_SYNC = "sessions.sync", "Sync separation sessions"
    SESSIONS_CLEANUP = "sessions.cleanup", "Clean up separation sessions"
    MIXJOBS_SYNC = "mixjobs.sync", "Sync mix jobs"
    MIXJOBS_CLEANUP = "mixjobs.cleanup", "Clean up expired mix jobs"
    MIXJOBS_CLEANUP_SESSION = "mixjobs.cleanup-session", "Clean up one session's expired mix jobs"
    VOLUME_INSPECT = "volume.inspect", "Inspect volume"
    VOLUME_CROSSCHECK = "volume.crosscheck", "Cross-check volume with S3"
    VOLUMES_INSPECT_ALL = "volumes.inspect-all", "Inspect every volume"
    VOLUME_REMOVE_FOLDER = "volume.remove-folder", "Remove a folder from a volume"
    PANEL_WATCH = "panel.watch", "Watch the leak total"
    PANEL_DIGEST = "panel.digest", "Send the daily digest"


class AuditAction(models.TextChoices):
    """What an audit event says was done. An operation kind audits as its own name."""

    POD_PROVISION = "pod.provision", "pod provisioned"
    POD_STOP = "pod.stop", "pod stopped"
    POD_START = "pod.start", "pod started"
    POD_DEPROVISION = "pod.deprovision", "pod deprovisioned"
    POD_DELETE = "pod.delete", "pod deleted"
    POD_RECONCILE = "pod.reconcile", "pod reconciled"
    POD_RESUME = "pod.resume", "pod's interrupted work resumed"
    PODS_SWEEP_ORPHANS = "pods.sweep-orphans", "orphaned pod volumes swept"
    PODS_RETENTION = "pods.retention", "snapshot retention applied"
    PODS_MEASURE = "pods.measure", "pod volume sizes measured"
    PODS_VERIFY = "pods.verify", "snapshots verified"
    PODS_DRILL = "pods.drill", "restore drill run"
    PODS_IDLE_STOP = "pods.idle-stop", "idle pods looked for"
    PODS_DORMANCY = "pods.dormancy", "dormant pods looked for"
    POD_IDLE = "pod.idle", "idle pod stop queued"
    POD_DORMANT = "pod.dormant", "pod dormant"
    SNAPSHOT_DELETE = "snapshot.delete", "snapshot purged"
    SESSIONS_SYNC = "sessions.sync", "sessions synced"
    SESSIONS_CLEANUP = "sessions.cleanup", "sessions cleaned up"
    MIXJOBS_SYNC = "mixjobs.sync", "mix jobs synced"
    MIXJOBS_CLEANUP = "mixjobs.cleanup", "mix jobs cleaned up"
    VOLUME_ADD = "volume.add", "volume added"
    VOLUME_PRESET = "volume.preset", "layout preset applied"
    VOLUME_INSPECT = "volume.inspect", "volume inspected"
    VOLUME_CROSSCHECK = "volume.crosscheck", "volume cross-checked"
    VOLUMES_INSPECT_ALL = "volumes.inspect-all", "inspections queued"
    VOLUME_REMOVE_FOLDER = "volume.remove-folder", "folder removed from a volume"
    OPERATION_RETRY = "operation.retry", "operation retried"
    NOTIFY_SENT = "notify.sent", "notification sent"
    HOLD_SET = "hold.set", "hold set"
    HOLD_RELEASE = "hold.release", "hold released"
    API_TOKEN_CREATE = "api.token-create", "API token made"
    API_TOKEN_REVOKE = "api.token-revoke", "API token revoked"
    NOTIFY_FAILED = "notify.failed", "notification failed"

"""Pods, their eight volumes, the Docker hosts they live on and their snapshots.

State lives here; every change of it happens in `apps.pods.services`.
"""

from django.db import models
from django.utils import timezone

from controlpanel.errors import IllegalTransition as IllegalTransition  # re-exported: older imports
from controlpanel.transitions import StateMachine

# The eight volumes of every pod: name → mount path, in a fixed order.
VOLUME_MOUNTS: dict[str, str] = {
    "workspace": "/workspace",
    "home": "/home",
    "root": "/root",
    "etc": "/etc",
    "usr-local": "/usr/local",
    "opt": "/opt",
    "var": "/var",
    "srv": "/srv",
}
VOLUME_PREFIX = "pinacle-vol-"
CONTAINER_PREFIX = "pinacle-pod-"
POD_LABEL = "pinacle.pod"
VOLUME_LABEL = "pinacle.volume"
# How storage samples, charts and the overview's leaks name the bytes pods hold.
DOMAIN = "pods"
# Storage samples of bytes a deduplicated snapshot store holds that no snapshot needs
# (subject: the store's URL); the overview reports the latest of each as a leak.
UNREFERENCED_DOMAIN = "pods-unreferenced"


def volume_docker_name(pod_id: str, volume: str) -> str:
    return f"{VOLUME_PREFIX}{pod_id}-{volume}"


def container_name(pod_id: str) -> str:
    return f"{CONTAINER_PREFIX}{pod_id}"


class DockerHost(models.Model):
    """A Docker engine pods run on. The default one (`local`) comes from DOCKER_HOST."""

    name = models.SlugField(max_length=64, unique=True)
    base_url = models.CharField(max_length=255, help_text="unix://, tcp:// or ssh:// URL of the engine")
    # None until the first check; reconcile sets it on every run.
    reachable = models.BooleanField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Pod(StateMachine, models.Model):
    class Status(models.TextChoices):
        PROVISIONING = "provisioning", "provisioning"
        RUNNING = "running", "running"
        PAUSED = "paused", "paused"  # container not running without a user action; volumes kept
        STOPPING = "stopping", "stopping"
        STOPPED = "stopped", "stopped"  # volumes removed after a verified snapshot
        STARTING = "starting", "starting"
        DEPROVISIONING = "deprovisioning", "deprovisioning"
        DEPROVISIONED = "deprovisioned", "deprovisioned"
        DELETING = "deleting", "deleting"
        DELETED = "deleted", "deleted"
        FAILED = "failed", "failed"  # provisioning failed; whatever was created is removed
        UNKNOWN = "unknown", "unknown"  # its Docker host cannot be reached

    # Work is under way: reconcile and the orphan sweep leave these pods alone.
    TRANSITIONAL = {Status.PROVISIONING, Status.STOPPING, Status.STARTING, Status.DEPROVISIONING, Status.DELETING}
    # The pod should have its eight volumes on its host.
    HOLDS_VOLUMES = {Status.RUNNING, Status.PAUSED, Status.UNKNOWN}
    # The pod should have no volume at all: any that exists is a leak.
    NO_VOLUMES = {Status.STOPPED, Status.DEPROVISIONED, Status.DELETED, Status.FAILED}

    TRANSITIONS: dict[str, set[str]] = {
        # Provisioning again after a killed worker: the operation lock keeps it to one at a time.
        Status.PROVISIONING: {Status.PROVISIONING, Status.RUNNING, Status.FAILED},
        Status.RUNNING: {Status.STOPPING, Status.PAUSED, Status.DEPROVISIONING, Status.DELETING, Status.UNKNOWN},
        Status.PAUSED: {
            Status.RUNNING,
            Status.STARTING,
            Status.STOPPING,
            Status.DEPROVISIONING,
            Status.DELETING,
            Status.UNKNOWN,
        },
        # A stop that failed after its snapshot was verified stays here; retrying stop finishes it.
        Status.STOPPING: {Status.STOPPING, Status.STOPPED, Status.PAUSED},
        Status.STOPPED: {Status.STARTING, Status.DEPROVISIONING, Status.DELETING},
        Status.STARTING: {Status.STARTING, Status.RUNNING, Status.PAUSED, Status.STOPPED},
        Status.DEPROVISIONING: {Status.DEPROVISIONING, Status.DEPROVISIONED},
        # Starting a deprovisioned pod restores its latest snapshot, like a stopped one.
        Status.DEPROVISIONED: {Status.PROVISIONING, Status.STARTING, Status.DELETING},
        Status.DELETING: {Status.DELETING, Status.DELETED},
        Status.DELETED: {Status.PROVISIONING},
        Status.FAILED: {Status.PROVISIONING, Status.DEPROVISIONING, Status.DELETING},
        Status.UNKNOWN: {Status.RUNNING, Status.PAUSED, Status.DEPROVISIONING, Status.DELETING},
    }

    pod_id = models.CharField(max_length=64, unique=True)
    host = models.ForeignKey(DockerHost, on_delete=models.PROTECT, related_name="pods")
    image = models.CharField(max_length=255)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROVISIONING, db_index=True)
    container_id = models.CharField(max_length=80, null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # When the current status began: a resumed stop reuses a snapshot verified after this.
    status_changed_at = models.DateTimeField(default=timezone.now)
    # Set while a start restores this snapshot: a resumed start knows the volumes hold only
    # a partial restore (safe to redo), not a paused pod's live data.
    restoring_snapshot = models.ForeignKey(
        "pods.Snapshot", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # When a start last finished writing the volumes from a folder snapshot, before the container
    # ran: a file changed since then is told by its change time (`volume_marks.times_untrusted`).
    restored_at = models.DateTimeField(null=True, blank=True)
    # Idle detection (`services.idle`): {"container": id, "samples": [[unix time, CPU seconds
    # used by that container so far], …]}, thinned to a few per POD_IDLE_STOP_HOURS by reconcile.
    cpu_samples = models.JSONField(default=dict, blank=True)
    # Dormancy: stopped and not started for POD_DORMANT_DAYS; when it was warned that it will be
    # deprovisioned. Starting (or provisioning) it again clears both.
    dormant_since = models.DateTimeField(null=True, blank=True)
    dormant_warned_at = models.DateTimeField(null=True, blank=True)

    # Last proven restorable: when a restore drill (or a verification of one of its snapshots)
    # last succeeded, and which; the last drill's failure until one succeeds (`services.drill`).
    proven_at = models.DateTimeField(null=True, blank=True)
    proven_by = models.CharField(max_length=200, blank=True)
    drill_error = models.TextField(blank=True)

    # Backups of the running pod (`services.backup`): every this many hours instead of
    # POD_BACKUP_EVERY_HOURS (0 = never); when the schedule last found it unchanged since its
    # newest copy (that copy still holds all of it); when it was told its recovery point is at risk.
    backup_every_hours = models.FloatField(
        null=True, blank=True, help_text="hours between backups of the running pod; empty: POD_BACKUP_EVERY_HOURS"
    )
    backup_unchanged_at = models.DateTimeField(null=True, blank=True)
    backup_at_risk_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pod_id"]
        permissions = [
            ("provision_pod", "Can provision a pod"),
            ("stop_pod", "Can stop a pod (snapshot, then remove its volumes)"),
            ("start_pod", "Can start a pod"),
            ("deprovision_pod", "Can deprovision a pod (remove container and volumes)"),
            # Deleting a pod with its snapshots uses Django's own `delete_pod` permission.
            ("sweep_orphans", "Can remove orphaned pod volumes and old snapshots"),
            ("verify_snapshot", "Can verify snapshots and run restore drills"),
            # Names and sizes are for anyone who may view the pod; contents are not.
            ("restore_files_pod", "Can download files from snapshots and restore them beside the current ones"),
            ("backup_pod", "Can back up a running pod (removes nothing)"),
        ]

    def __str__(self) -> str:
        return self.pod_id

    def state_label(self) -> str:
        return f"pod {self.pod_id!r}"

    def on_transition(self, before: str, to: str, **details) -> None:
        now = timezone.now()
        if to != before:
            self.status_changed_at = now
            self.cpu_samples = {}  # idleness is measured afresh in every status
        if to in {self.Status.STARTING, self.Status.PROVISIONING}:
            self.dormant_since = self.dormant_warned_at = None  # in use again
        self.updated_at = now

    @property
    def container_name(self) -> str:
        return container_name(self.pod_id)

    def active_hold(self):
        """The hold on this pod now, or None (for its page)."""
        from apps.audit.holds import hold_for
        from apps.audit.names import TargetType

        return hold_for(target_type=TargetType.POD, target_id=self.pod_id)


class PodVolume(models.Model):
    pod = models.ForeignKey(Pod, on_delete=models.CASCADE, related_name="volumes")
    name = models.CharField(max_length=20, choices=[(name, name) for name in VOLUME_MOUNTS])
    docker_name = models.CharField(max_length=200, unique=True)
    mount_path = models.CharField(max_length=100)
    exists = models.BooleanField(default=False)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    # When the size schedule last walked it, measured or cut off by its budget: the schedule
    # takes the volumes looked at longest ago first (see `services.sizes`).
    size_tried_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pod", "id"]
        constraints = [models.UniqueConstraint(fields=["pod", "name"], name="one_volume_of_each_name_per_pod")]
        indexes = [
            # Existing volumes only, with their size: the overview sums them and finds those of
            # pods that should hold none without reading the table's other rows.
            models.Index(
                fields=["pod", "exists", "size_bytes"], name="podvolume_existing", condition=models.Q(exists=True)
            ),
        ]

    def __str__(self) -> str:
        return self.docker_name


class Snapshot(StateMachine, models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        UPLOADING = "uploading", "uploading"
        COMPLETE = "complete", "complete"
        FAILED = "failed", "failed"
        DELETED = "deleted", "deleted"

    class Kind(models.TextChoices):
        STOP = "stop", "stop"  # taken with the container stopped, before its volumes went
        BACKUP = "backup", "backup"  # taken while the pod ran (`services.backup`); removed nothing

    TRANSITIONS: dict[str, set[str]] = {
        Status.PENDING: {Status.UPLOADING, Status.FAILED},
        Status.UPLOADING: {Status.COMPLETE, Status.FAILED},
        Status.COMPLETE: {Status.DELETED},
        Status.FAILED: {Status.DELETED},
        Status.DELETED: set(),
    }

    pod = models.ForeignKey(Pod, on_delete=models.CASCADE, related_name="snapshots")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.STOP)
    # The store it was written to: a later change of SNAPSHOT_STORE_URL still finds it.
    store_url = models.CharField(max_length=500)
    # {volume: {"key": ..., "bytes": ..., "sha256": ...}} for each of the eight volumes.
    manifest = models.JSONField(default=dict, blank=True)
    total_bytes = models.BigIntegerField(default=0)
    # Bytes this snapshot added to its store: the tars' size in a tar store, what restic
    # added (new chunks only) in a dedup store. None for snapshots taken before it was kept.
    stored_bytes = models.BigIntegerField(null=True, blank=True)
    # Estimated bytes to move (measured volume sizes) while uploading, for the progress bar.
    expected_bytes = models.BigIntegerField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    operation = models.ForeignKey("audit.Operation", null=True, blank=True, on_delete=models.SET_NULL)
    # Verification (`services.verify`) re-reads it from its store: when it last passed, when it
    # was last read (the schedule takes the longest unread first) and why it last failed.
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_checked_at = models.DateTimeField(null=True, blank=True)
    verify_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["pod", "status", "-finished_at"]),
            # The overview's snapshot bytes and retention count read this index, not the rows
            # (each row carries its manifest).
            models.Index(
                fields=["status", "pod", "-finished_at", "total_bytes", "bytes_done"], name="snapshot_retention"
            ),
        ]

    def __str__(self) -> str:
        return f"snapshot #{self.pk} of {self.pod_id} ({self.status})"

    def state_label(self) -> str:
        return f"snapshot #{self.pk}"

    @property
    def prefix(self) -> str:
        return f"{self.pod.pod_id}/{self.pk}"

    @property
    def percent(self) -> int | None:
        total = self.expected_bytes or self.total_bytes
        if not total:
            return None
        return max(0, min(100, int(self.bytes_done * 100 / total)))


class OrphanVolume(models.Model):
    """A `pinacle-vol-*` volume that no pod needs, as the last reconcile saw it (leak report)."""

    host = models.ForeignKey(DockerHost, on_delete=models.CASCADE, related_name="orphans")
    docker_name = models.CharField(max_length=200)
    pod_id = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=200)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["docker_name"]
        constraints = [models.UniqueConstraint(fields=["host", "docker_name"], name="one_orphan_row_per_volume")]

    def __str__(self) -> str:
        return self.docker_name

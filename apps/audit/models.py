from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.audit.names import AuditAction, Kind, TargetType


class AuditEvent(models.Model):
    """Who did what to which object, and what came of it. Written in the same transaction
    as the state change it describes; never edited afterwards."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        ERRORED = "errored", "errored"
        DRY_RUN = "dry_run", "dry run"

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    # A person, or null when a schedule or task acted; `actor_name` is always filled.
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=80, db_index=True, choices=AuditAction.choices)
    target_type = models.CharField(max_length=80, choices=TargetType.choices)
    target_id = models.CharField(max_length=255)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    bytes_reclaimed = models.BigIntegerField(default=0)
    message = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    operation = models.ForeignKey("audit.Operation", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id", "-occurred_at"]),
            models.Index(fields=["-occurred_at", "-id"], name="audit_newest_first"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.target_type}:{self.target_id} → {self.outcome}"


class Operation(models.Model):
    """One row per piece of long or destructive work, written before the first external
    call and updated after each step, so a killed worker leaves a trail."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"  # an expected refusal (PanelError)
        ERRORED = "errored", "errored"  # an unexpected exception, traceback kept

    ACTIVE = {Status.PENDING, Status.RUNNING}
    TERMINAL = {Status.SUCCEEDED, Status.FAILED, Status.ERRORED}

    kind = models.CharField(max_length=80, db_index=True, choices=Kind.choices)
    target_type = models.CharField(max_length=80, choices=TargetType.choices)
    target_id = models.CharField(max_length=255)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    # Exclusive operations hold their target: at most one pending/running per target,
    # enforced by the database so two admins or workers racing cannot both start one.
    exclusive = models.BooleanField(default=True)
    # Dotted path of the django-q2 task that runs it: a retry enqueues the same one.
    task = models.CharField(max_length=200, blank=True)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_unit = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    log = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["target_type", "target_id"],
                condition=models.Q(exclusive=True, status__in=["pending", "running"]),
                name="one_active_exclusive_operation_per_target",
            )
        ]
        permissions = [("retry_operation", "Can retry a failed operation")]

    def __str__(self) -> str:
        return f"{self.kind} {self.target_type}:{self.target_id} ({self.status})"

    @property
    def actor(self):
        """Who asked: the user, or the schedule/CLI/API name when no person did."""
        return self.actor_user or self.actor_name

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def percent(self) -> int | None:
        if not self.progress_total:
            return None
        return max(0, min(100, int(self.progress_done * 100 / self.progress_total)))


class StorageSample(models.Model):
    """Bytes and files held by one subject at one time; the charts are drawn from these.

    `domain` is pods, sessions, mixjobs or volumes; `subject` names what was measured
    inside it (a volume name, "all", a pod id). Kept here, below the domain apps, so that
    every app records samples without importing the dashboard that draws them."""

    domain = models.CharField(max_length=40)
    subject = models.CharField(max_length=255)
    total_bytes = models.BigIntegerField()
    total_files = models.BigIntegerField(null=True, blank=True)
    sampled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # The table the dashboard app created first; moved here without copying a row.
        db_table = "dashboard_storagesample"
        ordering = ["-sampled_at", "-id"]
        indexes = [models.Index(fields=["domain", "subject", "-sampled_at"], name="dashboard_s_domain_06b458_idx")]

    def __str__(self) -> str:
        return f"{self.domain}/{self.subject} {self.total_bytes} B at {self.sampled_at:%Y-%m-%d %H:%M}"


class Hold(models.Model):
    """ "Don't touch this one": a person's hold on a pod, a snapshot, a session, a mix-job
    session or a volume folder. While a hold is active every scheduled or automatic deletion
    skips the item (and says it kept it "on hold"), and a manual deletion is refused."""

    target_type = models.CharField(max_length=80, choices=TargetType.choices)
    target_id = models.CharField(max_length=255)
    reason = models.CharField(max_length=300)
    held_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    held_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    # Null: until released. A hold past `until` no longer holds anything.
    until = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id", "released_at"])]
        permissions = [("hold_storage", "Can set and release holds")]

    def __str__(self) -> str:
        return f"hold on {self.target_type} {self.target_id}: {self.reason}"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.released_at is None and (self.until is None or self.until > now)

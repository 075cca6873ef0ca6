from django.db import models
from django.utils import timezone


class MixJob(models.Model):
    """The panel's mirror of one job file written by the mixing service.

    Rows are written by `mixjobs_sync` (in bulk) and marked deleted by cleanup; the files
    are the truth, the row is what the pages and the leak report read."""

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        LOADING_STEMS = "loading_stems", "loading stems"
        ALIGNING_STEMS = "aligning_stems", "aligning stems"
        PROCESSING_TRACKS = "processing_tracks", "processing tracks"
        MIXING = "mixing", "mixing"
        MASTERING = "mastering", "mastering"
        EXPORTING = "exporting", "exporting"
        COMPLETE = "complete", "complete"
        ERROR = "error", "error"

    # Only finished jobs expire; every other state is work that may still be running.
    EXPIRING = {State.COMPLETE, State.ERROR}
    IN_PROGRESS = {s for s in State} - EXPIRING

    session_id = models.CharField(max_length=128, db_index=True)
    job_id = models.CharField(max_length=128)
    state = models.CharField(max_length=32, blank=True, db_index=True)  # blank when unreadable
    progress = models.SmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True, db_index=True)
    extra = models.JSONField(default=dict, blank=True)
    job_path = models.CharField(max_length=600)
    index_path = models.CharField(max_length=600, blank=True)
    output_path = models.CharField(max_length=600, blank=True)
    job_bytes = models.BigIntegerField(default=0)
    index_bytes = models.BigIntegerField(default=0)
    # The session's final_mix.wav is shared by its jobs: counted once per session on pages.
    output_bytes = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    problem = models.CharField(max_length=300, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # The sync that last saw the file; rows another sync did not see have vanished.
    seen_by_sync = models.CharField(max_length=32, blank=True)
    vanished_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["session_id", "job_id"], name="one_row_per_session_job")]
        indexes = [
            # The list page walks this index newest first and stops after one page; partial,
            # so it matches the page's "live jobs" filter and the planner picks it.
            models.Index(
                fields=["-updated_at", "-id"],
                name="mixjob_live_newest_first",
                condition=models.Q(deleted_at__isnull=True, vanished_at__isnull=True),
            ),
        ]
        permissions = [("cleanup_mixjob", "Can clean up expired mix jobs")]

    def __str__(self) -> str:
        return f"{self.session_id}/{self.job_id} ({self.state or 'unreadable'})"

    @property
    def is_live(self) -> bool:
        return self.deleted_at is None and self.vanished_at is None

from django.db import models
from django.utils import timezone

from controlpanel.transitions import StateMachine

STEMS = ("drums", "bass", "vocals", "other")


class SeparationSession(StateMachine, models.Model):
    """The panel's mirror of one `sessions/<session_id>/` folder on the sessions volume.

    Rows are written by `sessions_sync` and by cleanup batches; a deleted session keeps its
    row (who deleted it, when, why) so the history survives the bytes. Live states move
    freely as the folder changes; deleted is final except when the folder shows up again
    (an uncommitted deletion)."""

    class Status(models.TextChoices):
        COMPLETE = "complete", "complete"  # input and all four stems
        PARTIAL = "partial", "partial"  # some files, not all
        EMPTY = "empty", "empty"  # the folder holds no files
        DELETED = "deleted", "deleted"  # gone from the volume

    LIVE = {Status.COMPLETE, Status.PARTIAL, Status.EMPTY}
    TRANSITIONS = {
        Status.COMPLETE: {Status.PARTIAL, Status.EMPTY, Status.DELETED},
        Status.PARTIAL: {Status.COMPLETE, Status.EMPTY, Status.DELETED},
        Status.EMPTY: {Status.COMPLETE, Status.PARTIAL, Status.DELETED},
        Status.DELETED: {Status.COMPLETE, Status.PARTIAL, Status.EMPTY},
    }

    session_id = models.CharField(max_length=128)
    # The volume's name (its backend URL can change; the name identifies the bytes).
    volume = models.CharField(max_length=200)
    input_present = models.BooleanField(default=False)
    stems_present = models.PositiveSmallIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    file_count = models.IntegerField(default=0)
    # From the volume: the oldest and newest mtime inside the folder. A session's age for
    # the cleanup policies is counted from `modified_at`, so one still being written stays.
    created_at = models.DateTimeField(null=True, blank=True)
    modified_at = models.DateTimeField(null=True, blank=True, db_index=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.EMPTY, db_index=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.CharField(max_length=150, blank=True)
    deleted_reason = models.CharField(max_length=300, blank=True)
    # What the last scan could not read or would not open ("could not read 1 folder: output
    # (Permission denied)"); "" when nothing. Totals are a lower bound while it is set.
    problems = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["modified_at", "session_id"]
        constraints = [models.UniqueConstraint(fields=["volume", "session_id"], name="one_row_per_session_per_volume")]
        indexes = [
            # The overview's totals per volume read this index alone, never the table.
            models.Index(fields=["volume", "status", "modified_at", "total_bytes"], name="session_totals"),
            # The list of live sessions, oldest first: walked in order, one page read.
            models.Index(
                fields=["volume", "modified_at", "session_id"],
                name="session_live_oldest_first",
                condition=~models.Q(status="deleted"),
            ),
        ]
        permissions = [
            ("cleanup_separationsession", "Can clean up separation sessions"),
            ("sync_separationsession", "Can sync separation sessions from the volume"),
        ]

    def __str__(self) -> str:
        return f"{self.volume}:{self.session_id} ({self.status})"

    @property
    def path(self) -> str:
        return f"sessions/{self.session_id}"

    @property
    def age(self):
        return timezone.now() - self.modified_at if self.modified_at else None

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE

    def state_label(self) -> str:
        return f"session {self.session_id!r}"

    def on_transition(self, before: str, to: str, *, by: str = "", reason: str = "", **details) -> None:
        if to == self.Status.DELETED:
            self.deleted_at = timezone.now()
            self.deleted_by = by[:150]
            self.deleted_reason = reason[:300]
        elif before == self.Status.DELETED:
            # It came back: clear the deletion so the page does not claim it is gone.
            self.deleted_at, self.deleted_by, self.deleted_reason = None, "", ""

from django.db import models
from django.utils import timezone


class StorageSample(models.Model):
    """Bytes and files held by one subject at one time; the charts are drawn from these.

    `domain` is pods, sessions, mixjobs or volumes; `subject` names what was measured
    inside it (a volume name, "all", a pod id)."""

    domain = models.CharField(max_length=40)
    subject = models.CharField(max_length=255)
    total_bytes = models.BigIntegerField()
    total_files = models.BigIntegerField(null=True, blank=True)
    sampled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-sampled_at", "-id"]
        indexes = [models.Index(fields=["domain", "subject", "-sampled_at"])]

    def __str__(self) -> str:
        return f"{self.domain}/{self.subject} {self.total_bytes} B at {self.sampled_at:%Y-%m-%d %H:%M}"

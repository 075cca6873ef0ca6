from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """A script's or pipeline's key to the API. Only the sha256 of the token is kept: the
    token itself is printed once, when it is made. It acts as its own service user (named
    `api:<name>`, a member of one role's group), so permissions and audit events go through
    the same checks and records as a person's."""

    name = models.CharField(max_length=64, unique=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_token")
    # The first characters of the token, so a person can tell which token a script holds.
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"API token {self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

"""API tokens: make one (shown once), revoke it, and find the one a request carries."""

import hashlib
import logging
import re
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from apps.api.models import ApiToken
from apps.audit.names import AuditAction, TargetType
from apps.audit.roles import OPERATOR_GROUP, VIEWER_GROUP, roles_sync
from apps.audit.services import Actor, actor_parts, audit_record
from controlpanel.errors import InvalidInput, NotFound, PanelError

logger = logging.getLogger(__name__)

ROLES = (OPERATOR_GROUP, VIEWER_GROUP)
# Marks a string as one of ours in logs and secret scanners.
TOKEN_PREFIX = "cpt_"  # noqa: S105 (a label, not a secret)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A token used again within this long does not write its last use again.
LAST_USED_PRECISION = timedelta(minutes=1)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def service_username(name: str) -> str:
    # What every audit event and operation of the token names as its actor.
    return f"api:{name}"


def apitoken_create(*, name: str, group: str, actor: Actor) -> tuple[ApiToken, str]:
    """A new token acting with `group`'s permissions, and the token itself (never stored)."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise InvalidInput(
            f"{str(name)[:80]!r} is not a token name: use lower-case letters, digits, '.', '_' or '-' (at most 64)"
        )
    if group not in ROLES:
        raise InvalidInput(f"{str(group)[:40]!r} is not a role: use {' or '.join(ROLES)}")
    user_model = get_user_model()
    with transaction.atomic():
        if (
            ApiToken.objects.filter(name=name).exists()
            or user_model.objects.filter(username=service_username(name)).exists()
        ):
            raise PanelError(f"an API token named {name!r} already exists (a revoked token keeps its name)")
        if not Group.objects.filter(name=group).exists():
            roles_sync()
        user = user_model(username=service_username(name), is_staff=False, is_active=True)
        user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get(name=group))
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken.objects.create(
            name=name,
            user=user,
            prefix=secret[:10],
            token_hash=token_hash(secret),
            created_by=actor_parts(actor)[1],
        )
        audit_record(
            actor=actor,
            action=AuditAction.API_TOKEN_CREATE,
            target_type=TargetType.API_TOKEN,
            target_id=name,
            message=f"API token {name} made, acting as {group}",
        )
    logger.info("API token %s (%s) made by %s", name, group, token.created_by)
    return token, secret


def apitoken_revoke(*, name: str, actor: Actor) -> ApiToken:
    """From now on the token is refused (401); its row and its service user stay as history."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().select_related("user").filter(name=name).first()
        if token is None:
            raise NotFound(f"there is no API token named {str(name)[:80]!r}")
        if token.revoked_at is not None:
            raise PanelError(f"API token {name!r} was already revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC")
        token.revoked_at, token.revoked_by = timezone.now(), actor_parts(actor)[1]
        token.save(update_fields=["revoked_at", "revoked_by"])
        # Belt and braces: the service user can no longer hold any permission either.
        token.user.is_active = False
        token.user.save(update_fields=["is_active"])
        audit_record(
            actor=actor,
            action=AuditAction.API_TOKEN_REVOKE,
            target_type=TargetType.API_TOKEN,
            target_id=name,
            message=f"API token {name} revoked",
        )
    logger.info("API token %s revoked by %s", name, token.revoked_by)
    return token


def apitoken_authenticate(*, secret: str) -> ApiToken | None:
    """The active token `secret` is, or None (unknown, revoked, malformed)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=token_hash(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def role_of(token: ApiToken) -> str:
    names = [group.name for group in token.user.groups.all()]
    return ", ".join(names) or "no role"

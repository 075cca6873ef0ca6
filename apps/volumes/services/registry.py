"""The volume registry (which volumes the panel inspects, and where they live) and what
their bytes cost a month."""

from urllib.parse import urlparse

from django.conf import settings
from django.db import transaction

from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record
from apps.volumes.backends import VolumeBackend, backend_for_url, volume_url_clean
from apps.volumes.models import Volume
from controlpanel.errors import InvalidInput, NotFound
from controlpanel.paths import validate_id

GB = 1000**3


def volume_backend(*, volume: Volume) -> VolumeBackend:
    """The backend for a registered volume; a URL edited into nonsense is InvalidInput."""
    return backend_for_url(volume.url)


def volume_get(*, name: str) -> Volume:
    validate_id(name, kind="volume name")
    volume = Volume.objects.filter(name=name).first()
    if volume is None:
        raise NotFound(f"volume {name!r} is not registered; add it with `manage.py volumes add {name} URL`")
    return volume


def volume_url_check(*, url: str) -> str:
    """The URL to store for a volume being registered, or a one-line refusal: malformed or
    unsupported URLs, system folders and the panel's own data (see `backends.roots`), and a
    Modal volume that does not exist (or that Modal cannot confirm now) are refused."""
    clean = volume_url_clean(url)
    if clean.startswith("modal://"):
        # A typo in a Modal name would otherwise only show at the first inspection.
        backend_for_url(clean).check()
    return clean


def volume_add(*, name: str, url: str, actor: Actor, purpose: str = "", notes: str = "") -> Volume:
    validate_id(name, kind="volume name")
    url = volume_url_check(url=url)  # refused before anything is written; stored normalised
    with transaction.atomic():
        if Volume.objects.filter(name=name).exists():
            raise InvalidInput(f"volume {name!r} is already registered")
        volume = Volume.objects.create(name=name, url=url, purpose=purpose, notes=notes)
        audit_record(
            actor=actor,
            action=AuditAction.VOLUME_ADD,
            target_type=TargetType.VOLUME,
            target_id=name,
            message=f"registered {url}" + (f" ({purpose})" if purpose else ""),
        )
    return volume


# -- cost ------------------------------------------------------------------------------------


def volume_price_per_gb_month(*, url: str) -> float:
    scheme = urlparse(url or "").scheme
    if scheme == "modal":
        return settings.PRICE_MODAL_VOLUME_GB_MONTH
    if scheme == "local":
        return settings.PRICE_LOCAL_GB_MONTH
    return 0.0


def volume_monthly_cost(*, url: str, total_bytes: int) -> float:
    """US$ per month at the configured price; GB here is 10^9 bytes, as providers bill."""
    return round(total_bytes / GB * volume_price_per_gb_month(url=url), 2)


def s3_monthly_cost(*, total_bytes: int) -> float:
    return round(total_bytes / GB * settings.PRICE_S3_GB_MONTH, 2)

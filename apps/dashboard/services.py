"""Samples of bytes over time, and the overview's figures cache."""

from django.core.cache import cache
from django.db import transaction

from apps.audit.models import StorageSample

# The overview and the leak report add up every domain (tens of thousands of rows); the
# figures are kept in the shared cache until anything changes what they count. Every state
# change that moves bytes writes an audit event or a storage sample, and both drop them, once
# the change is committed; OVERVIEW_CACHE_SECONDS bounds the rest (a status moving mid-work).
OVERVIEW_CACHE_KEY = "dashboard:overview-sections"


def overview_forget() -> None:
    """Drop the cached overview figures once the current transaction commits."""
    transaction.on_commit(lambda: cache.delete(OVERVIEW_CACHE_KEY))


def storage_sample_record(
    *, domain: str, subject: str, total_bytes: int, total_files: int | None = None
) -> StorageSample:
    """Record one measurement; every sync and inspection calls this once per subject."""
    sample = StorageSample.objects.create(
        domain=domain, subject=subject, total_bytes=int(total_bytes), total_files=total_files
    )
    overview_forget()
    return sample

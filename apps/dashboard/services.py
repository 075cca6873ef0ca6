from apps.dashboard.models import StorageSample


def storage_sample_record(
    *, domain: str, subject: str, total_bytes: int, total_files: int | None = None
) -> StorageSample:
    """Record one measurement; every sync and inspection calls this once per subject."""
    return StorageSample.objects.create(
        domain=domain, subject=subject, total_bytes=int(total_bytes), total_files=total_files
    )

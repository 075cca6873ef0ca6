"""The S3 cross-check: a volume folder against an S3 prefix, through the one S3 client
(`controlpanel.s3`), so it honours the panel's S3 timeouts and says failures the same way
as the snapshot store."""

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from django.db import transaction

from apps.audit.models import Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, Progress, audit_record
from apps.volumes.backends import Unreadable, clean_path
from apps.volumes.models import CrossCheck, Volume
from apps.volumes.services.inspection import PROGRESS_EVERY
from apps.volumes.services.registry import s3_monthly_cost, volume_backend
from controlpanel.errors import InvalidInput, NotFound
from controlpanel.s3 import s3_client, s3_error

CROSSCHECK_SAMPLES = 50


# AWS allows 3-63 lowercase characters; other S3 servers (and old us-east-1 buckets) allow more.
_S3_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix → (bucket, "prefix/"); the prefix always ends with a slash."""
    parsed = urlparse(url or "")
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidInput(f"S3 URL {url!r} is not valid: use s3://bucket/prefix")
    if not _S3_BUCKET_RE.fullmatch(parsed.netloc):
        raise InvalidInput(f"S3 URL {url!r} is not valid: the bucket name must be 3-255 letters, digits, '.', '-', '_'")
    prefix = parsed.path.strip("/")
    if prefix and ".." in prefix.split("/"):
        raise InvalidInput(f"S3 URL {url!r} is not valid: no '..' in the prefix")
    # NUL and other control characters are no key S3 stores; boto3 would fail later and less clearly.
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise InvalidInput(f"S3 URL {url!r} is not valid: no control characters in the prefix")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def _s3_objects(*, bucket: str, prefix: str) -> Iterable[tuple[str, int]]:
    """(key below the prefix, size), page by page."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"][len(prefix) :]
                if key and not key.endswith("/"):  # folder markers are not files
                    yield key, int(item["Size"])
    except (BotoCoreError, ClientError) as exc:
        raise s3_error(exc, where=f"S3 bucket {bucket!r}") from None


def _sample(samples: dict[str, list], kind: str, row: list) -> None:
    rows = samples.setdefault(kind, [])
    if len(rows) < CROSSCHECK_SAMPLES:
        rows.append(row)


def volume_crosscheck(
    *, volume: Volume, folder: str, s3_url: str, actor: Actor, operation: Operation | None = None
) -> CrossCheck:
    """Compare a volume folder with an S3 prefix. The volume side is held as one dict of
    name → size; S3 streams past it page by page, so only one side is ever in memory."""
    folder = clean_path(folder)
    bucket, prefix = parse_s3_url(s3_url)
    backend = volume_backend(volume=volume)
    backend.check()
    if folder:
        entry = backend.stat(folder)
        if entry is None or not entry.is_dir:
            raise NotFound(f"{folder}/ does not exist on volume {volume.name}")
    progress = Progress(operation, unit="files")
    on_volume: dict[str, int] = {}
    cut = len(folder) + 1 if folder else 0
    check = CrossCheck(volume=volume, operation=operation, folder=folder, s3_url=s3_url)
    for entry in backend.iter_entries(folder):
        if entry.unreadable:
            # A folder we cannot list would show its files as "only on S3": refuse instead.
            raise Unreadable(
                f"{entry.path or '/'} on volume {volume.name} could not be read ({entry.unreadable}); "
                "a cross-check needs every file: fix its permissions and run it again"
            )
        if entry.is_dir or entry.special:
            continue  # a FIFO or device is no file to compare (and is never opened)
        on_volume[entry.path[cut:]] = entry.size
        check.volume_files += 1
        check.volume_bytes += entry.size
        if check.volume_files % PROGRESS_EVERY == 0:
            progress.advance(PROGRESS_EVERY)
    samples: dict[str, list] = {}
    for key, size in _s3_objects(bucket=bucket, prefix=prefix):
        check.s3_files += 1
        check.s3_bytes += size
        if check.s3_files % PROGRESS_EVERY == 0:
            progress.advance(PROGRESS_EVERY)
        local_size = on_volume.pop(key, None)
        if local_size is None:
            check.only_on_s3 += 1
            check.only_on_s3_bytes += size
            _sample(samples, "only_on_s3", [key, size])
        elif local_size != size:
            check.size_mismatches += 1
            _sample(samples, "size_mismatches", [key, local_size, size])
        else:
            check.matched_files += 1
    for key in sorted(on_volume)[:CROSSCHECK_SAMPLES]:
        _sample(samples, "only_on_volume", [key, on_volume[key]])
    check.only_on_volume = len(on_volume)
    check.only_on_volume_bytes = sum(on_volume.values())
    check.samples = samples
    check.s3_monthly_cost = s3_monthly_cost(total_bytes=check.s3_bytes)
    progress.flush()
    with transaction.atomic():
        check.save()
        audit_record(
            actor=actor,
            action=AuditAction.VOLUME_CROSSCHECK,
            target_type=TargetType.VOLUME,
            target_id=volume.name,
            message=f"{folder or '/'} vs {s3_url}: {check.matched_files} match, {check.only_on_volume} only on the "
            f"volume, {check.only_on_s3} only on S3, {check.size_mismatches} size mismatches",
            operation=operation,
        )
    return check


def crosscheck_as_dict(check: CrossCheck) -> dict[str, Any]:
    return {
        "crosscheck_id": check.pk,
        "volume": check.volume.name,
        "folder": check.folder,
        "s3_url": check.s3_url,
        "checked_at": check.checked_at.isoformat(),
        "in_sync": check.in_sync,
        "volume_files": check.volume_files,
        "volume_bytes": check.volume_bytes,
        "s3_files": check.s3_files,
        "s3_bytes": check.s3_bytes,
        "matched_files": check.matched_files,
        "only_on_volume": check.only_on_volume,
        "only_on_volume_bytes": check.only_on_volume_bytes,
        "only_on_s3": check.only_on_s3,
        "only_on_s3_bytes": check.only_on_s3_bytes,
        "size_mismatches": check.size_mismatches,
        "s3_monthly_cost_usd": check.s3_monthly_cost,
        "samples": check.samples,
    }

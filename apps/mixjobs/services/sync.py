"""Mirror the mixing service's job files into MixJob rows, in bulk."""

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.services import Actor, Progress, operation_log, storage_sample_record
from apps.mixjobs.files import (
    JobFile,
    Skipped,
    iter_job_files,
    output_file,
    printable,
    read_job_file,
    session_folders,
)
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import SAMPLE_DOMAIN, SAMPLE_SUBJECT, mixjobs_totals_forget
from controlpanel.formatting import humanize_bytes

# One upsert statement per this many jobs. Each batch costs three queries (BEGIN, the upsert,
# COMMIT: one transaction, so SQLite syncs once, not once per row), so a batch this large keeps
# the whole sync under one query per 1,000 jobs; ~5,000 rows in memory are a few MB.
SYNC_BATCH = 5000

SYNC_FIELDS = [
    "state",
    "progress",
    "message",
    "error",
    "created_at",
    "updated_at",
    "extra",
    "job_path",
    "index_path",
    "output_path",
    "job_bytes",
    "index_bytes",
    "output_bytes",
    "expires_at",
    "problem",
    "last_seen_at",
    "seen_by_sync",
    "vanished_at",
]


def _row(job: JobFile, *, output: tuple[Path, int], now: datetime, token: str) -> MixJob:
    return MixJob(
        seen_by_sync=token,
        session_id=job.session_id,
        job_id=job.job_id[:128],
        state=job.state,
        progress=job.progress,
        message=job.message,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        extra=job.extra,
        job_path=str(job.path)[:600],
        index_path=str(job.index_path or "")[:600],
        output_path=str(output[0]) if output[1] else "",
        job_bytes=job.size,
        index_bytes=job.index_bytes,
        output_bytes=output[1],
        expires_at=job.expires_at,
        problem=job.problem[:300],
        first_seen_at=now,
        last_seen_at=now,
        vanished_at=None,
    )


def _upsert(rows: list[MixJob]) -> None:
    """One INSERT … ON CONFLICT DO UPDATE, executed for the whole batch in one call.

    bulk_create would split a batch into many statements on SQLite (999 parameters per
    statement, ~40 rows of this model); executemany sends one statement with a row of
    parameters per job on SQLite and PostgreSQL alike."""
    table = MixJob._meta.db_table
    quote = connection.ops.quote_name
    columns = [f for f in MixJob._meta.concrete_fields if not f.primary_key]
    updates = ", ".join(f"{quote(f.column)} = excluded.{quote(f.column)}" for f in columns if f.name in SYNC_FIELDS)
    # Only model metadata is interpolated (quoted table and column names); values are parameters.
    names = ", ".join(quote(f.column) for f in columns)
    placeholders = ", ".join(["%s"] * len(columns))
    key = f"{quote('session_id')}, {quote('job_id')}"
    sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({placeholders}) ON CONFLICT ({key}) DO UPDATE SET {updates}"  # noqa: S608
    params = [[field.get_db_prep_save(getattr(row, field.attname), connection) for field in columns] for row in rows]
    # One transaction per batch: in autocommit SQLite would commit (and sync) every row.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)


def mixjobs_sync(*, actor: Actor, operation: Operation | None = None) -> dict[str, Any]:
    """Mirror every job file into MixJob rows in bulk and mark the ones that vanished."""
    started = timezone.now()
    token = uuid.uuid4().hex
    progress = Progress(operation, unit="jobs")
    seen = problems = total_bytes = 0
    skipped: list[Skipped] = []
    batch: list[MixJob] = []
    for item in session_folders():
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        session_id, jobs_folder = item
        output = output_file(session_id)
        total_bytes += output[1]
        for path in iter_job_files(jobs_folder):
            if isinstance(path, Skipped):
                skipped.append(path)
                continue
            job = read_job_file(session_id=session_id, path=path)
            if len(job.job_id) > 128:
                skipped.append(Skipped(str(path), "job id longer than 128 characters"))
                continue
            if job.index_problem:
                # The job's row is fine; its index is a FIFO, too large… and shown as skipped.
                skipped.append(Skipped(printable(str(job.index_path)), f"index is {job.index_problem}"))
            batch.append(_row(job, output=output, now=started, token=token))
            seen += 1
            problems += bool(job.problem)
            total_bytes += job.size + job.index_bytes
            if len(batch) >= SYNC_BATCH:
                _upsert(batch)
                batch = []
                progress.advance(SYNC_BATCH)
    if batch:
        _upsert(batch)
    progress.done = seen
    progress.flush()
    vanished = (
        MixJob.objects.filter(vanished_at__isnull=True, deleted_at__isnull=True)
        .exclude(seen_by_sync=token)
        .update(vanished_at=started)
    )
    storage_sample_record(domain=SAMPLE_DOMAIN, subject=SAMPLE_SUBJECT, total_bytes=total_bytes, total_files=seen)
    mixjobs_totals_forget()
    if operation is not None:
        operation_log(
            operation,
            f"{seen} jobs ({problems} with problems), {vanished} vanished, {humanize_bytes(total_bytes)} held",
        )
    return {
        "jobs": seen,
        "problems": problems,
        "vanished": vanished,
        "bytes": total_bytes,
        "skipped": [vars(s) for s in skipped],
    }

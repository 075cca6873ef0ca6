"""Write job files the way the mixing service does (atomic rename, naive UTC times)."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

# The instant every mix-job test's clock stands still at (fixture `clock`).
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def media() -> Path:
    return Path(settings.MIX_MEDIA_DIR)


def outputs() -> Path:
    return Path(settings.MIX_OUTPUTS_DIR)


def job_path(session_id: str, job_id: str) -> Path:
    return media() / session_id / "jobs" / f"{job_id}.json"


def index_path(job_id: str) -> Path:
    return media() / "jobs_index" / f"{job_id}.json"


def output_path(session_id: str) -> Path:
    return outputs() / session_id / "final_mix.wav"


def atomic_write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def write_job(
    session_id: str,
    job_id: str,
    *,
    state: str,
    updated_at: datetime,
    index: str | None = "same",
    output: bool | None = None,
    **fields,
) -> Path:
    """A job file, its index (pointing at `index`, default its own session) and, for
    complete jobs, the session's final_mix.wav."""
    naive = updated_at.replace(tzinfo=None)
    content = {
        "job_id": job_id,
        "session_id": session_id,
        "state": state,
        "progress": 100 if state == "complete" else 40,
        "message": "",
        "error": "boom" if state == "error" else None,
        "created_at": naive.isoformat(),
        "updated_at": naive.isoformat(),
        "extra": {"tracks": 4},
        **fields,
    }
    path = job_path(session_id, job_id)
    atomic_write(path, json.dumps(content).encode())
    if index is not None:
        target = session_id if index == "same" else index
        atomic_write(index_path(job_id), json.dumps({"job_id": job_id, "session_id": target}).encode())
    if output or (output is None and state == "complete"):
        atomic_write(output_path(session_id), b"RIFF" + b"\0" * 4092)
    return path

"""Small factories: real session folders on the test's local volume (or the Modal fake)."""

import os
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings

STEM_NAMES = ("drums", "bass", "vocals", "other")


def volume_root() -> Path:
    return Path(urlparse(settings.SESSIONS_VOLUME_URL).path)


def put_session(
    session_id: str,
    *,
    mtime: datetime,
    input_bytes: int = 1000,
    stems: tuple[str, ...] = STEM_NAMES,
    stem_bytes: int = 100,
    root: Path | None = None,
) -> Path:
    """sessions/<id>/input.wav and output/<stem>.flac with every mtime set to `mtime`."""
    folder = (root or volume_root()) / "sessions" / session_id
    (folder / "output").mkdir(parents=True, exist_ok=True)
    files = []
    if input_bytes:
        files.append((folder / "input.wav", input_bytes))
    files += [(folder / "output" / f"{stem}.flac", stem_bytes) for stem in stems]
    for path, size in files:
        path.write_bytes(b"\0" * size)
    stamp = mtime.timestamp()
    for path in [*(p for p, _ in files), folder / "output", folder]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    return folder


def session_bytes(input_bytes: int = 1000, stems: int = 4, stem_bytes: int = 100) -> int:
    return input_bytes + stems * stem_bytes


def put_modal_session(server, volume: str, session_id: str, *, mtime: datetime, input_bytes=1000, stem_bytes=100):
    server.put_file(volume, f"sessions/{session_id}/input.wav", size=input_bytes, mtime=mtime)
    for stem in STEM_NAMES:
        server.put_file(volume, f"sessions/{session_id}/output/{stem}.flac", size=stem_bytes, mtime=mtime)


def sync_now(actor: str = "test") -> dict:
    """A sync run inline, as the CLI runs it: the finished operation's result."""
    from apps.audit.names import Kind
    from apps.audit.operations import run_now

    return run_now(Kind.SESSIONS_SYNC, actor=actor).result


def cleanup_now(*, policy: str, actor: str = "test", session_ids=()) -> dict:
    """A cleanup batch run inline, as the API and the CLI run it."""
    from apps.audit.names import Kind
    from apps.audit.operations import run_now

    return run_now(Kind.SESSIONS_CLEANUP, actor=actor, policy=policy, session_ids=list(session_ids)).result

"""A mixing service that never takes the session lock: it rewrites jobs by atomic rename.

    python tests/mixjobs/lockless_writer.py JOBS_FOLDER JOBS

Runs as its own process (no Django). For job ids w0, w1, …: write the job expired
(complete, 50 h old), keep it a moment, then rewrite it fresh (queued, now), as the mixing
service does when a finished job is restarted: two atomic-rename rewrites per job. A cleanup
may delete the expired job; it must never delete the fresh one. A few jobs later the writer
checks each fresh job is still there with its fresh content (waiting a moment if it is
missing: a cleanup may be putting it back), then removes it itself so the folder stays small.
Prints one JSON line: rewrites, fresh jobs lost, expired jobs found deleted before the restart.
"""

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# How many jobs are expired at once (each lives this many rounds before its restart).
EXPIRED_AT_ONCE = 4
# How many rounds a fresh job stays before it is checked and removed.
CHECK_AFTER = 8
# A fresh job missing at its check is lost unless it comes back within this (a put-back).
PUT_BACK_GRACE_SECONDS = 2.0


def content(job_id: str, session_id: str, *, fresh: bool) -> bytes:
    now = datetime.now(UTC).replace(tzinfo=None)
    updated = now if fresh else now - timedelta(hours=50)
    return json.dumps(
        {
            "job_id": job_id,
            "session_id": session_id,
            "state": "queued" if fresh else "complete",
            "progress": 0 if fresh else 100,
            "updated_at": updated.isoformat(),
            "created_at": updated.isoformat(),
        }
    ).encode()


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def still_there(path: Path, expected: bytes) -> bool:
    deadline = time.monotonic() + PUT_BACK_GRACE_SECONDS
    while True:
        try:
            return path.read_bytes() == expected
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def main(folder: Path, jobs: int) -> dict:
    session_id = folder.parent.name
    fresh_content: dict[int, bytes] = {}
    counts = {"rewrites": 0, "fresh_lost": 0, "expired_deleted_before_restart": 0}

    def path(number: int) -> Path:
        return folder / f"w{number}.json"

    def restart(number: int) -> None:
        if not os.path.lexists(path(number)):
            counts["expired_deleted_before_restart"] += 1
        fresh_content[number] = content(f"w{number}", session_id, fresh=True)
        atomic_write(path(number), fresh_content[number])
        counts["rewrites"] += 1

    def check(number: int) -> None:
        if not still_there(path(number), fresh_content.pop(number)):
            counts["fresh_lost"] += 1
        path(number).unlink(missing_ok=True)

    for number in range(jobs):
        atomic_write(path(number), content(f"w{number}", session_id, fresh=False))
        counts["rewrites"] += 1
        if number >= EXPIRED_AT_ONCE:
            restart(number - EXPIRED_AT_ONCE)
        if number >= EXPIRED_AT_ONCE + CHECK_AFTER:
            check(number - EXPIRED_AT_ONCE - CHECK_AFTER)
    for number in range(max(0, jobs - EXPIRED_AT_ONCE), jobs):
        restart(number)
    for number in sorted(fresh_content):
        check(number)
    return counts


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))

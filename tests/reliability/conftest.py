"""What the reliability tests tried, for `bench/faults.py`'s table.

Each test still asserts its own invariants; these fixtures only count. With
`FAULT_REPORT=/path/report.jsonl` set, every entry is appended to that file as one JSON line;
without it the entries are checked for shape and dropped."""

import json
import os
import threading

import pytest

_lock = threading.Lock()


def _append(entry: dict) -> None:
    path = os.environ.get("FAULT_REPORT")
    if not path:
        return
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


@pytest.fixture
def fault_point(request):
    """Record one fault injected at one point: `fault_point("s3", "500 on part 3", survived=True, lost_bytes=0)`.

    `survived` means the invariants held and the retry finished; `lost_bytes` counts bytes
    that were in the pod/session before the fault and are in neither the volumes nor a
    verified snapshot afterwards (it must be 0)."""

    def record(area: str, point: str, *, survived: bool, lost_bytes: int) -> None:
        if lost_bytes < 0:
            raise ValueError("lost_bytes cannot be negative")
        _append(
            {
                "type": "fault",
                "area": area,
                "point": point,
                "survived": bool(survived),
                "lost_bytes": int(lost_bytes),
                "test": request.node.nodeid,
            }
        )

    return record


@pytest.fixture
def bad_input(request):
    """Record one hostile input: `bad_input("url", "/pods/..%2f/", rejected=True, touched_outside=0)`.

    `rejected` means a clear message (4xx page, CLI error, `problem` on the row) and no
    traceback; `touched_outside` counts files created, changed or removed outside the roots."""

    def record(surface: str, value: str, *, rejected: bool, touched_outside: int) -> None:
        _append(
            {
                "type": "bad_input",
                "surface": surface,
                "value": value[:120],
                "rejected": bool(rejected),
                "touched_outside": int(touched_outside),
                "test": request.node.nodeid,
            }
        )

    return record

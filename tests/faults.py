"""What the fault and hostile-input tests tried and what it cost, for `bench/faults.py`'s tables.

Each test still asserts its own invariants; these fixtures only count, and what they count is
measured by the test from the real world afterwards (files on disk, volumes on dockerd, rows
in the database), never a constant (a pod's lost bytes: tests/reliability/pod_files.py). With
`FAULT_REPORT=/path/report.jsonl` set, every entry is appended to that file as one JSON line;
without it the entries are checked for shape and dropped.

Registered for every test by one import line in tests/conftest.py."""

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

_lock = threading.Lock()


def _append(entry: dict) -> None:
    path = os.environ.get("FAULT_REPORT")
    if not path:
        return
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a count (an int >= 0), not {value!r}")
    return value


@pytest.fixture
def fault_point(request):
    """Record one fault injected at one point: `fault_point("s3", "500 on part 3", survived=True, lost_bytes=0)`.

    `survived` means the invariants held and the retry finished; `lost_bytes` counts bytes
    that were in the pod/session before the fault and are in neither the volumes nor a
    verified snapshot afterwards (it must be 0)."""

    def record(area: str, point: str, *, survived: bool, lost_bytes: int) -> None:
        _append(
            {
                "type": "fault",
                "area": area,
                "point": point,
                "survived": bool(survived),
                "lost_bytes": _count("lost_bytes", lost_bytes),
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
                "touched_outside": _count("touched_outside", touched_outside),
                "test": request.node.nodeid,
            }
        )

    return record


@pytest.fixture
def harm(request):
    """Record what one hostile step of issue #21 cost, as measured afterwards:
    `harm("holds", "session held mid-batch", held_deleted=held_gone(...))`.

    `lost_bytes`: bytes of the pod/session/job that are in neither its volumes/folder nor a
    verified copy afterwards; `held_deleted`: held items that no longer exist; `panel_touched`:
    files of the panel's own data changed or removed (`panel_files_changed`). All must be 0;
    `ran_twice` (an operation run twice at once) is counted with the harms too.

    `with harm.around(area, point, held_deleted=lambda: ...):` measures after the block even
    when it fails: with a guard gone, the test's `pytest.raises` fails first, and the harm the
    missing guard let through must still be counted."""

    def record(area: str, point: str, *, lost_bytes=0, held_deleted=0, panel_touched=0, ran_twice=0) -> None:
        _append(
            {
                "type": "harm",
                "area": area,
                "point": point,
                "lost_bytes": _count("lost_bytes", lost_bytes),
                "held_deleted": _count("held_deleted", held_deleted),
                "panel_touched": _count("panel_touched", panel_touched),
                "ran_twice": _count("ran_twice", ran_twice),
                "test": request.node.nodeid,
            }
        )

    @contextmanager
    def around(area: str, point: str, **measures):
        try:
            yield
        finally:
            record(area, point, **{name: measure() for name, measure in measures.items()})

    record.around = around
    return record


# -- measuring ----------------------------------------------------------------------------------


def tree_sizes(*roots: Path) -> dict[str, int]:
    """Every regular file under `roots` (not following symlinks) and its size."""
    sizes = {}
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    if not os.path.islink(path) and os.path.isfile(path):
                        sizes[path] = os.lstat(path).st_size
                except OSError:
                    continue
    return sizes


def _local_path(value) -> Path | None:
    if not value:
        return None
    text = str(value)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme not in {"file", "dedup+file"}:
            return None
        text = unquote(parsed.netloc + parsed.path)
    return Path(text) if text.startswith("/") else None


def panel_roots() -> list[Path]:
    """The panel's own data as the settings name it now: VAR_DIR, the file or dedup+file
    snapshot store, its key, the mix-job folders and the SQLite database file. Read from the
    settings here, not from the code under test, so a tree the code forgets is still watched."""
    from django.conf import settings

    database = settings.DATABASES.get("default", {})
    values = [
        settings.VAR_DIR,
        getattr(settings, "SNAPSHOT_STORE_URL", None),
        getattr(settings, "SNAPSHOT_KEY_FILE", None),
        getattr(settings, "MIX_MEDIA_DIR", None),
        getattr(settings, "MIX_OUTPUTS_DIR", None),
        database.get("NAME") if "sqlite3" in database.get("ENGINE", "") else None,
    ]
    return list(dict.fromkeys(path for path in map(_local_path, values) if path is not None))


def _written_by_the_panel(path: str) -> bool:
    """Files the panel itself rewrites while it works, whose change is not harm: the database
    file it is connected to and its -journal/-wal/-shm (every request writes them), lock files
    under VAR_DIR/locks (hold locks), restic's cache under VAR_DIR/restic-cache, and local
    volumes under VAR_DIR/volumes (a volume's data, which a volume's own work may change)."""
    from django.conf import settings
    from django.db import connection

    live = str(connection.settings_dict.get("NAME") or "")
    if live and path in {live, f"{live}-journal", f"{live}-wal", f"{live}-shm"}:
        return True
    var_dir = str(settings.VAR_DIR).rstrip("/")
    return any(path.startswith(f"{var_dir}/{part}/") for part in ("locks", "restic-cache", "volumes"))


def panel_files_snapshot(*also: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime_ns, inode) of every file of the panel's own data (and of `also`: a folder
    the step is about to make panel data), to compare after a hostile step."""
    found = {}
    for root in [*panel_roots(), *also]:
        paths = [str(root)] if root.is_file() else list(tree_sizes(root)) if root.is_dir() else []
        for path in paths:
            if _written_by_the_panel(path):
                continue
            try:
                stat = os.lstat(path)
            except OSError:
                continue
            found[path] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


def panel_files_changed(before: dict[str, tuple[int, int, int]]) -> int:
    """How many files of `before` were changed, replaced or removed since. New files are not
    counted: the panel adds snapshots, jobs and locks in the normal course of its work."""
    changed = 0
    for path, seen in before.items():
        try:
            stat = os.lstat(path)
        except OSError:
            changed += 1
            continue
        changed += (stat.st_size, stat.st_mtime_ns, stat.st_ino) != seen
    return changed

"""Issue #21, part 2, on PostgreSQL: one process runs a session cleanup batch while another
sets holds on the same sessions, each racing the deletion of its session. A hold that answered
"set" is never followed by the deletion of its session: every session both held and removed
was removed before its hold was written, and every other held session is still on disk."""

import json
import os
import time
from datetime import datetime, timedelta

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SESSIONS = 40

# A slow volume (the fault): each removal waits a moment after the hold was checked, which
# is the window a hold written without the shared lock would slip through.
CLEANUP = """
import json, time
from apps.volumes.backends.local import LocalBackend
remove = LocalBackend.remove
def slow_remove(self, path, *, recursive=False):
    time.sleep(0.02)
    remove(self, path, recursive=recursive)
    print("removed", path.rsplit("/", 1)[-1], repr(time.time()), flush=True)
LocalBackend.remove = slow_remove
from apps.audit.names import Kind
from apps.audit.operations import run_now
time.sleep(max(0.0, {start} - time.time() - 0.005))  # asleep until just before the start
while time.time() < {start}:
    pass
result = run_now(Kind.SESSIONS_CLEANUP, actor="race", policy="exit").result
print("result", json.dumps(result), flush=True)
"""

# Holds on every session from the same instant, newest first while the batch deletes oldest
# first: the two meet somewhere in the middle, wherever the machine's speed puts them.
HOLDS = """
import time
from apps.audit.holds import hold_set
from apps.audit.names import TargetType
time.sleep(max(0.0, {start} - time.time() - 0.005))  # asleep until just before the start
while time.time() < {start}:
    pass
for n in reversed(range({count})):
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id=f"race-{{n:02d}}", reason="race", actor="racer")
    print("set", f"race-{{n:02d}}", repr(time.time()), flush=True)
    time.sleep(0.01)
"""


def put_sessions(root, count: int) -> None:
    stamp = (datetime.now() - timedelta(days=3)).timestamp()
    for n in range(count):
        folder = root / "sessions" / f"race-{n:02d}" / "output"
        folder.mkdir(parents=True)
        (folder.parent / "input.wav").write_bytes(b"\0" * 100)
        for path in (folder.parent / "input.wav", folder, folder.parent):
            os.utime(path, (stamp, stamp))


def test_a_hold_racing_a_deletion_is_never_set_and_then_deleted(stack, harm):
    root = stack.var_dir / "volumes" / "music-split-jobs-data"
    put_sessions(root, SESSIONS)
    start = time.time() + 4  # both processes are up and waiting before the race starts
    cleanup = stack.spawn_shell(CLEANUP.format(start=start))
    holds = stack.spawn_shell(HOLDS.format(start=start, count=SESSIONS))
    (cleanup_out, cleanup_err), (holds_out, holds_err) = (p.communicate(timeout=180) for p in (cleanup, holds))
    assert cleanup.returncode == 0, cleanup_err
    assert holds.returncode == 0, holds_err
    removed = {
        line.split()[1]: float(line.split()[2]) for line in cleanup_out.splitlines() if line.startswith("removed")
    }
    held = {line.split()[1]: float(line.split()[2]) for line in holds_out.splitlines() if line.startswith("set")}
    result = json.loads(next(line for line in cleanup_out.splitlines() if line.startswith("result"))[7:])
    # Held and deleted: a session whose hold was written before it was removed, or that is gone
    # from disk without the cleanup having removed it.
    gone = {sid for sid in held if not (root / "sessions" / sid / "input.wav").exists()}
    held_then_removed = {sid for sid in gone if sid not in removed or removed[sid] > held[sid]}
    harm("holds", "40 holds racing an exit batch on PostgreSQL", held_deleted=len(held_then_removed))
    assert len(held) == SESSIONS
    late = {sid: (removed[sid], held[sid]) for sid in held if sid in removed and removed[sid] > held[sid]}
    assert late == {}, "held, then deleted"
    kept = sorted(sid for sid in held if sid not in removed)
    assert kept and len(kept) < SESSIONS, "the holds and the deletions did not meet: the race did not race"
    assert all((root / "sessions" / sid / "input.wav").exists() for sid in kept)
    assert sorted(result["deleted"]) == sorted(removed)
    assert set(kept) <= set(result["on_hold"]), (kept, result, cleanup_out)


# The removal of one session takes a second (the fault); a marker file says it has begun.
SLOW_ONE = """
import json, pathlib, time
from apps.volumes.backends.local import LocalBackend
remove = LocalBackend.remove
def slow_remove(self, path, *, recursive=False):
    pathlib.Path({marker!r}).touch()
    time.sleep(1)
    remove(self, path, recursive=recursive)
    print("removed", path.rsplit("/", 1)[-1], repr(time.time()), flush=True)
LocalBackend.remove = slow_remove
from apps.audit.names import Kind
from apps.audit.operations import run_now
print("result", json.dumps(run_now(Kind.SESSIONS_CLEANUP, actor="race", policy="exit").result), flush=True)
"""

HOLD_WHEN_MARKED = """
import pathlib, time
from apps.audit.holds import hold_set
from apps.audit.names import TargetType
while not pathlib.Path({marker!r}).exists():
    time.sleep(0.005)
hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="race-00", reason="race", actor="racer")
print("set", "race-00", repr(time.time()), flush=True)
"""


def test_a_hold_asked_for_during_a_removal_on_postgresql_is_written_once_the_session_is_gone(stack, harm):
    root = stack.var_dir / "volumes" / "music-split-jobs-data"
    put_sessions(root, 1)
    marker = str(stack.var_dir / "removal-began")
    holds = stack.spawn_shell(HOLD_WHEN_MARKED.format(marker=marker))
    cleanup = stack.spawn_shell(SLOW_ONE.format(marker=marker))
    (cleanup_out, cleanup_err), (holds_out, holds_err) = (p.communicate(timeout=180) for p in (cleanup, holds))
    assert cleanup.returncode == 0, cleanup_err
    assert holds.returncode == 0, holds_err
    removed_at = float(next(line for line in cleanup_out.splitlines() if line.startswith("removed")).split()[2])
    held_at = float(next(line for line in holds_out.splitlines() if line.startswith("set")).split()[2])
    held_then_removed = held_at <= removed_at and not (root / "sessions" / "race-00").exists()
    harm("holds", "a hold asked for mid-removal on PostgreSQL", held_deleted=int(held_then_removed))
    assert held_at > removed_at  # asked for mid-removal, written only once the session was gone

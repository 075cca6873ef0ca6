"""Two qcluster workers (two processes each) on PostgreSQL + Redis share the work; a piece
of work delivered several times (a redelivery after a timeout, a double click that got
through twice) still runs exactly once."""

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = [pytest.mark.scaleout, pytest.mark.postgres, pytest.mark.redis]

ENQUEUE_TWICE_OVER = """
from django_q.tasks import async_task
from apps.audit.names import Kind
from apps.audit.operations import request
operation = request(Kind.SESSIONS_CLEANUP, actor="scaleout-test", policy="exit")
for _ in range(3):
    async_task(operation.task, operation.pk, task_name=f"duplicate delivery of #{operation.pk}")
print(operation.pk)
"""

DONE = """
from django_q.models import Success
from apps.audit.models import Operation
operation = Operation.objects.get(pk={pk})
deliveries = Success.objects.filter(func=operation.task).count()
print(operation.status, deliveries, "yes" if operation.status in Operation.TERMINAL and deliveries == 4 else "no")
"""

OUTCOME = """
import json
from apps.audit.models import AuditEvent, Operation
from apps.separations.models import SeparationSession
operation = Operation.objects.get(pk={pk})
print(json.dumps({{
    "status": operation.status,
    "error": operation.error,
    "removals": operation.log.count("removed sessions/"),
    "audit_events": AuditEvent.objects.filter(operation=operation).count(),
    "deleted_rows": SeparationSession.objects.filter(status="deleted").count(),
}}))
"""


def put_session(root, session_id: str, age: timedelta) -> None:
    folder = root / "sessions" / session_id / "output"
    folder.mkdir(parents=True)
    (folder.parent / "input.wav").write_bytes(b"\0" * 1000)
    for stem in ["drums", "bass", "vocals", "other"]:
        (folder / f"{stem}.flac").write_bytes(b"\0" * 100)
    stamp = (datetime.now(UTC) - age).timestamp()
    for path in [*folder.parent.rglob("*"), folder.parent]:
        os.utime(path, (stamp, stamp))


def test_work_delivered_four_times_to_two_workers_runs_once(stack):
    root = stack.var_dir / "volumes" / "music-split-jobs-data"
    for index in range(6):
        put_session(root, f"stale-{index}", timedelta(hours=5 + index))
    put_session(root, "fresh", timedelta(minutes=3))
    stack.manage("sessions", "sync")

    operation_id = int(stack.shell(ENQUEUE_TWICE_OVER).strip().splitlines()[-1])
    stack.start_workers(2)
    stack.wait_until(DONE.format(pk=operation_id), timeout=90)

    outcome = json.loads(stack.shell(OUTCOME.format(pk=operation_id)).strip().splitlines()[-1])
    assert outcome == {"status": "succeeded", "error": "", "removals": 6, "audit_events": 1, "deleted_rows": 6}
    assert sorted(p.name for p in (root / "sessions").iterdir()) == ["fresh"]

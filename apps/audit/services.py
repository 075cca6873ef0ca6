"""Audit events, storage samples and the life of an Operation row.

Every domain service takes an `actor` (a User, or the name of a schedule/task such as
"schedule:reconcile-pods") and records what it did with `audit_record`, inside the same
transaction as the state change. Work is queued and run through the declared kinds in
`apps.audit.operations` (`request`, `run_now`); this module keeps the row's own steps:
create (the intent), claim, log, progress, finish, reap.
"""

import logging
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation, StorageSample
from controlpanel.errors import Busy, NotFound, PanelError
from controlpanel.logs import operation_context

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | str | None


def actor_parts(actor: Actor) -> tuple[AbstractBaseUser | None, str]:
    """Split an actor into the user row (if a person) and a display name (always)."""
    if actor is None:
        return None, "system"
    if isinstance(actor, str):
        return None, actor
    return actor, actor.get_username()


def audit_record(
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    outcome: str = AuditEvent.Outcome.SUCCEEDED,
    bytes_reclaimed: int = 0,
    message: str = "",
    details: dict[str, Any] | None = None,
    operation: Operation | None = None,
) -> AuditEvent:
    user, name = actor_parts(actor)
    return AuditEvent.objects.create(
        actor_user=user,
        actor_name=name,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        outcome=outcome,
        bytes_reclaimed=max(0, int(bytes_reclaimed)),
        message=message[:4000],
        details=details or {},
        operation=operation,
    )


def storage_sample_record(
    *, domain: str, subject: str, total_bytes: int, total_files: int | None = None
) -> StorageSample:
    """Record one measurement; every sync, inspection and operation that changes bytes held
    calls this once per subject, so charts and totals move as soon as the bytes do."""
    return StorageSample.objects.create(
        domain=domain, subject=subject, total_bytes=int(total_bytes), total_files=total_files
    )


def operation_create(
    *,
    kind: str,
    target_type: str,
    target_id: str,
    actor: Actor,
    task: str = "",
    params: dict[str, Any] | None = None,
    exclusive: bool = True,
) -> Operation:
    """Write the intent. With `exclusive`, refuse while another operation on the same
    target is pending or running (the second admin gets a clear "already in progress").
    A partial unique index decides, not a read-then-write, so concurrent callers on
    PostgreSQL cannot both win."""
    user, name = actor_parts(actor)
    try:
        with transaction.atomic():
            return Operation.objects.create(
                kind=kind,
                target_type=target_type,
                target_id=str(target_id),
                actor_user=user,
                actor_name=name,
                task=task,
                params=params or {},
                exclusive=exclusive,
            )
    except IntegrityError:
        busy = Operation.objects.filter(
            target_type=target_type, target_id=str(target_id), status__in=Operation.ACTIVE, exclusive=True
        ).first()
        what = f"{busy.kind} in progress (operation #{busy.pk}, {busy.status})" if busy else "work in progress"
        raise Busy(f"{target_type} {target_id!r} already has {what}; wait for it to finish") from None


def operation_claim(*, operation_id: int) -> Operation | None:
    """Move pending → running with a conditional update: of two workers, one wins."""
    now = timezone.now()
    claimed = Operation.objects.filter(pk=operation_id, status=Operation.Status.PENDING).update(
        status=Operation.Status.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return None
    return Operation.objects.get(pk=operation_id)


def operation_log(operation: Operation, line: str) -> None:
    """Append one line to the operation's log, without rewriting the other fields."""
    stamped = f"{timezone.now():%Y-%m-%d %H:%M:%S} {line}\n"
    Operation.objects.filter(pk=operation.pk).update(log=Concat(F("log"), Value(stamped)), heartbeat_at=timezone.now())
    operation.log += stamped
    logger.info("operation #%s %s: %s", operation.pk, operation.kind, line)


class Throttle:
    """True at most once an interval: for writes that are cheap to ask for on every chunk."""

    def __init__(self, interval: float | None = None):
        self.interval = settings.OPERATION_PROGRESS_INTERVAL_SECONDS if interval is None else interval
        self.last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


class Progress:
    """Throttled progress writer: cheap to call per chunk, writes at most once an interval."""

    def __init__(self, operation: Operation | None, *, total: int | None = None, unit: str = ""):
        self.operation = operation
        self.done = 0
        self.total = total
        self.unit = unit
        self.throttle = Throttle()
        self.flush()

    def set_total(self, total: int | None, unit: str | None = None) -> None:
        self.total = total
        if unit is not None:
            self.unit = unit
        self.flush()

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.throttle.due():
            self.flush()

    def flush(self) -> None:
        self.throttle.last = time.monotonic()
        if self.operation is None:
            return
        self.operation.progress_done = self.done
        self.operation.progress_total = self.total
        self.operation.progress_unit = self.unit
        Operation.objects.filter(pk=self.operation.pk).update(
            progress_done=self.done, progress_total=self.total, progress_unit=self.unit, heartbeat_at=timezone.now()
        )


def heartbeat_seconds() -> float:
    """How often a running operation says its worker lives: well within the reaper's limit
    (Q_RETRY), and no more than once a minute."""
    return max(0.2, min(60.0, settings.Q_CLUSTER["retry"] / 4))


class _Heartbeat:
    """Writes `heartbeat_at` from a thread for as long as the operation's work runs. Progress
    and log lines beat too, but a step can wait for minutes without either (a restic lock, a
    prune, a slow engine): without this, the reaper would take a live worker for a dead one and
    reconcile would run the same work a second time beside it. A killed worker beats no more."""

    def __init__(self, operation_id: int):
        self.operation_id = operation_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{operation_id}", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        # Not waited for long: a beat stuck on a busy database must not hold the outcome up,
        # and a late one changes nothing (it only touches a row still running).
        self.thread.join(timeout=1)

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(heartbeat_seconds()):
                try:
                    Operation.objects.filter(pk=self.operation_id, status=Operation.Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as exc:  # the next beat tries again; the work goes on
                    logger.warning("operation #%s: heartbeat not written: %s", self.operation_id, exc)
        finally:
            connections.close_all()  # this thread's own connections


def _finish(operation: Operation, *, status: str, result=None, error: str = "", tb: str = "") -> None:
    operation.status = status
    operation.finished_at = timezone.now()
    operation.result = result if isinstance(result, dict) else ({"value": result} if result is not None else {})
    operation.error = error
    operation.traceback = tb
    operation.save(update_fields=["status", "finished_at", "result", "error", "traceback"])


def operation_execute(
    *, operation_id: int, work: Callable[[Operation], Any], describe: Callable[[dict], str] | None = None
) -> Operation:
    """Claim the operation and run `work(operation)`; record succeeded, failed or errored.

    `apps.audit.operations` calls this for every kind, queued or inline. Returns the finished
    row; never raises for a PanelError (it is the operation's *failed* outcome). `describe`
    turns a result into the sentence people read, kept in `result["summary"]`."""
    operation = operation_claim(operation_id=operation_id)
    if operation is None:
        existing = Operation.objects.filter(pk=operation_id).first()
        if existing is None:
            raise NotFound(f"operation #{operation_id} does not exist")
        logger.warning("operation #%s is %s, not pending; not running it again", operation_id, existing.status)
        return existing
    try:
        with operation_context(operation.pk, operation.kind), _Heartbeat(operation.pk):
            result = work(operation)
    except PanelError as exc:
        _finish(operation, status=Operation.Status.FAILED, error=exc.message)
    except Exception as exc:  # an unexpected failure: keep the traceback for the log and the row
        logger.exception("operation #%s %s errored", operation.pk, operation.kind)
        _finish(
            operation,
            status=Operation.Status.ERRORED,
            error=f"{type(exc).__name__}: {exc}",
            tb=traceback.format_exc(),
        )
    else:
        if describe is not None and isinstance(result, dict):
            result = {**result, "summary": describe(result)}
        _finish(operation, status=Operation.Status.SUCCEEDED, result=result)
    return operation


def operation_reap_stale(*, older_than: timedelta | None = None) -> int:
    """Mark stale work as errored, so its target is free again and the domain's reconcile
    can roll the work forward or back: running operations whose worker stopped sending
    heartbeats (a live worker beats every `heartbeat_seconds()`, whatever its step waits
    for, so only a dead or lost one goes past the limit), and pending ones no worker claimed
    in the same time (the queue lost them, or they were never handed over)."""
    limit = older_than if older_than is not None else timedelta(seconds=settings.Q_CLUSTER["retry"])
    now = timezone.now()
    cutoff = now - limit
    running = Operation.objects.filter(status=Operation.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=Operation.Status.ERRORED,
        finished_at=now,
        error="worker stopped sending heartbeats (killed or lost); reconcile finishes or rolls back an interrupted "
        "pod action and removes what a drill left, other work (a drill included) must be run again",
    )
    pending = Operation.objects.filter(status=Operation.Status.PENDING, created_at__lt=cutoff).update(
        status=Operation.Status.ERRORED,
        finished_at=now,
        error="no worker took this work in time (queue lost or not running); request it again",
    )
    return running + pending

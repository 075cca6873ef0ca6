"""Operation kinds, declared once, and the two ways to run one.

Each domain app declares its kinds as `OperationKind` rows in its own `operations.py` and
registers them from `AppConfig.ready()`; this module knows no domain. Everything that starts
work (pages, admin actions, the sessions API, the CLI, schedules, `cleanup_expired_jobs`)
calls one of:

    request(Kind.POD_STOP, "abc", actor=user)        # queue: a row now, a worker later
    run_now(Kind.MIXJOBS_CLEANUP, "s1", actor="cli")  # inline: the finished row, or PanelError

django-q2 only ever carries an operation id (`run_operation`) or a kind name for a schedule
(`run_scheduled`): this is the only module that hands work to it.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from apps.audit.holds import Held
from apps.audit.models import AuditEvent, Operation
from apps.audit.services import Actor, actor_parts, audit_record, operation_create, operation_execute
from controlpanel.errors import Busy, Forbidden, InvalidInput, NotFound, PanelError

logger = logging.getLogger(__name__)

RUN_TASK = "apps.audit.operations.run_operation"
SCHEDULE_TASK = "apps.audit.operations.run_scheduled"


@dataclass(frozen=True)
class Schedule:
    """When a kind runs by itself: every `minutes`, as `actor`, with `params`."""

    name: str
    minutes: int
    actor: str
    params: dict[str, Any] = field(default_factory=dict)


def _no_sentence(result: dict) -> str:
    return "Done."


@dataclass(frozen=True)
class OperationKind:
    """Everything the panel knows about one kind of work.

    `run(operation)` does the work and returns a JSON-able dict; `describe(result)` turns
    that dict into one sentence for people. `check(target_id, params)` refuses a request
    before any row is written (unknown pod, a status that does not allow it). A kind whose
    work spans a whole domain names its `target_id` here ("reconcile", "all"), or a function
    that names it from settings (the sessions volume)."""

    name: str
    target_type: str
    run: Callable[[Operation], dict]
    permission: str
    audit_action: str
    label: str
    progress_unit: str = ""
    exclusive: bool = True
    describe: Callable[[dict], str] = _no_sentence
    schedule: Schedule | None = None
    check: Callable[[str, dict], None] | None = None
    target_id: str | Callable[[], str] | None = None

    def target(self, target_id: str | None) -> str:
        if callable(self.target_id):
            return self.target_id()
        if self.target_id is not None:
            return self.target_id
        if not target_id:
            raise InvalidInput(f"{self.label} needs a {self.target_type} to work on")
        return str(target_id)


_KINDS: dict[str, OperationKind] = {}


def register(*kinds: OperationKind) -> None:
    """Called from each app's `AppConfig.ready()`; a name declared twice is a bug."""
    for kind in kinds:
        name = str(kind.name)  # a Kind member or its value: both name the same kind
        existing = _KINDS.get(name)
        if existing is not None and existing != kind:
            raise RuntimeError(f"operation kind {name!r} is declared twice")
        _KINDS[name] = kind


def kind_get(name: str) -> OperationKind:
    kind = _KINDS.get(str(name))
    if kind is None:
        raise InvalidInput(f"unknown kind of work {str(name)[:80]!r}")
    return kind


def kinds() -> list[OperationKind]:
    return sorted(_KINDS.values(), key=lambda kind: kind.name)


def user_may(user, kind_name: str) -> bool:
    """Whether a person may ask for this kind (pages hide what a role cannot do)."""
    return bool(user and user.has_perm(kind_get(kind_name).permission))


def _authorise(kind: OperationKind, actor: Actor) -> None:
    # Schedules, the CLI and the API act under a name; a person needs the kind's permission.
    if isinstance(actor, AbstractBaseUser) and not actor.has_perm(kind.permission):
        raise Forbidden(f"{actor.get_username()} may not {kind.label.lower()} (needs {kind.permission})")


def _create(kind_name: str, target_id: str | None, actor: Actor, params: dict[str, Any]) -> Operation:
    kind = kind_get(kind_name)
    _authorise(kind, actor)
    target = kind.target(target_id)
    if kind.check is not None:
        try:
            kind.check(target, params)
        except Held as exc:
            _held_refusal_record(kind, target, actor, exc)
            raise
    return operation_create(
        kind=kind.name,
        target_type=kind.target_type,
        target_id=target,
        actor=actor,
        task=RUN_TASK,
        params=params,
        exclusive=kind.exclusive,
    )


def _held_refusal_record(kind: OperationKind, target: str | None, actor: Actor, refusal: Held) -> None:
    """Someone asked to delete what a hold protects: the attempt is part of the history too."""
    _, name = actor_parts(actor)
    logger.warning("refused %s of %s for %s: %s", kind.name, target or "all", name, refusal)
    audit_record(
        actor=actor,
        action=kind.audit_action,
        target_type=kind.target_type,
        target_id=target or "",
        outcome=AuditEvent.Outcome.FAILED,
        message=f"refused: {refusal}",
    )


def _enqueue(operation: Operation) -> None:
    def send() -> None:
        from django_q.tasks import async_task

        async_task(RUN_TASK, operation.pk, task_name=f"{operation.kind} #{operation.pk}")

    # Only once the row is committed: a worker must never look for a row not there yet.
    transaction.on_commit(send)


def refusal(kind_name: str, target_id: str | None = None, **params) -> PanelError | None:
    """Why this work would be refused now (on hold, busy, not in this state), or None: for a
    confirmation page, which says so instead of offering the button. Looking is not asking,
    so nothing is recorded."""
    kind = kind_get(kind_name)
    if kind.check is None:
        return None
    try:
        kind.check(kind.target(target_id), params)
    except PanelError as exc:
        return exc
    return None


def request(kind: str, target_id: str | None = None, *, actor: Actor, **params) -> Operation:
    """Write the intent and queue it. A refusal (busy, illegal, forbidden) raises a
    PanelError and leaves no row behind."""
    operation = _create(kind, target_id, actor, params)
    _enqueue(operation)
    return operation


def request_many(kind: str, target_ids: Iterable[str | None], *, actor: Actor, **params) -> list[Operation]:
    """Several targets at once, all or none: if one is refused, none is queued."""
    with transaction.atomic():
        operations = [_create(kind, target_id, actor, params) for target_id in target_ids]
        for operation in operations:
            _enqueue(operation)
    return operations


def _execute(kind: OperationKind, operation_id: int, work: Callable[[Operation], Any]) -> Operation:
    finished = operation_execute(operation_id=operation_id, work=work, describe=kind.describe)
    if finished.status in {Operation.Status.FAILED, Operation.Status.ERRORED}:
        from apps.audit.notify import notify  # notify records through services, which this sits on

        notify(
            event="operation.failed",
            subject=f"{kind.name}:{finished.target_id}",
            title=f"{kind.label} {finished.target_id} {finished.status}",
            body=f"Operation #{finished.pk} ({kind.label}, {finished.target_id}, asked by {finished.actor_name}) "
            f"{finished.status}: {finished.error}",
            level="failure",
        )
    return finished


def execute(operation_id: int) -> Operation:
    """Claim and run one operation by its kind; the finished row."""
    operation = Operation.objects.filter(pk=operation_id).only("kind").first()
    if operation is None:
        raise NotFound(f"operation #{operation_id} does not exist")
    kind = kind_get(operation.kind)

    def work(claimed: Operation) -> Any:
        # Asked again as the work begins: a person whose permission was taken away, or whose
        # account was deactivated, while the work waited in the queue has it done no longer.
        _authorise(kind, claimed.actor)
        return kind.run(claimed)

    return _execute(kind, operation_id, work)


def run_now(kind: str, target_id: str | None = None, *, actor: Actor, **params) -> Operation:
    """Run in this process (CLI, API, `cleanup_expired_jobs`) and return the finished row.
    A failure raises the service's own PanelError (a NotFound stays a NotFound); the row
    records the outcome either way."""
    operation = _create(kind, target_id, actor, params)
    spec = kind_get(kind)
    raised: list[PanelError] = []

    def keep_error(op: Operation):
        try:
            return spec.run(op)
        except PanelError as exc:
            raised.append(exc)
            raise

    finished = _execute(spec, operation.pk, keep_error)
    if raised:
        raise raised[0]
    if finished.status != Operation.Status.SUCCEEDED:
        raise PanelError(f"operation #{finished.pk} {finished.status}: {finished.error}")
    return finished


def retry(*, operation: Operation, actor: Actor) -> Operation:
    """Queue the same work again as a new operation; the failed row stays as history."""
    if operation.status not in {Operation.Status.FAILED, Operation.Status.ERRORED}:
        raise PanelError(f"operation #{operation.pk} is {operation.status}; only failed work can be retried")
    params = {key: value for key, value in operation.params.items() if key != "retry_of"}
    return request(operation.kind, operation.target_id, actor=actor, **params, retry_of=operation.pk)


def sentence(operation: Operation) -> str:
    """One line for people about how the operation ended (or where it is)."""
    if operation.status == Operation.Status.SUCCEEDED:
        return (operation.result or {}).get("summary") or "Done."
    if operation.status in {Operation.Status.FAILED, Operation.Status.ERRORED}:
        return operation.error or operation.status
    return operation.get_status_display()


# --- django-q2 entry points: the only two tasks the queue runs ---------------------------


def run_operation(operation_id: int) -> str:
    """The task every queued operation runs, whatever its kind."""
    return execute(operation_id).status


def run_scheduled(kind_name: str) -> str:
    """A schedule's turn: run the kind inline on the worker, unless its last turn (or a
    person's request) still holds the target; then this turn has nothing to add."""
    kind = kind_get(kind_name)
    schedule = kind.schedule
    if schedule is None:
        raise InvalidInput(f"{kind.label} has no schedule")
    try:
        operation = _create(kind.name, None, schedule.actor, dict(schedule.params))
    except Busy as exc:
        logger.info("%s skipped: %s", schedule.name, exc)
        return f"skipped: {exc}"
    finished = _execute(kind, operation.pk, kind.run)
    return f"{finished.status}: {sentence(finished)}"

"""The life of an Operation row, and the entry points every caller uses to start work.

The entry points are tested with a real declared kind whose work is harmless here: syncing
the mix jobs of an empty MIX_MEDIA_DIR (every test has its own roots)."""

import dataclasses
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit import operations
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.schedules import collect_schedules
from apps.audit.services import (
    Progress,
    audit_record,
    operation_claim,
    operation_create,
    operation_execute,
    operation_reap_stale,
)
from controlpanel.errors import Busy, Forbidden, NotFound, PanelError

pytestmark = pytest.mark.django_db


def make_operation(**overrides):
    values = {"kind": Kind.POD_STOP, "target_type": TargetType.POD, "target_id": "abc", "actor": "tests"}
    return operation_create(**{**values, **overrides})


def refuse(message: str):
    def work(operation):
        raise PanelError(message)

    return work


@pytest.fixture
def sync_kind(settings):
    """The mix jobs sync, on an empty media folder: a real kind whose run touches nothing."""
    settings.MIX_MEDIA_DIR.mkdir(parents=True)
    settings.MIX_OUTPUTS_DIR.mkdir(parents=True)
    return operations.kind_get(Kind.MIXJOBS_SYNC)


@pytest.fixture
def failing_sync(sync_kind, monkeypatch):
    """The same kind whose run refuses as a service does; the registry is restored afterwards."""

    def run(operation):
        raise NotFound("mix media folder 'gone' does not exist")

    monkeypatch.setitem(operations._KINDS, sync_kind.name, dataclasses.replace(sync_kind, run=run))
    return sync_kind


def hold(kind: operations.OperationKind) -> Operation:
    """An operation of this kind pending on its own target, as a person's request would leave it."""
    return operation_create(
        kind=kind.name, target_type=kind.target_type, target_id=kind.target(None), actor="tests", params={}
    )


# --- the row: create, claim, run, progress, reap ------------------------------------------


def test_second_operation_on_same_target_is_refused_while_first_is_active():
    first = make_operation()
    with pytest.raises(Busy, match="already has pod.stop in progress"):
        make_operation(kind=Kind.POD_DELETE)
    operation_execute(operation_id=first.pk, work=lambda op: {"ok": True})
    # Once the first has finished the target is free again.
    assert make_operation(kind=Kind.POD_DELETE).status == Operation.Status.PENDING


def test_execute_records_success_with_result_and_its_sentence():
    operation = make_operation()
    finished = operation_execute(
        operation_id=operation.pk, work=lambda op: {"bytes": 42}, describe=lambda result: f"{result['bytes']} B freed."
    )
    finished.refresh_from_db()
    assert finished.status == Operation.Status.SUCCEEDED
    assert finished.result == {"bytes": 42, "summary": "42 B freed."}
    assert operations.sentence(finished) == "42 B freed."
    assert finished.started_at <= finished.finished_at


def test_panel_error_is_failed_and_other_exceptions_are_errored_with_traceback():
    def crash(op):
        raise RuntimeError("boom")

    failed = operation_execute(
        operation_id=make_operation(target_id="a").pk, work=refuse("pod 'abc' is stopping; wait for it to finish")
    )
    errored = operation_execute(operation_id=make_operation(target_id="b").pk, work=crash)
    failed.refresh_from_db()
    errored.refresh_from_db()
    assert (failed.status, failed.error, failed.traceback) == (
        "failed",
        "pod 'abc' is stopping; wait for it to finish",
        "",
    )
    assert operations.sentence(failed) == "pod 'abc' is stopping; wait for it to finish"
    assert errored.status == "errored"
    assert "RuntimeError: boom" in errored.error
    assert "Traceback" in errored.traceback


def test_execute_does_not_run_finished_work_twice():
    operation = make_operation()
    calls = []
    operation_execute(operation_id=operation.pk, work=lambda op: calls.append(1))
    operation_execute(operation_id=operation.pk, work=lambda op: calls.append(2))
    assert calls == [1]


def test_progress_is_written_to_the_row():
    operation = make_operation()
    progress = Progress(operation, total=1000, unit="bytes")
    progress.advance(250)
    progress.advance(250)
    progress.flush()
    operation.refresh_from_db()
    assert (operation.progress_done, operation.progress_total, operation.percent) == (500, 1000, 50)


def test_stale_running_operation_is_reaped_and_frees_the_target():
    operation = make_operation()
    with time_machine.travel(timezone.now() - timedelta(hours=2), tick=False):
        operation_claim(operation_id=operation.pk)
    fresh = make_operation(target_id="other")
    operation_claim(operation_id=fresh.pk)
    assert operation_reap_stale() == 1
    operation.refresh_from_db()
    fresh.refresh_from_db()
    assert operation.status == "errored" and "heartbeats" in operation.error
    assert fresh.status == "running"
    make_operation()  # no longer busy


def test_stale_pending_operation_nobody_claimed_is_reaped_and_frees_the_target():
    with time_machine.travel(timezone.now() - timedelta(hours=2), tick=False):
        lost = make_operation()  # queued, but the queue lost it: never claimed
    fresh = make_operation(target_id="other")
    assert operation_reap_stale() == 1
    lost.refresh_from_db()
    fresh.refresh_from_db()
    assert lost.status == Operation.Status.ERRORED and "no worker took this work" in lost.error
    assert lost.finished_at is not None
    assert fresh.status == Operation.Status.PENDING  # fresh work waits for its worker
    assert make_operation().status == Operation.Status.PENDING  # the target is free again


def test_audit_record_names_people_and_schedules(staff_user):
    by_person = audit_record(actor=staff_user, action=AuditAction.POD_STOP, target_type=TargetType.POD, target_id="abc")
    by_schedule = audit_record(
        actor="schedule:reconcile", action=AuditAction.POD_RECONCILE, target_type=TargetType.POD, target_id="abc"
    )
    assert (by_person.actor_user, by_person.actor_name) == (staff_user, "root")
    assert (by_schedule.actor_user, by_schedule.actor_name) == (None, "schedule:reconcile")
    assert AuditEvent.objects.count() == 2


# --- the entry points: request, run_now, retry, schedules ----------------------------------


def test_a_refused_second_request_leaves_no_row_behind(sync_kind, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = operations.request(Kind.MIXJOBS_SYNC, actor="tests")
    assert len(callbacks) == 1  # the django-q2 enqueue waits for the commit
    before = Operation.objects.count()
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(Busy, match="in progress"):
        operations.request(Kind.MIXJOBS_SYNC, actor="tests")
    assert callbacks == []  # nothing queued
    assert Operation.objects.count() == before
    assert list(Operation.objects.filter(status=Operation.Status.PENDING)) == [first]


def test_run_now_returns_the_finished_row_with_the_kinds_sentence(sync_kind):
    finished = operations.run_now(Kind.MIXJOBS_SYNC, actor="cli")
    assert finished.status == Operation.Status.SUCCEEDED and finished.finished_at is not None
    outcome = {key: value for key, value in finished.result.items() if key != "summary"}
    assert finished.result["summary"] == sync_kind.describe(outcome)
    assert finished.result["summary"] != "Done."  # the kind's own sentence, not the fallback
    finished.refresh_from_db()  # and it is what the row says, not only the returned object
    assert finished.result["summary"] == sync_kind.describe(outcome)


def test_run_now_raises_the_services_own_error_and_records_it(failing_sync):
    with pytest.raises(NotFound, match="mix media folder 'gone' does not exist"):
        operations.run_now(Kind.MIXJOBS_SYNC, actor="cli")
    row = Operation.objects.get(kind=Kind.MIXJOBS_SYNC)
    assert (row.status, row.error) == (Operation.Status.FAILED, "mix media folder 'gone' does not exist")


def test_a_person_without_the_kinds_permission_is_refused_and_no_row_is_written(sync_kind, viewer_user):
    assert not operations.user_may(viewer_user, Kind.MIXJOBS_SYNC)
    with pytest.raises(Forbidden, match=sync_kind.permission):
        operations.request(Kind.MIXJOBS_SYNC, actor=viewer_user)
    with pytest.raises(Forbidden):
        operations.run_now(Kind.MIXJOBS_SYNC, actor=viewer_user)
    assert Operation.objects.count() == 0


def test_work_queued_by_a_person_who_lost_the_permission_meanwhile_is_refused_when_it_runs(
    sync_kind, staff_user, monkeypatch, django_capture_on_commit_callbacks
):
    ran = []
    monkeypatch.setitem(operations._KINDS, sync_kind.name, dataclasses.replace(sync_kind, run=ran.append))
    with django_capture_on_commit_callbacks():
        first = operations.request(Kind.MIXJOBS_SYNC, actor=staff_user)
    staff_user.is_active = False  # the account deactivated while the work waited
    staff_user.save()
    finished = operations.execute(first.pk)
    assert ran == [] and finished.status == Operation.Status.FAILED
    assert (
        finished.error
        == f"{staff_user.get_username()} may not {sync_kind.label.lower()} (needs {sync_kind.permission})"
    )
    staff_user.is_active = True
    staff_user.save()
    with django_capture_on_commit_callbacks():
        second = operations.request(Kind.MIXJOBS_SYNC, actor=staff_user)
    assert operations.execute(second.pk).status == Operation.Status.SUCCEEDED and len(ran) == 1


def test_retry_queues_a_new_operation_and_the_failed_one_stays_failed(
    failing_sync, staff_user, django_capture_on_commit_callbacks
):
    with pytest.raises(NotFound):
        operations.run_now(Kind.MIXJOBS_SYNC, actor="cli")
    failed = Operation.objects.get(kind=Kind.MIXJOBS_SYNC)
    with django_capture_on_commit_callbacks() as callbacks:
        again = operations.retry(operation=failed, actor=staff_user)
    assert len(callbacks) == 1  # the django-q2 enqueue waits for the commit
    assert again.pk != failed.pk
    assert (again.kind, again.target_id, again.status) == (failed.kind, failed.target_id, Operation.Status.PENDING)
    assert again.params["retry_of"] == failed.pk and again.actor == staff_user
    failed.refresh_from_db()
    assert failed.status == Operation.Status.FAILED  # history is kept as it was
    assert failed.error == "mix media folder 'gone' does not exist"


def test_retry_refuses_work_that_did_not_fail(sync_kind):
    pending = hold(sync_kind)
    with pytest.raises(PanelError, match="only failed work can be retried"):
        operations.retry(operation=pending, actor="tests")
    assert Operation.objects.count() == 1


def test_every_declared_schedule_runs_through_the_one_scheduled_task():
    scheduled = [kind for kind in operations.kinds() if kind.schedule is not None]
    assert Kind.MIXJOBS_SYNC in {kind.name for kind in scheduled}
    found = {name: (func, args, minutes) for name, func, args, minutes in collect_schedules()}
    for kind in scheduled:
        assert found[kind.schedule.name] == (
            "apps.audit.operations.run_scheduled",
            repr(str(kind.name)),  # the plain name, as django-q2 reads the args back
            kind.schedule.minutes,
        )
    # Only the panel's own housekeeping runs anything else.
    others = {func for func, *_ in found.values()} - {"apps.audit.operations.run_scheduled"}
    assert others == {"apps.audit.tasks.reap_stale_operations_task"}


def test_a_scheduled_turn_on_a_busy_kind_is_skipped_without_a_row(sync_kind):
    assert sync_kind.schedule is not None
    held = hold(sync_kind)
    before = Operation.objects.count()
    outcome = operations.run_scheduled(sync_kind.name)
    assert outcome.startswith("skipped: ") and "in progress" in outcome
    assert Operation.objects.count() == before
    held.refresh_from_db()
    assert held.status == Operation.Status.PENDING  # the person's request is left to its worker


def test_a_scheduled_turn_runs_the_kind_inline(sync_kind):
    outcome = operations.run_scheduled(sync_kind.name)
    row = Operation.objects.get(kind=sync_kind.name)
    assert outcome == f"succeeded: {operations.sentence(row)}"
    assert row.actor_name == sync_kind.schedule.actor

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.services import (
    Progress,
    audit_record,
    operation_claim,
    operation_create,
    operation_execute,
    operation_reap_stale,
    operation_retry,
)
from controlpanel.errors import Busy, PanelError

pytestmark = pytest.mark.django_db


def make_operation(**overrides):
    values = {"kind": "pod.stop", "target_type": "pod", "target_id": "abc", "actor": "tests", "task": "tests.task"}
    return operation_create(**{**values, **overrides})


def test_second_operation_on_same_target_is_refused_while_first_is_active():
    first = make_operation()
    with pytest.raises(Busy, match="already has pod.stop in progress"):
        make_operation(kind="pod.delete")
    operation_execute(operation_id=first.pk, work=lambda op: {"ok": True})
    # Once the first has finished the target is free again.
    assert make_operation(kind="pod.delete").status == Operation.Status.PENDING


def test_only_one_claim_wins():
    operation = make_operation()
    assert operation_claim(operation_id=operation.pk) is not None
    assert operation_claim(operation_id=operation.pk) is None


def test_execute_records_success_with_result():
    operation = make_operation()
    finished = operation_execute(operation_id=operation.pk, work=lambda op: {"bytes": 42})
    finished.refresh_from_db()
    assert finished.status == Operation.Status.SUCCEEDED
    assert finished.result == {"bytes": 42}
    assert finished.started_at <= finished.finished_at


def test_panel_error_is_failed_and_other_exceptions_are_errored_with_traceback():
    def refuse(op):
        raise PanelError("pod 'abc' is stopping; wait for it to finish")

    def crash(op):
        raise RuntimeError("boom")

    failed = operation_execute(operation_id=make_operation(target_id="a").pk, work=refuse)
    errored = operation_execute(operation_id=make_operation(target_id="b").pk, work=crash)
    failed.refresh_from_db()
    errored.refresh_from_db()
    assert (failed.status, failed.error, failed.traceback) == (
        "failed",
        "pod 'abc' is stopping; wait for it to finish",
        "",
    )
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


def test_retry_queues_a_new_operation_and_keeps_the_failed_one(django_capture_on_commit_callbacks):
    operation = make_operation()
    operation_execute(operation_id=operation.pk, work=lambda op: (_ for _ in ()).throw(PanelError("S3 refused")))
    operation.refresh_from_db()
    with django_capture_on_commit_callbacks() as callbacks:
        retry = operation_retry(operation=operation, actor="tests")
    assert retry.pk != operation.pk
    assert retry.params["retry_of"] == operation.pk
    assert len(callbacks) == 1  # the django-q2 enqueue waits for the commit


def test_retry_refuses_work_that_did_not_fail():
    operation = make_operation()
    with pytest.raises(PanelError, match="only failed work can be retried"):
        operation_retry(operation=operation, actor="tests")


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


def test_audit_record_names_people_and_schedules(staff_user):
    by_person = audit_record(actor=staff_user, action="pod.stop", target_type="pod", target_id="abc")
    by_schedule = audit_record(actor="schedule:reconcile", action="pod.pause", target_type="pod", target_id="abc")
    assert (by_person.actor_user, by_person.actor_name) == (staff_user, "root")
    assert (by_schedule.actor_user, by_schedule.actor_name) == (None, "schedule:reconcile")
    assert AuditEvent.objects.count() == 2

"""The operations in the Django admin: told in words, and retried through the same entry point."""

import pytest
from django.urls import reverse
from django.utils.html import escape

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import kind_get
from apps.audit.services import operation_create, operation_execute
from controlpanel.errors import PanelError

pytestmark = pytest.mark.django_db


def sync_operation(work, describe=None) -> Operation:
    kind = kind_get(Kind.MIXJOBS_SYNC)
    operation = operation_create(
        kind=kind.name, target_type=kind.target_type, target_id=kind.target(None), actor="schedule:mix jobs sync"
    )
    return operation_execute(operation_id=operation.pk, work=work, describe=describe)


def refuse(operation):
    raise PanelError("mix media folder is not mounted")


def test_the_admin_lists_operations_by_label_with_their_result_sentence(staff_client):
    done = sync_operation(lambda op: {"jobs": 7}, describe=lambda result: "7 jobs mirrored.")
    changelist = staff_client.get(reverse("admin:audit_operation_changelist")).text
    assert escape(kind_get(Kind.MIXJOBS_SYNC).label) in changelist
    assert "7 jobs mirrored." in changelist
    detail = staff_client.get(reverse("admin:audit_operation_change", args=[done.pk])).text
    assert "7 jobs mirrored." in detail


def test_the_admin_retry_action_queues_a_new_operation_and_keeps_the_failed_one(
    staff_client, django_capture_on_commit_callbacks
):
    failed = sync_operation(refuse)
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            reverse("admin:audit_operation_changelist"),
            {"action": "retry", "_selected_action": [failed.pk]},
            follow=True,
        )
    again = Operation.objects.exclude(pk=failed.pk).get()
    assert f"queued again as #{again.pk}" in response.text
    assert (again.kind, again.status, again.params["retry_of"]) == (Kind.MIXJOBS_SYNC, "pending", failed.pk)
    assert len(callbacks) == 1
    failed.refresh_from_db()
    assert (failed.status, failed.error) == ("failed", "mix media folder is not mounted")


def test_the_admin_retry_action_says_why_work_that_did_not_fail_is_not_retried(staff_client):
    done = sync_operation(lambda op: {"jobs": 0})
    response = staff_client.post(
        reverse("admin:audit_operation_changelist"),
        {"action": "retry", "_selected_action": [done.pk]},
        follow=True,
    )
    assert "only failed work can be retried" in response.text
    assert Operation.objects.count() == 1

"""Schedules: declared for setup_schedules, each a thin call to the same services."""

import pytest

from apps.audit.models import Operation
from apps.audit.schedules import collect_schedules
from apps.audit.services import operation_create
from apps.pods import tasks
from apps.pods.models import DockerHost

pytestmark = pytest.mark.django_db


def test_pod_schedules_are_declared():
    declared = {func: minutes for _name, func, _kind, minutes in collect_schedules()}
    assert declared["apps.pods.tasks.reconcile_pods_task"] == 1
    assert "apps.pods.tasks.sweep_orphans_task" in declared
    assert "apps.pods.tasks.snapshot_retention_task" in declared


@pytest.mark.docker
def test_scheduled_reconcile_runs_as_an_operation_and_skips_while_one_runs(docker_client, pods_settings):
    assert tasks.reconcile_pods_task() == "succeeded"
    assert DockerHost.objects.get(name="local").reachable is True
    assert Operation.objects.get(kind="pods.reconcile").actor_name == "schedule:reconcile-pods"

    operation_create(kind="pods.reconcile", target_type="pods", target_id="reconcile", actor="elsewhere")
    assert "already has pods.reconcile in progress" in tasks.reconcile_pods_task()


def test_scheduled_retention_runs(pods_settings):
    assert tasks.snapshot_retention_task() == "succeeded"
    assert Operation.objects.get(kind="pods.retention").status == "succeeded"

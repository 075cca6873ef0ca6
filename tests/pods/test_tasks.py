"""Schedules: declared on the pods' kinds, each a turn of the same operation kind."""

import pytest

from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import SCHEDULE_TASK, run_scheduled
from apps.audit.schedules import collect_schedules
from apps.audit.services import operation_create
from apps.pods.models import DockerHost

pytestmark = pytest.mark.django_db


def test_pod_schedules_are_declared():
    declared = {args: (name, func, minutes) for name, func, args, minutes in collect_schedules()}
    assert declared[repr(Kind.PODS_RECONCILE.value)] == ("reconcile pods", SCHEDULE_TASK, 1)
    assert declared[repr(Kind.PODS_SWEEP_ORPHANS.value)] == ("sweep orphaned pod volumes", SCHEDULE_TASK, 60)
    assert declared[repr(Kind.PODS_RETENTION.value)] == ("apply snapshot retention", SCHEDULE_TASK, 60)


@pytest.mark.docker
def test_scheduled_reconcile_runs_as_an_operation_and_skips_while_one_runs(docker_client, pods_settings):
    outcome = run_scheduled(Kind.PODS_RECONCILE)
    assert outcome.startswith("succeeded: ") and "host" in outcome
    assert DockerHost.objects.get(name="local").reachable is True
    operation = Operation.objects.get(kind=Kind.PODS_RECONCILE)
    assert operation.actor_name == "schedule:reconcile-pods"
    assert (operation.target_type, operation.target_id) == (TargetType.PODS, "reconcile")

    operation_create(kind=Kind.PODS_RECONCILE, target_type=TargetType.PODS, target_id="reconcile", actor="elsewhere")
    assert "already has pods.reconcile in progress" in run_scheduled(Kind.PODS_RECONCILE)


def test_scheduled_retention_runs(pods_settings):
    assert run_scheduled(Kind.PODS_RETENTION) == "succeeded: 0 snapshots purged, 0 B reclaimed."
    operation = Operation.objects.get(kind=Kind.PODS_RETENTION)
    assert operation.status == "succeeded" and operation.actor_name == "schedule:snapshot-retention"

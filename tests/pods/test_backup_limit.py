"""POD_BACKUP_CONCURRENCY holds for every way a backup is asked for (page, CLI, API, schedule),
on the real dockerd: refused when asked for while the host already runs that many, and again
when the operation runs (two let through at once: the older goes on, the newer is refused)."""

import pytest

from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import execute, run_now
from apps.audit.services import operation_create
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from controlpanel.errors import Busy

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def backup_asked(pod_id: str) -> Operation:
    """A backup that got past its check (as if asked for at the same moment as another)."""
    return operation_create(
        kind=Kind.POD_BACKUP, target_type=TargetType.POD, target_id=pod_id, actor="test", exclusive=False
    )


def test_a_backup_over_the_hosts_limit_is_refused_when_asked_and_when_it_runs(new_pod_id, settings):
    settings.POD_BACKUP_CONCURRENCY = 1
    first, second = new_pod_id(), new_pod_id()
    for pod_id in (first, second):
        services.pod_provision(pod_id=pod_id, actor="test")
    host = Pod.objects.get(pod_id=first).host.name
    refusal = f"host {host} already runs 1 backup (POD_BACKUP_CONCURRENCY=1): try again when it ends"

    older = backup_asked(first)  # under way on the host (queued for a worker)
    # Asked for (Back up now, CLI, API all ask for pod.backup): refused, no row written.
    with pytest.raises(Busy) as refused:
        run_now(Kind.POD_BACKUP, second, actor="test")
    assert str(refused.value) == refusal
    assert not Operation.objects.filter(target_id=second).exists()

    # Both let through at once: when they run, the older goes on, the newer is refused.
    newer = backup_asked(second)
    newer = execute(newer.pk)
    assert newer.status == Operation.Status.FAILED and newer.error == refusal
    assert not Snapshot.objects.filter(pod__pod_id=second).exists()
    older = execute(older.pk)
    assert older.status == Operation.Status.SUCCEEDED
    assert Snapshot.objects.get(pod__pod_id=first).status == Snapshot.Status.COMPLETE

    # With room for two, a second backup beside a running one goes on.
    settings.POD_BACKUP_CONCURRENCY = 2
    backup_asked(first)
    assert run_now(Kind.POD_BACKUP, second, actor="test").status == Operation.Status.SUCCEEDED

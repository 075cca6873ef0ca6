"""Issue #21, part 2, for pods on the real dockerd: a hold set after a deletion was asked for
(or while its batch runs) is read again at the moment of the deletion. A pod delete or
deprovision (what dormancy queues) is refused with the pod as it was; a stop (what the idle
schedule queues) keeps the volumes and leaves the pod paused; retention and the orphan sweep
keep what was held since their list was made and report it on hold."""

import contextlib
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import docker.errors
import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from apps.audit.holds import Held
from apps.audit.models import AuditEvent, Hold, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_now
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import Pod, Snapshot
from tests import parts
from tests.audit.test_holds_at_deletion import HoldFromAnotherThread
from tests.faults import tree_sizes
from tests.pods.conftest import container_exists, pod_volumes
from tests.pods.test_verify import pod_row, stored_snapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def pods_on_disk(docker_client, pod_ids) -> dict[str, set[str]]:
    """What dockerd and the file store have of each pod: its volumes and its snapshots' files."""
    store = Path(urlparse(settings.SNAPSHOT_STORE_URL).path)
    found = {}
    for pod_id in pod_ids:
        names = set(pod_volumes(docker_client, pod_id))
        for snapshot in Snapshot.objects.filter(pod__pod_id=pod_id):
            names |= set(tree_sizes(store / snapshot.prefix))
        found[pod_id] = names
    return found


def held_pods_deleted(docker_client, before: dict[str, set[str]]) -> int:
    """Pods on hold now that lost a volume or a snapshot file they had before the run."""
    held = set(Hold.objects.filter(target_type=TargetType.POD, released_at=None).values_list("target_id", flat=True))
    after = pods_on_disk(docker_client, before)
    return sum(not before[pod_id] <= after[pod_id] for pod_id in held & before.keys())


def held_snapshots_deleted(store: Path) -> int:
    """Snapshots on hold now whose manifest is gone from the file store (or whose row is)."""
    held = Hold.objects.filter(target_type=TargetType.SNAPSHOT, released_at=None).values_list("target_id", flat=True)
    return sum(
        not (snapshot := Snapshot.objects.filter(pk=int(pk)).first())
        or not (store / snapshot.prefix / "manifest.json").exists()
        for pk in held
    )


def hold_at_ping(monkeypatch, pod_id: str) -> None:
    """The hold comes once the host answered: after every check made when the work was asked for."""
    ping = DockerEngine.ping

    def pinged(self) -> None:
        ping(self)
        HoldFromAnotherThread(TargetType.POD, pod_id).join()

    monkeypatch.setattr(DockerEngine, "ping", pinged)


@pytest.mark.parametrize("kind", [Kind.POD_DELETE, Kind.POD_DEPROVISION])
def test_a_pod_held_after_its_delete_was_asked_for_keeps_everything(kind, docker_client, new_pod_id, monkeypatch, harm):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    snapshot = stored_snapshot(Pod.objects.get(pod_id=pod_id))
    before = pods_on_disk(docker_client, [pod_id])
    held = partial(held_pods_deleted, docker_client, before)
    hold_at_ping(monkeypatch, pod_id)
    with (
        harm.around("holds", f"a pod held after its {kind} was asked for", held_deleted=held),
        pytest.raises(Held, match=f"pod {pod_id} was not .*put on hold by another person"),
    ):
        run_now(kind, pod_id, actor="test")
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    assert container_exists(docker_client, pod_id) and len(pod_volumes(docker_client, pod_id)) == 8
    assert Snapshot.objects.get(pk=snapshot.pk).status == Snapshot.Status.COMPLETE
    assert Operation.objects.get(kind=kind).status == Operation.Status.FAILED


def test_a_pod_held_while_it_stops_keeps_its_volumes_and_is_paused(docker_client, new_pod_id, monkeypatch, harm):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    before = pods_on_disk(docker_client, [pod_id])
    held = partial(held_pods_deleted, docker_client, before)
    from apps.pods.services import lifecycle

    take = lifecycle._snapshot_take

    def taken(**kwargs):
        snapshot = take(**kwargs)
        HoldFromAnotherThread(TargetType.POD, pod_id).join()
        return snapshot

    monkeypatch.setattr(lifecycle, "_snapshot_take", taken)
    # As the idle schedule queues it: a stop with a snapshot.
    with (
        harm.around("holds", "a pod held while its idle stop runs", held_deleted=held),
        pytest.raises(Held, match="snapshot #\\d+ kept; its volumes too"),
    ):
        run_now(Kind.POD_STOP, pod_id, actor="idle-schedule", idle_hours=4, idle_cpu_seconds=0.1)
    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED and "on hold" in pod.last_error
    assert len(pod_volumes(docker_client, pod_id)) == 8
    assert pod.snapshots.filter(status=Snapshot.Status.COMPLETE).count() == 1


def test_retention_keeps_a_snapshot_held_while_it_runs(settings, monkeypatch, tmp_path, harm):
    settings.SNAPSHOT_KEEP_LAST, settings.SNAPSHOT_KEEP_DAILY, settings.SNAPSHOT_KEEP_WEEKLY = 1, 0, 0
    now = datetime(2025, 6, 11, 12, 0, tzinfo=UTC)
    pod = pod_row("retained")
    with time_machine.travel(now, tick=False):
        for days in range(4):
            stored_snapshot(pod, volumes={"workspace": b"x" * 10}, finished=now - timedelta(days=days))
        first, second, third = services.snapshots_to_retire()
        from apps.pods.services import retention

        purge, purged = retention._snapshot_purge, []

        def purging(**kwargs):
            removed = purge(**kwargs)
            purged.append(kwargs["snapshot"].pk)
            if len(purged) == 1:
                HoldFromAnotherThread(TargetType.SNAPSHOT, str(third.pk)).join()
            return removed

        monkeypatch.setattr(retention, "_snapshot_purge", purging)
        result = services.snapshots_apply_retention(actor="test")
    harm("holds", "a snapshot held while retention runs", held_deleted=held_snapshots_deleted(tmp_path / "snapshots"))
    assert result["purged"] == [first.pk, second.pk]
    assert result["on_hold"] == [third.pk]
    assert Snapshot.objects.get(pk=third.pk).status == Snapshot.Status.COMPLETE
    assert (tmp_path / "snapshots" / third.prefix / "manifest.json").exists()  # the file store, on disk


def test_the_orphan_sweep_keeps_a_volume_whose_pod_was_held_while_it_ran(
    docker_client, pods_settings, monkeypatch, harm
):
    pods_settings.POD_ORPHAN_GRACE_MINUTES = 60
    tag = parts.pod_id("o")
    pod_ids = [f"{tag}a", f"{tag}b"]
    names = [f"pinacle-vol-{pod_id}-workspace" for pod_id in pod_ids]
    for name, pod_id in zip(names, pod_ids, strict=True):
        docker_client.volumes.create(name=name, labels={"pinacle.pod": pod_id})
    from apps.pods.services import housekeeping

    find, looked = housekeeping.orphans_find, []

    def looking(*, host, volumes):
        if len(volumes) == 1 and not looked:  # the look again right before the first removal
            looked.append(volumes[0].name)
            other = pod_ids[1] if volumes[0].name == names[0] else pod_ids[0]
            HoldFromAnotherThread(TargetType.POD, other).join()
        return find(host=host, volumes=volumes)

    monkeypatch.setattr(housekeeping, "orphans_find", looking)
    before = pods_on_disk(docker_client, pod_ids)
    try:
        with time_machine.travel(timezone.now() + timedelta(minutes=61), tick=False):
            result = services.orphans_sweep(actor="test", name_prefix=f"pinacle-vol-{tag}")
        held = held_pods_deleted(docker_client, before)
        harm("holds", "a pod held while the orphan sweep runs", held_deleted=held)
        kept = names[1] if looked[0] == names[0] else names[0]
        assert result["removed"] == looked and result["on_hold"] == [kept]
        assert [v.name for v in docker_client.volumes.list(filters={"name": f"pinacle-vol-{tag}"})] == [kept]
        event = AuditEvent.objects.get(action=AuditAction.PODS_SWEEP_ORPHANS)
        assert event.details["on_hold"] == [kept] and event.details["removed"] == looked
    finally:
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):  # removed by the sweep already
                docker_client.volumes.get(name).remove(force=True)

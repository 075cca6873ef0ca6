"""Reconcile at fleet scale, on the real dockerd: liveness from two listing calls per host
(no file is walked, whatever the size budget), every host at once with its own time limit,
and a fixed number of queries per batch of pods."""

import docker.api.client
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.audit.names import AuditAction
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import DockerHost, OrphanVolume, Pod, PodVolume, container_name
from apps.pods.services.fleet import BATCH, LOOKUP_BATCH
from apps.pods.services.sizes import pods_measure
from tests import parts
from tests.fakes.silent_server import SilentServer
from tests.pods.conftest import pod_volumes, run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

# Thousands of small files in one volume: what `docker system df -v` would walk.
MANY_FILES = "mkdir -p /workspace/many && cd /workspace/many && seq 3000 | xargs touch"


@pytest.fixture
def silent_host():
    server = SilentServer()
    yield server
    server.close()


def _walked(*args, **kwargs):
    raise AssertionError("reconcile walked volume files")


def test_a_dead_container_is_paused_within_one_reconcile_while_the_size_budget_is_exhausted(
    docker_client, new_pod_id, pods_settings, monkeypatch
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, MANY_FILES)
    pods_settings.POD_SIZE_BUDGET_SECONDS = 0
    spent = pods_measure(actor="test")
    assert spent["hosts"]["local"]["measured"] == 0  # the budget is exhausted: no size at all
    docker_client.api.kill(container_name(pod_id))
    sizes_before = list(PodVolume.objects.filter(pod__pod_id=pod_id).values_list("size_bytes", "measured_at"))

    # Fault injection: any size measurement from here on fails the test loudly.
    monkeypatch.setattr(DockerEngine, "volumes_measure", _walked)
    monkeypatch.setattr(docker.api.client.APIClient, "df", _walked)
    report = services.pods_reconcile(actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    assert pod.status == Pod.Status.PAUSED, pod.last_error
    assert report["hosts"]["local"]["changed"] == {pod_id: Pod.Status.PAUSED}
    assert "without a user action; volumes kept" in pod.last_error
    assert len(pod_volumes(docker_client, pod_id)) == 8
    # Reconcile measured nothing: the sizes are the ones provisioning measured, as they were.
    assert list(PodVolume.objects.filter(pod=pod).values_list("size_bytes", "measured_at")) == sizes_before
    assert PodVolume.objects.filter(pod=pod, exists=True).count() == 8


def test_a_hanging_second_host_does_not_delay_the_first_hosts_reconcile(
    docker_client, new_pod_id, pods_settings, silent_host
):
    pods_settings.DOCKER_TIMEOUT_SECONDS = 3
    # Named to come first: taken one after the other, the hanging host would hold up the local one.
    hung = DockerHost.objects.create(name="a-hung", base_url=silent_host.url)
    local_pod, stranded = new_pod_id(), new_pod_id()
    services.pod_provision(pod_id=local_pod, actor="test")
    Pod.objects.create(pod_id=stranded, host=hung, image="img", status=Pod.Status.RUNNING)
    docker_client.api.kill(container_name(local_pod))

    report = services.pods_reconcile(actor="test")

    assert Pod.objects.get(pod_id=local_pod).status == Pod.Status.PAUSED
    stranded_pod = Pod.objects.get(pod_id=stranded)
    assert stranded_pod.status == Pod.Status.UNKNOWN
    assert "Docker host 'a-hung'" in stranded_pod.last_error
    assert report["hosts"]["a-hung"]["reachable"] is False and report["hosts"]["local"]["reachable"] is True
    # The local host's answer was applied while the hanging host was still being waited for.
    events = AuditEvent.objects.filter(action=AuditAction.POD_RECONCILE)
    assert events.get(target_id=local_pod).pk < events.get(target_id=stranded).pk
    hosts = {host.name: host for host in DockerHost.objects.all()}
    assert hosts["local"].checked_at < hosts["a-hung"].checked_at
    assert hosts["a-hung"].reachable is False and "a-hung" in hosts["a-hung"].last_error


def _pods_without_containers(count: int, host: DockerHost) -> list[str]:
    """Running pods whose containers and volumes are gone: every one of them changes."""
    made = []
    for _ in range(count):
        pod = Pod.objects.create(pod_id=parts.pod_id("q"), host=host, image="img", status="running")
        services._volume_rows_ensure(pod)
        made.append(pod.pod_id)
    PodVolume.objects.filter(pod__pod_id__in=made).update(exists=True)
    return made


def test_reconcile_makes_the_same_queries_for_ten_pods_as_for_sixty(own_dockerd):
    host = services.host_default()
    counts = []
    for count in (10, 60):
        made = _pods_without_containers(count, host)
        with CaptureQueriesContext(connection) as queries:
            report = services.pods_reconcile(actor="test")
        assert set(report["hosts"]["local"]["changed"]) == set(made)
        assert not PodVolume.objects.filter(pod__pod_id__in=made, exists=True).exists()
        counts.append(len(queries) - _orphan_queries(len(report["hosts"]["local"]["orphans"])))
    # Queries: the default host (get_or_create reads it), the hosts; for the local host: its
    # row updated, its watched pods read; the batch of pods that changed: savepoint, lock,
    # update, audit events, release; its volume rows read, those gone updated (one batch);
    # its orphans: savepoint, last sizes read, old rows deleted, release (plus the lookups
    # and inserts of `_orphan_queries`, subtracted above: they depend on what else lies on
    # this dockerd); the interrupted pods read; the backups whose worker died read (none here).
    assert counts == [2 + 2 + 5 + 2 + 4 + 1 + 1] * 2, counts


def _orphan_queries(orphans: int) -> int:
    """Every `pinacle-vol-*` volume on the dockerd is an orphan to this test's database (its
    pods have none): two lookups (pods, work in flight) per batch of volumes listed, and the
    orphan rows inserted a batch at a time (SQLite's limit on parameters may make it smaller)."""
    fields = [f for f in OrphanVolume._meta.concrete_fields if not f.primary_key]
    per_insert = min(BATCH, connection.ops.bulk_batch_size(fields, [None] * max(orphans, 1)))
    return 2 * -(-orphans // LOOKUP_BATCH) + -(-orphans // per_insert)

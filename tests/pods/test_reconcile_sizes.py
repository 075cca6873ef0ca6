"""Volume sizes on a budget, on the real dockerd: the size schedule takes the sizes looked at
longest ago first, a volume the budget cuts off goes to the back of the queue (keeping its
last size), a hanging host does not hold the others, and the pages say how old each size is."""

from datetime import timedelta

import docker.errors
import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from apps.audit import operations
from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.pods import docker_engine, services
from apps.pods.docker_engine import HELPER_LABEL
from apps.pods.models import VOLUME_MOUNTS, DockerHost, OrphanVolume, Pod, PodVolume, volume_docker_name
from apps.pods.services.sizes import orphans_to_measure, pods_measure, volumes_to_measure
from tests import parts
from tests.fakes.silent_server import SilentServer
from tests.pods.conftest import remove_pod_objects

pytestmark = [pytest.mark.django_db]

FILL = "dd if=/dev/zero of=/m/{name}/fill bs=1000 count={kib} 2>/dev/null"


@pytest.fixture
def pods_on_disk(docker_client, pods_settings):
    """Running pods (rows) whose eight volumes exist on the dockerd, volume i of a pod holding
    i × 10 kB of zeros; no container is needed to measure them."""
    made = []

    def make(count: int) -> list[Pod]:
        pods = []
        for _ in range(count):
            pod = Pod.objects.create(
                pod_id=parts.pod_id("m"), host=services.host_default(), image="img", status="running"
            )
            made.append(pod.pod_id)
            services._volume_rows_ensure(pod)
            mounts = {}
            for name in VOLUME_MOUNTS:
                docker_client.volumes.create(name=volume_docker_name(pod.pod_id, name))
                mounts[volume_docker_name(pod.pod_id, name)] = {"bind": f"/m/{name}", "mode": "rw"}
            script = " && ".join(FILL.format(name=name, kib=10 * (i + 1)) for i, name in enumerate(VOLUME_MOUNTS))
            docker_client.containers.run("pinacle-base:test", ["sh", "-c", script], volumes=mounts, remove=True)
            PodVolume.objects.filter(pod=pod).update(exists=True, size_bytes=1)
            pods.append(pod)
        return pods

    yield make
    for pod_id in made:
        remove_pod_objects(docker_client, pod_id)


def helpers_left(docker_client, pods: list[Pod]) -> list[str]:
    """Size helpers still there that measured these pods' volumes (their command names them):
    another xdist worker's or panel's helpers on the same daemon come and go meanwhile."""
    rows = docker_client.api.containers(all=True, filters={"label": HELPER_LABEL})
    return [row["Id"] for row in rows if any(pod.pod_id in row.get("Command", "") for pod in pods)]


@pytest.mark.docker
def test_a_helper_that_just_exited_is_not_taken_for_one_a_dead_worker_left(docker_client, pod_image, settings):
    """Another worker's helper, exited, its output not read yet: not removed; an hour on it is."""
    from apps.pods.docker_engine import DockerEngine

    helper = docker_client.containers.run(pod_image, ["true"], labels={HELPER_LABEL: "measure"}, detach=True)
    try:
        helper.wait(timeout=30)
        engine = DockerEngine(host_name="local", base_url=settings.DOCKER_HOST)
        engine.helpers_remove()
        helper.reload()  # still there
        with time_machine.travel(timezone.now() + timedelta(seconds=docker_engine.HELPER_STALE_SECONDS + 60)):
            engine.helpers_remove()
        with pytest.raises(docker.errors.NotFound):
            helper.reload()
    finally:
        try:
            helper.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.mark.docker
def test_sizes_age_and_are_re_measured_oldest_first(docker_client, pods_on_disk):
    pod_a, pod_b = pods_on_disk(2)
    volumes = list(PodVolume.objects.filter(pod__in=[pod_a, pod_b]).order_by("pk"))
    now = timezone.now()
    # Every size is stale, each by a different age; a shuffled order of ages.
    ages = [(n * 7) % 16 for n in range(16)]
    for volume, hours in zip(volumes, ages, strict=True):
        PodVolume.objects.filter(pk=volume.pk).update(measured_at=now - timedelta(hours=hours + 1))
    oldest_first = [v.pk for v, _ in sorted(zip(volumes, ages, strict=True), key=lambda pair: -pair[1])]

    report = pods_measure(actor="test", batch_size=4)

    assert report["hosts"]["local"] == {"measured": 16, "cut_off": 0, "error": ""}
    measured = {v.pk: v for v in PodVolume.objects.filter(pk__in=oldest_first)}
    for i, name in enumerate(VOLUME_MOUNTS):
        for pod in (pod_a, pod_b):
            row = next(v for v in measured.values() if v.pod_id == pod.pk and v.name == name)
            # du -sb: the file's bytes and the folders' own entries.
            assert 10_000 * (i + 1) <= row.size_bytes < 10_000 * (i + 1) + 16_384, (name, row.size_bytes)
            assert row.measured_at > now
    # Four batches, one helper each, taken oldest first: each batch measured no earlier
    # than the one before it, and never all at the same moment.
    times = [measured[pk].measured_at for pk in oldest_first]
    batches = [max(times[n : n + 4]) for n in range(0, 16, 4)]
    assert times == sorted(times) and batches[0] < batches[-1]
    assert helpers_left(docker_client, [pod_a, pod_b]) == []


def slow_disk_for(volume: str) -> str:
    """Fault injection: the helper's script, with `volume` on a disk that never answers (its
    `du` sleeps), every other volume walked as usual."""
    hang = f'du() {{ for arg in "$@"; do case "$arg" in {volume}/*) sleep 600;; esac; done; command du "$@"; }}'
    return f"{hang}; {docker_engine.MEASURE_SCRIPT}"


@pytest.mark.docker
def test_a_volume_the_budget_cuts_off_keeps_its_size_and_goes_to_the_back(
    docker_client, pods_on_disk, pods_settings, monkeypatch
):
    (pod,) = pods_on_disk(1)
    order = list(PodVolume.objects.filter(pod=pod).order_by("pk"))
    now = timezone.now()
    for n, volume in enumerate(order):
        PodVolume.objects.filter(pk=volume.pk).update(measured_at=now - timedelta(hours=20 - n))
    slow = order[3]
    pods_settings.POD_SIZE_BUDGET_SECONDS = 3
    monkeypatch.setattr(docker_engine, "MEASURE_SCRIPT", slow_disk_for(slow.docker_name))

    report = pods_measure(actor="test")

    assert report["hosts"]["local"] == {"measured": 3, "cut_off": 1, "error": ""}
    rows = {v.pk: v for v in PodVolume.objects.filter(pod=pod)}
    assert all(rows[v.pk].measured_at > now for v in order[:3])
    assert rows[slow.pk].size_bytes == 1 and rows[slow.pk].measured_at < now  # its last size, its age
    assert rows[slow.pk].size_tried_at > now
    assert all(rows[v.pk].size_tried_at is None and rows[v.pk].size_bytes == 1 for v in order[4:])
    assert helpers_left(docker_client, [pod]) == []  # killed at the budget, and removed

    monkeypatch.undo()
    pods_settings.POD_SIZE_BUDGET_SECONDS = 60
    queue = [pk for pk, _ in volumes_to_measure(host=pod.host, before=timezone.now(), limit=8)]
    assert queue == [v.pk for v in order[4:]] + [v.pk for v in order[:3]] + [slow.pk]
    pods_measure(actor="test", batch_size=1)
    rows = {v.pk: v for v in PodVolume.objects.filter(pod=pod)}
    assert max(rows[pk].measured_at for pk in queue[:-1]) < rows[slow.pk].measured_at
    assert rows[slow.pk].size_bytes >= 40_000


@pytest.mark.docker
def test_a_hanging_host_does_not_hold_the_size_run_of_the_others(docker_client, pods_on_disk, pods_settings):
    (pod,) = pods_on_disk(1)
    server = SilentServer()
    try:
        DockerHost.objects.create(name="a-hung", base_url=server.url)
        pods_settings.POD_SIZE_BUDGET_SECONDS = 5
        pods_settings.DOCKER_TIMEOUT_SECONDS = 30
        finished = operations.run_now(Kind.PODS_MEASURE, actor="test")
    finally:
        server.close()

    assert finished.status == Operation.Status.SUCCEEDED
    hosts = finished.result["hosts"]
    assert hosts["local"]["measured"] == 8 and hosts["local"]["error"] == ""
    assert hosts["a-hung"]["measured"] == 0 and "'a-hung'" in hosts["a-hung"]["error"]
    assert finished.result["summary"].startswith("8 volume sizes measured on 2 hosts within 5 s each")
    assert "not finished on a-hung" in finished.result["summary"]
    assert not PodVolume.objects.filter(pod=pod, size_bytes=1).exists()


def test_a_snapshot_counts_as_a_measurement_and_only_quiet_pods_are_measured():
    host = DockerHost.objects.create(name="local", base_url="unix:///var/run/docker.sock")
    quiet = Pod.objects.create(pod_id="quiet", host=host, image="img", status=Pod.Status.RUNNING)
    busy = Pod.objects.create(pod_id="busy", host=host, image="img", status=Pod.Status.PAUSED)
    stopped = Pod.objects.create(pod_id="stopped", host=host, image="img", status=Pod.Status.STOPPED)
    for pod in (quiet, busy, stopped):
        services._volume_rows_ensure(pod)
    PodVolume.objects.update(exists=True)
    operations.request(Kind.POD_STOP, "busy", actor="someone")
    now = timezone.now()
    names = {v.name: v.pk for v in quiet.volumes.all()}
    looked = {
        "workspace": {},  # never measured nor tried: first
        "home": {"measured_at": now - timedelta(hours=3)},
        "root": {"measured_at": now - timedelta(hours=1), "size_tried_at": now - timedelta(hours=5)},
        "etc": {"measured_at": now - timedelta(hours=5), "size_tried_at": now - timedelta(hours=2)},  # cut off
        "usr-local": {"measured_at": now - timedelta(minutes=30)},  # by its last stop's snapshot
    }
    for name, times in looked.items():
        PodVolume.objects.filter(pk=names[name]).update(**times)
    PodVolume.objects.filter(pk__in=[names["opt"], names["var"], names["srv"]]).update(exists=False)

    queue = [pk for pk, _ in volumes_to_measure(host=host, before=now, limit=100)]

    assert queue == [names["workspace"], names["home"], names["etc"], names["root"], names["usr-local"]]


def test_pages_show_how_old_each_size_is(staff_client):
    host = DockerHost.objects.create(name="local", base_url="unix:///var/run/docker.sock")
    pod = Pod.objects.create(pod_id="aged", host=host, image="img", status=Pod.Status.RUNNING)
    services._volume_rows_ensure(pod)
    start = timezone.now()
    PodVolume.objects.filter(pod=pod).update(exists=True, size_bytes=2048, measured_at=start)
    PodVolume.objects.filter(pod=pod, name="workspace").update(measured_at=start - timedelta(hours=1))
    PodVolume.objects.filter(pod=pod, name="srv").update(measured_at=None, size_bytes=None)

    with time_machine.travel(start + timedelta(hours=2, minutes=5), tick=False):
        listed = staff_client.get(reverse("pods:list")).content.decode()
        detail = staff_client.get(reverse("pods:detail", args=["aged"])).content.decode()

    # The list: the oldest size among the bytes shown, and how many volumes have one.
    assert "measured 3 h 5 min ago, 7/8 volumes" in listed
    # The detail: each volume's own age; the one never measured says so.
    assert detail.count("2 h 5 min ago") == 6 and detail.count("3 h 5 min ago") == 1
    assert "not measured yet" in detail


@pytest.mark.docker
def test_orphaned_volumes_are_measured_once_the_pods_volumes_are(docker_client, pods_settings):
    pods_settings.POD_SIZE_BUDGET_SECONDS = 30
    name = f"pinacle-vol-{parts.pod_id('o')}-workspace"
    docker_client.volumes.create(name=name)
    try:
        docker_client.containers.run(
            pods_settings.POD_IMAGE, ["sh", "-c", FILL.format(name="v", kib=20)], volumes={name: {"bind": "/m/v"}},
            remove=True,
        )  # fmt: skip
        services.pods_reconcile(actor="test")
        orphan = OrphanVolume.objects.get(docker_name=name)
        assert orphan.size_bytes is None
        report = pods_measure(actor="test")
        orphan.refresh_from_db()
        assert 20_000 <= orphan.size_bytes < 40_000  # du -sb: the file and its folders
        assert report["hosts"]["local"]["measured"] >= 1
        # Measured once: a later run looks at it no more (its size stays in the leak report).
        # Other workers' volumes on the shared dockerd are orphans here too, some not measured.
        assert name not in [left for _, left in orphans_to_measure(host=orphan.host, tried=set(), limit=100_000)]
    finally:
        docker_client.volumes.get(name).remove(force=True)

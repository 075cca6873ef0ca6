"""Several Docker hosts, on a real second dockerd: pods live only on the host they were
placed on; a host that crashes (SIGKILL) marks its pods unknown and nothing is deleted,
and they come back with every byte when it does; a daemon dying in the middle of a
stop-with-snapshot keeps the volumes and the retry finishes; a container or volumes
removed behind the panel's back do not stop a stop or a deprovision.

The second daemon has its own data-root, exec-root and socket under /tmp (see
`tests.parts.SecondDockerd`) and is removed with everything in it at the end."""

import threading
import time
from pathlib import Path

import pytest

from apps.audit.names import Kind
from apps.audit.operations import request
from apps.pods import services
from apps.pods.models import VOLUME_MOUNTS, DockerHost, IllegalTransition, OrphanVolume, Pod, Snapshot, container_name
from apps.pods.models import volume_docker_name as volume_name
from apps.pods.stores import files as file_store
from controlpanel.errors import PanelError, Unreachable
from tests import parts
from tests.pods import conftest as pods_conftest
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, pod_volumes, run_in
from tests.reliability.pod_files import digests, file_sizes, lost_bytes

pods_settings = pods_conftest.pods_settings

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

# Enough bytes in one volume that streaming it takes a visible while (the daemon is killed then).
BIG_MIB = 16
# The store's pause per chunk (the engine sends ~32 KiB chunks) of a big volume: a few seconds.
SLOW_CHUNK_SECONDS = 0.005


def big_file(mount: str) -> str:
    return f"dd if=/dev/urandom of={mount}/big.bin bs=1M count={BIG_MIB} 2>/dev/null"


def slow_store_for(monkeypatch, volume: str) -> None:
    """A slow snapshot store (think S3 across an ocean) for one volume's archive only."""
    original_write = file_store._FileWriter.write

    def slow_write(self, chunk: bytes) -> None:
        if self.path.name == f"{volume}.tar":
            time.sleep(SLOW_CHUNK_SECONDS)
        original_write(self, chunk)

    monkeypatch.setattr(file_store._FileWriter, "write", slow_write)


@pytest.fixture(scope="module")
def second_dockerd(docker_client, pod_image):
    daemon = parts.SecondDockerd()
    try:
        daemon.start()
        daemon.image_copy_from(docker_client, pod_image)
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def hosts(second_dockerd, pods_settings, settings):
    """Host rows `local` (the main daemon) and `second`; the second daemon up (a test that
    failed while it was down leaves it down)."""
    second_dockerd.start()
    # An engine call to a dead daemon must fail in seconds, not a minute.
    settings.DOCKER_TIMEOUT_SECONDS = 5
    return services.host_default(), DockerHost.objects.create(name="second", base_url=second_dockerd.base_url)


@pytest.fixture
def new_pod_id(docker_client, second_dockerd, hosts):
    """Unique pod ids; their containers and volumes are removed from both daemons at the end."""
    made = []

    def make() -> str:
        pod_id = parts.pod_id("h")
        made.append(pod_id)
        return pod_id

    yield make
    # A daemon left down is wiped whole when the module ends.
    clients = [docker_client] + ([second_dockerd.client()] if second_dockerd.running else [])
    for client in clients:
        for pod_id in made:
            pods_conftest.remove_pod_objects(client, pod_id)


def volumes_on_disk(daemon: parts.SecondDockerd, pod_id: str) -> list[str]:
    """The pod's volume folders in the daemon's data-root: readable while it is down."""
    return sorted(p.name for p in (daemon.data_root / "volumes").glob(f"{volume_name(pod_id, '')}*") if p.is_dir())


def pod_with_data(client, pod_id: str, *, host_name: str, script: str = WRITE_SCRIPT):
    services.pod_provision(pod_id=pod_id, actor="test", host_name=host_name)
    run_in(client, pod_id, script)
    return listing(client, pod_id), file_sizes(client, pod_id)


def test_pods_live_only_on_the_host_they_were_placed_on(docker_client, second_dockerd, new_pod_id):
    second = second_dockerd.client()
    on_second, on_local = new_pod_id(), new_pod_id()

    services.pod_provision(pod_id=on_second, actor="test", host_name="second")
    services.pod_provision(pod_id=on_local, actor="test", host_name="local")

    assert Pod.objects.get(pod_id=on_second).host.name == "second"
    assert container_exists(second, on_second) and len(pod_volumes(second, on_second)) == 8
    assert not container_exists(docker_client, on_second) and pod_volumes(docker_client, on_second) == []
    assert container_exists(docker_client, on_local) and len(pod_volumes(docker_client, on_local)) == 8
    assert not container_exists(second, on_local) and pod_volumes(second, on_local) == []

    report = services.pods_reconcile(actor="test")

    assert report["hosts"]["local"]["reachable"] is True
    assert report["hosts"]["second"]["reachable"] is True
    for host in ("local", "second"):
        ours = [name for name in report["hosts"][host]["orphans"] if on_second in name or on_local in name]
        assert ours == [], f"{host} reports our pods' volumes as orphans"
    assert not OrphanVolume.objects.filter(pod_id__in=[on_second, on_local]).exists()
    assert set(Pod.objects.values_list("status", flat=True)) == {Pod.Status.RUNNING}
    assert DockerHost.objects.get(name="second").reachable is True


def test_a_crashed_host_marks_its_pods_unknown_deletes_nothing_and_they_come_back(
    docker_client, second_dockerd, new_pod_id, fault_point
):
    pod_id, local_pod = new_pod_id(), new_pod_id()
    before, sizes = pod_with_data(second_dockerd.client(), pod_id, host_name="second")
    services.pod_provision(pod_id=local_pod, actor="test", host_name="local")
    problems: list[str] = []

    second_dockerd.stop(kill=True)  # a crash: no chance to tidy up
    report = services.pods_reconcile(actor="test")

    pod = Pod.objects.get(pod_id=pod_id)
    if report["hosts"]["second"]["reachable"] is not False or DockerHost.objects.get(name="second").reachable:
        problems.append(f"the dead host counts as reachable: {report['hosts']['second']}")
    if pod.status != Pod.Status.UNKNOWN or "Docker host 'second' unreachable" not in pod.last_error:
        problems.append(f"the pod on the dead host is {pod.status} ({pod.last_error!r}), not unknown with the reason")
    if Pod.objects.get(pod_id=local_pod).status != Pod.Status.RUNNING:
        problems.append("the pod on the healthy host changed")
    if not container_exists(docker_client, local_pod) or len(pod_volumes(docker_client, local_pod)) != 8:
        problems.append("the pod on the healthy host lost its container or volumes")
    if len(volumes_on_disk(second_dockerd, pod_id)) != 8:
        problems.append(f"volumes on the dead host's disk: {volumes_on_disk(second_dockerd, pod_id)}")
    for action, verb in ((services.pod_stop, "stopping"), (services.pod_start, "starting")):
        try:
            action(pod_id=pod_id, actor="test")
            problems.append(f"{verb} a pod on a dead host was not refused")
        except IllegalTransition as exc:
            if f"is unknown; it cannot go to {verb}" not in str(exc):
                problems.append(f"{verb} was refused without saying why: {exc}")
    try:
        request(Kind.POD_STOP, pod_id, actor="test")
        problems.append("a stop request for a pod on a dead host was accepted")
    except PanelError as exc:
        if "is unknown" not in str(exc):
            problems.append(f"the stop request was refused without saying why: {exc}")

    try:
        services.pod_deprovision(pod_id=pod_id, actor="test")
        problems.append("deprovisioning a pod on a dead host was not refused")
    except Unreachable as exc:
        if "'second' unreachable" not in str(exc):
            problems.append(f"deprovision was refused without naming the host: {exc}")
    if Pod.objects.get(pod_id=pod_id).status != Pod.Status.UNKNOWN:
        problems.append(f"a refused deprovision left the pod {Pod.objects.get(pod_id=pod_id).status}")

    second_dockerd.start()  # the host comes back
    second = second_dockerd.client()
    if len(pod_volumes(second, pod_id)) != 8:
        problems.append(f"after the restart the host holds {pod_volumes(second, pod_id)}")
    report = services.pods_reconcile(actor="test")
    pod = Pod.objects.get(pod_id=pod_id)
    after = None
    if report["hosts"]["second"]["reachable"] is not True:
        problems.append("the host is back but reconcile does not see it")
    if pod.status == Pod.Status.PAUSED:
        # Without a restart policy its container stayed stopped when the daemon came back.
        if "volumes kept" not in pod.last_error:
            problems.append(f"paused without saying the volumes are kept: {pod.last_error!r}")
        services.pod_start(pod_id=pod_id, actor="test")
    elif pod.status != Pod.Status.RUNNING:
        problems.append(f"the pod did not come back: {pod.status} ({pod.last_error!r})")
    if Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING:
        after = listing(second, pod_id)
        if after != before:
            problems.append(f"the files differ after the host came back: {sorted(set(before) ^ set(after))[:6]}")

    fault_point(
        "docker",
        "host killed (SIGKILL) with a pod on it; reconcile while down and after it is back",
        survived=not problems,
        lost_bytes=lost_bytes(sizes, digests(before), after and digests(after)),
    )
    assert not problems


def test_daemon_killed_while_the_snapshot_streams_keeps_the_volumes_and_the_retry_finishes(
    second_dockerd, new_pod_id, settings, monkeypatch, fault_point
):
    pod_id = new_pod_id()
    before, sizes = pod_with_data(
        second_dockerd.client(), pod_id, host_name="second", script=WRITE_SCRIPT + big_file("/srv")
    )
    store = Path(settings.SNAPSHOT_STORE_URL.removeprefix("file://")) / pod_id
    # srv is streamed last: once the other seven are in the store it streams alone.
    others = [f"{name}.tar" for name in VOLUME_MOUNTS if name != "srv"]
    problems: list[str] = []
    killed = threading.Event()

    def kill_while_srv_streams_alone() -> None:
        """Watch from outside: every other volume is in the store, srv on its way."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for folder in store.glob("*"):
                try:
                    streaming = (folder / "srv.tar.partial").stat().st_size > 0
                except FileNotFoundError:
                    continue
                if streaming and all((folder / name).exists() for name in others):
                    second_dockerd.stop(kill=True)
                    killed.set()
                    return
            time.sleep(0.005)

    slow_store_for(monkeypatch, "srv")
    watcher = threading.Thread(target=kill_while_srv_streams_alone, daemon=True)
    watcher.start()
    try:
        services.pod_stop(pod_id=pod_id, actor="test")
        problems.append("the stop finished although its daemon died")
    except PanelError as exc:
        if "'second'" not in str(exc):
            problems.append(f"the error does not name the host: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - anything else is a traceback where a person needs one line
        problems.append(f"a raw {type(exc).__name__} escaped instead of a clear error: {exc}")
    watcher.join(timeout=65)
    monkeypatch.undo()
    assert killed.is_set(), "srv was never seen streaming alone; the daemon was not killed"

    pod = Pod.objects.get(pod_id=pod_id)
    snapshot = Snapshot.objects.filter(pod=pod).order_by("-id").first()
    # Before verification the volumes must be kept (paused); after it the stop stays `stopping`.
    if pod.status == Pod.Status.PAUSED:
        if snapshot is None or snapshot.status != Snapshot.Status.FAILED:
            problems.append(f"paused, but the snapshot is {snapshot and snapshot.status}, not failed")
        if len(volumes_on_disk(second_dockerd, pod_id)) != 8:
            problems.append(f"volumes on disk while down: {volumes_on_disk(second_dockerd, pod_id)}")
    elif pod.status != Pod.Status.STOPPING:
        problems.append(f"the pod is {pod.status} after its daemon died mid-stop")
    if not pod.last_error:
        problems.append("the pod does not say what went wrong")

    second_dockerd.start()
    second = second_dockerd.client()
    after = None
    try:
        services.pod_stop(pod_id=pod_id, actor="test")  # the retry, from paused or stopping
        if Pod.objects.get(pod_id=pod_id).status != Pod.Status.STOPPED:
            problems.append(f"the retried stop left the pod {Pod.objects.get(pod_id=pod_id).status}")
        if pod_volumes(second, pod_id) or container_exists(second, pod_id):
            problems.append(f"the retried stop left {pod_volumes(second, pod_id)} behind")
        services.pod_start(pod_id=pod_id, actor="test")
        after = listing(second, pod_id)
        if after != before:
            problems.append(f"the restored files differ: {sorted(set(before) ^ set(after))[:6]}")
    except PanelError as exc:
        problems.append(f"the retry failed: {type(exc).__name__}: {exc}")

    fault_point(
        "docker",
        f"daemon killed (SIGKILL) while a volume streamed into the snapshot; pod left {pod.status}",
        survived=not problems,
        lost_bytes=lost_bytes(sizes, digests(before), after and digests(after)),
    )
    assert not problems


def test_a_volume_streaming_longer_than_the_docker_timeout_does_not_fail_the_stop(
    second_dockerd, new_pod_id, settings, monkeypatch
):
    pod_id = new_pod_id()
    second = second_dockerd.client()
    before, _sizes = pod_with_data(second, pod_id, host_name="second", script=WRITE_SCRIPT + big_file("/workspace"))
    usual = settings.DOCKER_TIMEOUT_SECONDS
    settings.DOCKER_TIMEOUT_SECONDS = 1
    slow_store_for(monkeypatch, "workspace")  # ≈ 2.5 s to stream, the engine answers in time

    services.pod_stop(pod_id=pod_id, actor="test")

    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    monkeypatch.undo()
    # The start only proves the bytes: under a loaded run a container start alone can take
    # the engine more than the 1 s the stop was held to.
    settings.DOCKER_TIMEOUT_SECONDS = usual
    services.pod_start(pod_id=pod_id, actor="test")
    assert listing(second, pod_id) == before


def test_a_pod_whose_container_was_removed_behind_the_panel_still_stops_and_deprovisions(
    second_dockerd, new_pod_id, fault_point
):
    second = second_dockerd.client()
    pod_id = new_pod_id()
    before, sizes = pod_with_data(second, pod_id, host_name="second")
    second.api.remove_container(container_name(pod_id), force=True)  # `docker rm -f`: named volumes stay
    problems: list[str] = []
    after = None

    try:
        # The snapshot is read through a fresh container made for the eight volumes.
        services.pod_stop(pod_id=pod_id, actor="test")
        if pod_volumes(second, pod_id) or container_exists(second, pod_id):
            problems.append("the stop left volumes or a container behind")
        services.pod_start(pod_id=pod_id, actor="test")
        after = listing(second, pod_id)
        if after != before:
            problems.append(f"the restored files differ: {sorted(set(before) ^ set(after))[:6]}")
        second.api.remove_container(container_name(pod_id), force=True)  # gone again
        result = services.pod_deprovision(pod_id=pod_id, actor="test")
        if len(result["volumes_removed"]) != 8 or pod_volumes(second, pod_id):
            problems.append(f"deprovision removed {result['volumes_removed']}, left {pod_volumes(second, pod_id)}")
    except PanelError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")

    fault_point(
        "docker",
        "container removed behind the panel (docker rm -f) before stop and before deprovision",
        survived=not problems,
        lost_bytes=lost_bytes(sizes, digests(before), after and digests(after)),
    )
    assert not problems
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.DEPROVISIONED


def test_deprovisioning_a_pod_whose_volumes_are_already_gone_succeeds_and_removes_nothing(
    second_dockerd, new_pod_id, fault_point
):
    second = second_dockerd.client()
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test", host_name="second")
    second.api.remove_container(container_name(pod_id), force=True)
    for name in VOLUME_MOUNTS:
        second.api.remove_volume(volume_name(pod_id, name))
    problems: list[str] = []

    try:
        result = services.pod_deprovision(pod_id=pod_id, actor="test")
        if result["volumes_removed"] != []:
            problems.append(f"it reports removing {result['volumes_removed']}")
    except PanelError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    pod = Pod.objects.get(pod_id=pod_id)
    if pod.status != Pod.Status.DEPROVISIONED:
        problems.append(f"the pod is {pod.status} ({pod.last_error!r})")

    fault_point(
        "docker",
        "container and volumes removed behind the panel before deprovision",
        survived=not problems,
        lost_bytes=0,
    )
    assert not problems
    assert not pod.volumes.filter(exists=True).exists()

"""One source for a pod's sizes, with its age (issue #23): a pod just provisioned or started
is measured by the same helper the confirmation pages use, and the chart gets a sample after
a restore, so the pod page, the confirmations and the chart agree. Where the volumes are this
machine's plain folders the panel lists them itself, and counts what the helper would."""

import pytest

from apps.audit.models import Operation, StorageSample
from apps.pods import services
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import DOMAIN, Pod, PodVolume
from apps.pods.services import sizes, volume_marks
from apps.pods.services.hosts import engine_for
from apps.pods.services.previews import pod_preview
from apps.pods.services.volume_marks import folder_sizes
from tests.pods.conftest import run_in

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def page_sizes(pod_id: str) -> dict[str, int | None]:
    return dict(PodVolume.objects.filter(pod__pod_id=pod_id).values_list("docker_name", "size_bytes"))


def test_provision_and_start_measure_what_the_confirmation_measures(docker_client, new_pod_id):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    assert None not in page_sizes(pod_id).values()  # not "not measured yet" on a new pod's page
    run_in(docker_client, pod_id, "dd if=/dev/urandom of=/workspace/blob bs=1024 count=5120 2>/dev/null")
    services.pod_stop(pod_id=pod_id, actor="test")
    services.pod_start(pod_id=pod_id, actor="test")
    shown = page_sizes(pod_id)
    confirmed = {item.name: item.bytes for item in pod_preview(pod_id=pod_id, action="deprovision").delete}
    assert {name: shown[name] for name in confirmed} == confirmed  # the page and the confirmation agree
    assert shown[f"pinacle-vol-{pod_id}-workspace"] >= 5 * 1024 * 1024
    # The chart's last sample, taken after the restore, holds the restored pod, not 0 B.
    last = StorageSample.objects.filter(domain=DOMAIN).order_by("-sampled_at", "-pk").first()
    assert last.total_bytes >= sum(shown.values())


def test_a_start_whose_size_helper_fails_still_starts_and_keeps_the_last_sizes(
    docker_client, new_pod_id, settings, monkeypatch
):
    """The sizes are measured beside the container's start: a helper that cannot run (its
    image gone) leaves the sizes to the schedule, with their age, and never fails the start."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")
    before = dict(PodVolume.objects.filter(pod__pod_id=pod_id).values_list("docker_name", "measured_at"))
    settings.POD_IMAGE = "pinacle-no-such-image:gone"  # the size helper's image; the pod keeps its own
    monkeypatch.setattr(sizes, "folder_sizes", lambda engine, names: None)  # not listed from here
    operation = Operation.objects.create(kind="pod.start", target_type="pod", target_id=pod_id, actor_name="t")
    services.pod_start(pod_id=pod_id, actor="test", operation=operation)
    assert docker_client.containers.get(f"pinacle-pod-{pod_id}").status == "running"
    assert dict(PodVolume.objects.filter(pod__pod_id=pod_id).values_list("docker_name", "measured_at")) == before
    operation.refresh_from_db()
    assert "volume sizes not measured now" in operation.log


def test_a_start_whose_size_helper_breaks_unexpectedly_still_starts(docker_client, new_pod_id, monkeypatch):
    """Not only the engine's refusals: whatever the measurement raises on its thread leaves the
    sizes to the schedule and the started pod running."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    services.pod_stop(pod_id=pod_id, actor="test")

    def broken(self, **kwargs):
        raise KeyError("DockerRootDir")

    monkeypatch.setattr(DockerEngine, "volumes_measure", broken)
    monkeypatch.setattr(sizes, "folder_sizes", lambda engine, names: None)
    operation = Operation.objects.create(kind="pod.start", target_type="pod", target_id=pod_id, actor_name="t")
    services.pod_start(pod_id=pod_id, actor="test", operation=operation)
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    operation.refresh_from_db()
    assert "volume sizes not measured now (KeyError: 'DockerRootDir')" in operation.log


# Every kind of entry du meets: nested folders, a file with two links (counted once), a link to
# a file outside the volume (its own size, never its target's), a FIFO, a sparse file (its
# apparent size), an empty file.
ENTRIES = (
    "dd if=/dev/urandom of=/workspace/blob bs=1024 count=3000 2>/dev/null && ln /workspace/blob /workspace/again"
    " && mkdir -p /home/dev/a/b/c && printf seven > /home/dev/a/b/c/note && : > /home/dev/a/empty"
    " && ln -s /etc/passwd /srv/link && mkfifo /srv/pipe && dd if=/dev/zero of=/opt/sparse bs=1 count=1"
    " seek=9999999 2>/dev/null"
)


def test_sizes_listed_from_this_machine_are_what_the_size_helper_measures(docker_client, new_pod_id, settings):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, ENTRIES)
    names = [volume.docker_name for volume in PodVolume.objects.filter(pod__pod_id=pod_id)]
    engine = engine_for(Pod.objects.get(pod_id=pod_id).host)
    listed = folder_sizes(engine, names)
    assert listed == engine.volumes_measure(names=names, image=settings.POD_IMAGE, seconds=10).sizes
    workspace = listed[f"pinacle-vol-{pod_id}-workspace"]
    assert 3000 * 1024 < workspace < 2 * 3000 * 1024  # the two links' bytes once
    assert listed[f"pinacle-vol-{pod_id}-opt"] > 10_000_000  # the sparse file's apparent size
    sizes.pod_sizes_measure(pod=Pod.objects.get(pod_id=pod_id))  # what a start records
    assert page_sizes(pod_id) == listed


def test_a_start_on_this_machine_measures_its_pod_without_the_size_helper(docker_client, new_pod_id, monkeypatch):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, ENTRIES)
    services.pod_stop(pod_id=pod_id, actor="test")

    def no_helper(self, **kwargs):
        raise AssertionError("the size helper ran")

    monkeypatch.setattr(DockerEngine, "volumes_measure", no_helper)
    operation = Operation.objects.create(kind="pod.start", target_type="pod", target_id=pod_id, actor_name="t")
    services.pod_start(pod_id=pod_id, actor="test", operation=operation)
    operation.refresh_from_db()
    assert "volume sizes not measured now" not in operation.log
    shown = page_sizes(pod_id)
    assert 3000 * 1024 < shown[f"pinacle-vol-{pod_id}-workspace"] < 2 * 3000 * 1024
    assert shown == folder_sizes(engine_for(Pod.objects.get(pod_id=pod_id).host), list(shown))


def test_volumes_the_panel_cannot_list_go_to_the_size_helper(docker_client, new_pod_id, settings, monkeypatch):
    """Not plain folders of the local driver (a volume with options), a volume gone, or more
    entries than listing them from here is worth: the helper's `du` measures them."""
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, "mkdir /srv/many && cd /srv/many && for n in $(seq 1 30); do : > f$n; done")
    engine = engine_for(Pod.objects.get(pod_id=pod_id).host)
    name = f"pinacle-vol-{pod_id}-tmpfs"
    docker_client.volumes.create(name, driver_opts={"type": "tmpfs", "device": "tmpfs"})
    helped = []
    measure = DockerEngine.volumes_measure

    def helper(self, **kwargs):
        helped.append(kwargs["names"])
        return measure(self, **kwargs)

    monkeypatch.setattr(DockerEngine, "volumes_measure", helper)
    try:
        assert folder_sizes(engine, [name]) is None
        assert folder_sizes(engine, [f"pinacle-vol-{pod_id}-gone"]) is None
        assert name in sizes._pod_measure(engine, [name]).sizes and helped == [[name]]
        srv = f"pinacle-vol-{pod_id}-srv"
        assert folder_sizes(engine, [srv]) is not None
        monkeypatch.setattr(volume_marks, "MOST_SIZE_ENTRIES", 20)
        assert folder_sizes(engine, [srv]) is None
        assert sizes._pod_measure(engine, [srv]).sizes == {
            srv: measure(engine, names=[srv], image=settings.POD_IMAGE, seconds=10).sizes[srv]
        }
        assert helped[-1] == [srv]
    finally:
        docker_client.volumes.get(name).remove(force=True)

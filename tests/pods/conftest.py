"""Pods tests run on the real dockerd; every test only touches containers and volumes
named after its own uuid pod ids, and removes them afterwards."""

import docker.errors
import pytest

from apps.pods.models import VOLUME_MOUNTS, container_name, volume_docker_name
from tests import parts

MOUNTS = list(VOLUME_MOUNTS.values())
# Docker bind-mounts these over /etc in every running container: not pod data.
DOCKER_MANAGED = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}

WRITE_SCRIPT = r"""
set -e
mkdir -p /workspace/proj/src /workspace/proj/empty/deeper /home/dev/.cache
printf 'hello pod\n' > /workspace/proj/src/a.txt
chmod 640 /workspace/proj/src/a.txt
printf '#!/bin/sh\necho hi\n' > /workspace/proj/run.sh
chmod 4755 /workspace/proj/run.sh
ln -s src/a.txt /workspace/proj/link
ln -s /nowhere/at/all /workspace/proj/dangling
dd if=/dev/urandom of=/home/dev/blob.bin bs=1024 count=200 2>/dev/null
printf 'root secret\n' > /root/.profile
chmod 600 /root/.profile
printf 'pod=yes\n' > /etc/pod.conf
mkdir -p /usr/local/bin /opt/tool /var/lib/app /srv/www/empty
printf 'tool' > /usr/local/bin/tool
chmod 755 /usr/local/bin/tool
printf 'opt' > /opt/tool/readme
printf 'state' > /var/lib/app/state.db
printf '<html>' > /srv/www/index.html
rm -f /etc/group
"""


def run_in(docker_client, pod_id: str, script: str) -> str:
    container = docker_client.containers.get(container_name(pod_id))
    result = container.exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode()


def pod_with_files(docker_client, new_pod_id, script: str = WRITE_SCRIPT) -> tuple[str, list[str]]:
    """A provisioned pod with `script` run in it, and the listing of its files to compare with."""
    from apps.pods import services

    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, script)
    return pod_id, listing(docker_client, pod_id)


def listing(docker_client, pod_id: str) -> list[str]:
    """Name, mode, type, owner and link target of every entry, plus file checksums, in all eight mounts."""
    script = (
        f"find {' '.join(MOUNTS)} -exec stat -c '%n|%a|%F|%u:%g|%N' {{}} + ; "
        f"find {' '.join(MOUNTS)} -type f -exec md5sum {{}} +"
    )
    lines = run_in(docker_client, pod_id, script).splitlines()
    return sorted(line for line in lines if not any(managed in line for managed in DOCKER_MANAGED))


def pod_volumes(docker_client, pod_id: str) -> list[str]:
    prefix = volume_docker_name(pod_id, "")
    return sorted(v.name for v in docker_client.volumes.list(filters={"name": prefix}) if v.name.startswith(prefix))


def container_exists(docker_client, pod_id: str) -> bool:
    try:
        docker_client.containers.get(container_name(pod_id))
    except docker.errors.NotFound:
        return False
    return True


@pytest.fixture
def pods_settings(settings, pod_image):
    settings.POD_IMAGE = pod_image
    settings.POD_STOP_TIMEOUT_SECONDS = 0
    # The shared test image may have been imported without a CMD.
    settings.POD_COMMAND = "/bin/sh"
    return settings


@pytest.fixture
def stream_engine(settings):
    """A dedup store's copies made by the tar-stream engine (SNAPSHOT_ENGINE=stream), for the
    tests of its own ways: one tar per volume, compared block by block, reused whole."""
    settings.SNAPSHOT_ENGINE = "stream"
    return settings


@pytest.fixture
def own_dockerd(pods_settings):
    """A dockerd of the test's own as the `local` host (`settings.DOCKER_HOST`), for a test
    whose answer depends on every volume of the daemon: on the shared one, other workers' and
    runs' volumes are orphans too, and come and go. Its volumes go with it."""
    daemon = parts.SecondDockerd()
    try:
        daemon.start()
        pods_settings.DOCKER_HOST = daemon.base_url
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def new_pod_id(docker_client, pods_settings, db):
    """Unique pod ids; whatever Docker objects they got are removed at the end."""
    made = []

    def make() -> str:
        pod_id = parts.pod_id("t")
        made.append(pod_id)
        return pod_id

    yield make
    for pod_id in made:
        remove_pod_objects(docker_client, pod_id)


def remove_pod_objects(docker_client, pod_id: str) -> None:
    """Remove the pod's container and eight volumes from one daemon, whatever is left of them."""
    try:
        docker_client.api.remove_container(container_name(pod_id), force=True)
    except docker.errors.NotFound:
        pass
    for name in VOLUME_MOUNTS:
        try:
            docker_client.api.remove_volume(volume_docker_name(pod_id, name), force=True)
        except docker.errors.NotFound:
            pass

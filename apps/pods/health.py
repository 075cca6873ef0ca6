"""What `/healthz` asks of the pods' parts: each Docker host answers and can run a container
(checked at most once a minute), and the snapshot store
takes a small write, reads it back and deletes it. Registered by PodsConfig.ready()."""

import uuid

from django.conf import settings
from django.core.cache import cache

from apps.audit.health import HealthCheck
from apps.pods.models import DockerHost
from apps.pods.services import engine_for
from apps.pods.snapshots import store_from_url
from controlpanel.errors import PanelError

# Starting a container costs about a second: one probe per host a minute is plenty.
PROBE_CACHE_SECONDS = 60


def _host_check(host: DockerHost) -> HealthCheck:
    def run() -> str:
        engine = engine_for(host)
        engine.ping()
        key = f"healthz:docker-probe:{host.name}"
        failure = cache.get(key)
        if failure is None:
            try:
                engine.container_probe(image=settings.POD_IMAGE, seconds=settings.HEALTH_TIMEOUT_SECONDS)
                failure = ""
            except PanelError as exc:
                failure = str(exc)
            cache.set(key, failure, PROBE_CACHE_SECONDS)
        if failure:
            raise PanelError(f"answers, but cannot run a container: {failure}")
        return "answers and starts containers"

    return HealthCheck(f"docker host {host.name}", run)


def docker_hosts() -> list[HealthCheck]:
    # Only names and messages leave this module: a host's URL can carry a user name.
    hosts = list(DockerHost.objects.order_by("name")) or [DockerHost(name="local", base_url=settings.DOCKER_HOST)]
    return [_host_check(host) for host in hosts]


def snapshot_store_writable() -> str:
    store = store_from_url()
    # A folder of its own per probe (no pod id starts with a dot): probes running at once
    # never delete each other's object.
    folder = f".healthz/{uuid.uuid4().hex}"
    body = b"healthz"
    store.put_small(f"{folder}/probe", body)
    try:
        if store.get_small(f"{folder}/probe") != body:
            raise RuntimeError("the snapshot store did not read back what was written")
    finally:
        store.delete_prefix(folder, reclaim=False)  # a dedup store prunes at the next purge, not per probe
    return "takes a write, reads it back"


CHECKS = [
    HealthCheck("docker hosts", expand=docker_hosts),
    HealthCheck("snapshot store", snapshot_store_writable),
]

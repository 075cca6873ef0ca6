"""The Docker hosts pods live on, and the engine that talks to each."""

from django.conf import settings

from apps.pods.docker_engine import DockerEngine
from apps.pods.models import DockerHost
from controlpanel.errors import NotFound
from controlpanel.paths import validate_id


def host_default() -> DockerHost:
    host, _ = DockerHost.objects.get_or_create(name="local", defaults={"base_url": settings.DOCKER_HOST})
    return host


def host_get(*, name: str | None) -> DockerHost:
    if not name:
        return host_default()
    validate_id(name, kind="Docker host name")
    host = DockerHost.objects.filter(name=name).first()
    if host is None:
        raise NotFound(f"Docker host {name!r} does not exist; add it in the admin first")
    return host


def engine_for(host: DockerHost) -> DockerEngine:
    return DockerEngine(host_name=host.name, base_url=host.base_url)

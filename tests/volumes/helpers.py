"""Trees laid out like the ML team's volumes, on a local folder or on the Modal fake.

A `World` writes files where the backend will read them and registers a Volume row
pointing at it, so the tests drive the same code the pages and the CLI use."""

import contextlib
import ctypes
import os
import signal
import socket
import stat
import time
import uuid
from pathlib import Path

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.volumes.models import CrossCheck, Inspection, Volume
from tests import parts

TRAIN, DEV = 4667, 1832
RESULT_FOLDERS = ("smoke", "train", "checkpoints", "tensorboard", "wandb")


class LocalWorld:
    kind = "local"

    def __init__(self, root: Path, name: str = "brain-go-brr-results"):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.url = f"local://{root}"
        self._made: set[Path] = set()

    def put(self, path: str, size: int) -> None:
        target = self.root / path
        if target.parent not in self._made:  # thousands of files share a few folders
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
        with open(target, "wb") as out:
            out.write(b"x" * size)

    def mkdir(self, path: str) -> None:
        (self.root / path).mkdir(parents=True, exist_ok=True)

    def volume(self, **fields) -> Volume:
        return Volume.objects.create(name=self.name, url=self.url, **fields)


class ModalWorld:
    kind = "modal"

    def __init__(self, server, name: str = "brain-go-brr-results"):
        self.server = server
        # A unique Modal name per test: the servicer is shared by the session.
        self.modal_name = f"{name}-{uuid.uuid4().hex[:8]}"
        server.create_volume(self.modal_name)
        self.name = name
        self.url = f"modal://{self.modal_name}?environment=main"

    def put(self, path: str, size: int) -> None:
        self.server.put_file(self.modal_name, path, size=size)

    def mkdir(self, path: str) -> None:
        self.server.put_dir(self.modal_name, path)

    def volume(self, **fields) -> Volume:
        return Volume.objects.create(name=self.name, url=self.url, **fields)


def lay_out_results(world) -> int:
    """The training outputs both plans keep on the volume; returns their bytes."""
    total = 0
    for i, folder in enumerate(RESULT_FOLDERS):
        world.put(f"{folder}/run-1/metrics.json", 100 + i)
        total += 100 + i
    world.put("checkpoints/run-1/model.pt", 5000)
    return total + 5000


def lay_out_s3_mount_plan(world) -> None:
    """Results only: the cache is read from S3 mounted at /cache."""
    lay_out_results(world)


def lay_out_volume_cache_plan(world, *, train: int = TRAIN, dev: int = DEV) -> None:
    """Results plus cache/tusz/{train,dev}/*.npz with manifest.json and _dataset_index.json."""
    lay_out_results(world)
    for i in range(train):
        world.put(f"cache/tusz/train/{i:05d}.npz", 3)
    for i in range(dev):
        world.put(f"cache/tusz/dev/{i:05d}.npz", 2)
    world.put("cache/tusz/manifest.json", 10)
    world.put("cache/tusz/_dataset_index.json", 20)


def inspect_now(volume: Volume, *, actor: str = "test") -> Inspection:
    """The CLI's path: one inspection operation run inline; its stored inspection."""
    operation = run_now(Kind.VOLUME_INSPECT, volume.name, actor=actor)
    return Inspection.objects.get(pk=operation.result["inspection_id"])


def crosscheck_now(volume: Volume, *, folder: str, s3_url: str, actor: str = "test") -> CrossCheck:
    """The CLI's path: one cross-check operation run inline; its stored result."""
    operation = run_now(Kind.VOLUME_CROSSCHECK, volume.name, actor=actor, folder=folder, s3_url=s3_url)
    return CrossCheck.objects.get(pk=operation.result["crosscheck_id"])


# -- hostile filesystems: a deadline, the kernel saying no to root, a walk hook ----------------


class Hung(BaseException):
    """The code under test was still running at its deadline (a blocking open, a lost wait).
    A BaseException, so no `except Exception` on the way turns the hang into an outcome."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail, rather than hang, when the body runs longer than `seconds`: SIGALRM interrupts a
    blocking system call (an open() on a FIFO) in the main thread. An outer timer (a per-test
    timeout) is put back afterwards."""

    def expired(signum, frame):
        raise Hung(f"still running after {seconds:g} s: something blocked")

    previous_handler = signal.signal(signal.SIGALRM, expired)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


# Capabilities that let root read and list any folder whatever its mode (capability(7)).
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capabilities(libc, data=None):
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    if data is None:
        data = (_CapData * 2)()
        call = libc.capget
    else:
        call = libc.capset
    if call(ctypes.byref(header), data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return data


@contextlib.contextmanager
def permissions_bind_root():
    """Inside this block, in this thread, the kernel refuses root a `chmod 000` folder too.

    The tests run as root, and root reads any folder whatever its mode because it holds
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. Dropping those two from this thread's
    *effective* set (they stay permitted, and are raised again on the way out) makes the
    kernel check the mode bits for root as for anyone: a real EACCES from the real
    scandir(), nothing patched. For another user nothing needs doing."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _capabilities(libc)
    before = [(d.effective, d.permitted, d.inheritable) for d in saved]
    lowered = (_CapData * 2)(*(_CapData(*values) for values in before))
    lowered[0].effective &= ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
    _capabilities(libc, lowered)
    try:
        yield
    finally:
        _capabilities(libc, (_CapData * 2)(*(_CapData(*values) for values in before)))


@contextlib.contextmanager
def locked_folder(path: Path):
    """`chmod 000` on `path` for the block (made readable again after, so tmp cleanup works)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0)
    try:
        yield path
    finally:
        os.chmod(path, 0o700)


def after_entries(monkeypatch, count: int, action) -> None:
    """A walk hook: once a local walk has yielded `count` entries, call `action(root)` and let
    the walk go on (the fault is injected between two entries; the walk itself is real)."""
    from apps.volumes.backends import LocalBackend

    original = LocalBackend.iter_entries

    def hooked(self, path: str = "", *, recursive: bool = True):
        for seen, entry in enumerate(original(self, path, recursive=recursive), 1):
            yield entry
            if seen == count:
                action(self.root)

    monkeypatch.setattr(LocalBackend, "iter_entries", hooked)


def make_special_files(folder: Path) -> list[str]:
    """A FIFO named like a file, a unix socket and (where allowed) a character device in
    `folder`; their names. Opening the FIFO for reading would block until a writer came."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "stuck.json")
    # A socket path is limited to 108 bytes and tmp paths are long: bind through the folder's fd.
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(f"/proc/self/fd/{folder_fd}/agent.sock")
    finally:
        os.close(folder_fd)  # the socket file stays behind, as a crashed server leaves it
    names = ["agent.sock", "stuck.json"]
    try:
        os.mknod(folder / "null.npz", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        # Not root, or a container without CAP_MKNOD: the FIFO and the socket remain. On CI
        # (root) the device must be there, or the test would prove less than it says.
        if parts.ON_CI:
            raise
    else:
        names.append("null.npz")
    return sorted(names)

"""restic beside a pod's volumes: a short-lived helper container on the pod's own Docker host
runs Debian's restic with the volumes mounted, so restic reads and writes folders (parent
snapshots skip unchanged files by their metadata; restores write files in parallel) instead
of a tar stream through the Docker API.

The helper's image is made by the panel, without a registry: the restic binary and the libc
it links (`ldd`), a passwd file and the CA bundle, imported with `docker import` onto each
host that lacks it, tagged by the digest of what it holds (a new restic is a new image; the
digest is kept in VAR_DIR beside the files' metadata, `_image_tag`).

Secrets never go into the container's configuration (`docker inspect` would show it): the
repository key and S3 credentials are files. On a host that is this machine they are written
into a private folder in memory (/dev/shm, mode 0700, files 0400), bind-mounted read-only and
removed with the helper; on another host, or a daemon whose containers could not read them
(userns-remap, rootless, SELinux), they are written into the created, not yet started,
container (`put_archive`, which mounts its file system first: 60-90 ms idle, 1.3-2 s under
load), gone with it. The helper shares the host's network (an S3 endpoint on the host's
loopback answers) and its PID namespace: restic's locks name a PID and a host name, and a lock
left by a helper that is gone is then recognised as such (`stores.restic_locks`).
"""

import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex

import docker.errors
import requests.exceptions
from django.conf import settings

from apps.pods.docker_engine import HELPER_LABEL, DockerEngine, DockerFailure
from apps.pods.stores import restic_working
from apps.pods.stores.restic_stalls import retries_a_lock
from controlpanel.errors import PanelError

logger = logging.getLogger(__name__)

IMAGE_REPOSITORY = "pinacle-restic"
SECRETS = "/run/pinacle"
# Where the pod's volumes are mounted in the helper, each as its mount's last name
# (`/usr/local` → `/pod/local`): restic's snapshot then holds `local/…`, the names Docker's
# archive of the same folder uses, so every reader of a volume's tar reads the same names.
MOUNT_ROOT = "/pod"
# The pod a restic helper works on: one still there when an operation on the pod begins was
# left by a worker that died (the pod is claimed by the new one), and goes first.
POD_OF_HELPER = "pinacle.helper.pod"
# How often the helper is looked at while restic runs (cancellation, its end).
POLL_SECONDS = 0.25
# After SIGINT, restic removes its lock and exits; a helper that does not is killed.
INTERRUPT_WAIT_SECONDS = 30
_image_lock = threading.Lock()
_image_tags: dict[str, str] = {}  # the helper image's tag, worked out once per process
_bindable: dict[str, tuple[bool, float]] = {}  # per Docker host: may a helper read our files, and when asked
BINDABLE_SECONDS = 60
# A helper's secrets folder: the worker's PID and its start time name its process.
KEPT_NAME = re.compile(r"helper-(?P<pid>\d+)-(?P<started>\d+)-[0-9a-f]{16}")


def _libraries(binary: str) -> list[str]:
    """The shared objects `binary` loads (`ldd`), the loader included: absolute paths."""
    done = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    found = []
    for line in done.stdout.splitlines():
        match = re.search(r"(/\S+)", line.split("=>")[-1])
        if match and os.path.exists(match.group(1)):
            found.append(match.group(1))
    return found


def _image_files() -> list[tuple[str, str]]:
    """(path in the image, path here) for everything the helper image holds."""
    restic = shutil.which("restic")
    if restic is None:
        raise PanelError("the restic helper image needs Debian's restic on the panel's machine: apt-get install restic")
    files = [("usr/bin/restic", restic)]
    files += [(library.lstrip("/"), library) for library in _libraries(restic)]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(bundle):
        files.append((bundle.lstrip("/"), bundle))
    return files


def _image_tar() -> tuple[str, bytes]:
    """(tag, rootfs tar) of the helper image: made when a host lacks it, never kept (~20 MB)."""
    with _image_lock:
        buffer, digest = io.BytesIO(), hashlib.sha256()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for folder, mode in [("tmp", 0o1777), ("run", 0o755), ("etc", 0o755), ("root", 0o700), ("pod", 0o755)]:
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            for name, body in [("etc/passwd", b"root:x:0:0:root:/root:/bin/false\n"), ("etc/group", b"root:x:0:\n")]:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(body), 0o644
                tar.addfile(info, io.BytesIO(body))
                digest.update(name.encode() + body)
            for inside, here in _image_files():
                real = os.path.realpath(here)
                info = tar.gettarinfo(real, arcname=inside)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                with open(real, "rb") as body:
                    tar.addfile(info, body)
                with open(real, "rb") as body:
                    digest.update(inside.encode())
                    for piece in iter(lambda body=body: body.read(1024 * 1024), b""):
                        digest.update(piece)
        tag = f"{IMAGE_REPOSITORY}:{digest.hexdigest()[:16]}"
        _image_tags["image"] = tag
        return tag, buffer.getvalue()


TAG_FORMAT = re.compile(rf"{IMAGE_REPOSITORY}:[0-9a-f]{{16}}")


def _files_stamp(files: list[tuple[str, str]]) -> str:
    """The image's files as they are now, by their metadata: rewriting or replacing one (an
    upgraded restic or libc) changes its change time, which nobody can set."""
    lines = []
    for inside, here in files:
        real = os.path.realpath(here)
        found = os.stat(real)
        lines.append(
            f"{inside} {real} {found.st_dev} {found.st_ino} {found.st_size} {found.st_mtime_ns} {found.st_ctime_ns}"
        )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _image_tag() -> str:
    """The helper image's tag: worked out once per process, and kept in VAR_DIR beside the
    metadata of the files it was worked out from, so that a command's process does not read
    and hash 20 MB (about 50 ms) before each helper while those files are as they were."""
    tag = _image_tags.get("image")
    if tag is not None:
        return tag
    kept = Path(settings.VAR_DIR) / "restic-image.json"
    stamp = _files_stamp(_image_files())
    try:
        known = json.loads(kept.read_text())
        if known.get("stamp") == stamp and TAG_FORMAT.fullmatch(str(known.get("tag"))):
            _image_tags["image"] = known["tag"]
            return known["tag"]
    except (OSError, ValueError, AttributeError):
        pass  # not kept yet, or unreadable: worked out from the files
    tag, _body = _image_tar()
    try:
        partial = kept.with_suffix(f".{os.getpid()}")
        partial.write_text(json.dumps({"stamp": stamp, "tag": tag}))
        partial.replace(kept)
    except OSError:
        pass  # only the shortcut is lost
    return tag


def image_ensure(engine: DockerEngine) -> str:
    """The helper image on `engine`'s host, imported first if the host lacks it."""
    tag = _image_tag()
    with engine._errors("looking up the restic helper image"):
        try:
            engine.client.api.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
    tag, body = _image_tar()  # a restic upgraded meanwhile makes a new tag: imported as such
    repository, _, version = tag.partition(":")
    with engine._errors("loading the restic helper image"):
        engine.client.api.import_image_from_data(body, repository=repository, tag=version)
    return tag


def _started_at(pid: int | str) -> str | None:
    """When a process of this machine started (clock ticks since boot), or None when it is gone:
    a PID and its start time name one process, whatever reuses the PID later."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _secrets_bindable(engine: DockerEngine) -> bool:
    """Whether a helper's root can read files of ours bind-mounted from this machine: not when
    the daemon maps the container's root to another user (userns-remap, rootless) or labels
    what a container may read (SELinux). Looked at again after a minute (a daemon restarted)."""
    known = _bindable.get(engine.base_url)
    if known is None or time.monotonic() - known[1] > BINDABLE_SECONDS:
        try:
            options = engine.client.info().get("SecurityOptions") or []
        except Exception:  # the create below says what is wrong with the host
            return False
        refused = ("name=userns", "name=rootless", "name=selinux")
        known = (not any(word in option for option in options for word in refused), time.monotonic())
        _bindable[engine.base_url] = known
    return known[0]


def _secrets_kept(engine: DockerEngine, secrets: dict[str, bytes]) -> Path | None:
    """The secrets as files in a private folder in memory, for a helper on this machine to
    bind-mount; None when there is no such folder or the helper could not read it (they go in
    with `put_archive` then). Folders left by a worker that died are removed first."""
    folder = restic_working._kept_folder("helpers")
    started = _started_at(os.getpid())
    if folder is None or started is None or not engine.on_this_machine or not _secrets_bindable(engine):
        return None
    for left in folder.glob("helper-*"):
        named = KEPT_NAME.fullmatch(left.name)
        if named and _started_at(named["pid"]) != named["started"]:
            shutil.rmtree(left, ignore_errors=True)  # its process is gone (a symlink is unlinked, not followed)
    kept = folder / f"helper-{os.getpid()}-{started}-{token_hex(8)}"
    try:
        kept.mkdir(mode=0o700)
        for name, body in secrets.items():
            with open(os.open(kept / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as out:
                out.write(body)
    except OSError as exc:  # a full /dev/shm: the secrets go in through Docker instead
        logger.info("could not keep the restic helper's secrets in memory: %s", exc)
        shutil.rmtree(kept, ignore_errors=True)
        return None
    return kept


def _secrets_tar(secrets: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo(SECRETS.strip("/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(folder)
        for name, body in secrets.items():
            info = tarfile.TarInfo(f"{SECRETS.strip('/')}/{name}")
            info.size, info.mode = len(body), 0o400
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class HelperRun:
    """What one restic in a helper printed: its stdout lines as they came, its stderr."""

    exit_code: int = -1
    lines: list[str] = field(default_factory=list)
    stderr: str = ""
    # Stopped as it retried reading a lock that went, before it did anything: run it again
    # (`stores.restic_stalls.StallWatch`, the same watch for a restic of the panel's own).
    stalled: bool = False
    pid: int | None = None  # restic's PID on the helper's host (the helpers share its PIDs)


def _follow(engine: DockerEngine, helper: str, run: HelperRun, on_line: Callable[[dict], None] | None) -> None:
    """Read the helper's stdout as it comes, one JSON line at a time (a thread of its own)."""
    held = b""
    try:
        for piece in engine.client.api.logs(helper, stream=True, follow=True, stdout=True, stderr=False):
            held += piece
            *complete, held = held.split(b"\n")
            for raw in complete:
                _deliver(run, raw.decode("utf-8", "replace"), on_line)
    except Exception as exc:  # the helper went away with its host: the wait says so
        logger.info("stopped following restic helper %s: %s", helper[:12], exc)
    if held:
        run.lines.append(held.decode("utf-8", "replace"))


def _deliver(run: HelperRun, line: str, on_line: Callable[[dict], None] | None) -> None:
    run.lines.append(line)
    if on_line is not None and line.startswith("{"):
        try:
            on_line(json.loads(line))
        except ValueError:
            pass


def _lines_missed(engine: DockerEngine, helper: str, run: HelperRun, on_line: Callable[[dict], None] | None) -> None:
    """Stdout lines the follower missed (its stream can end early under load), read whole."""
    whole = engine.client.api.logs(helper, stdout=True, stderr=False).decode("utf-8", "replace").split("\n")
    for line in whole[len(run.lines) : len(whole) - (whole[-1] == "")]:
        _deliver(run, line, on_line)


def _watch_errors(engine: DockerEngine, helper: str, run: HelperRun) -> None:
    """Read the helper's stderr as it comes (a thread of its own): restic 0.14 retrying the
    read of a lock that went, before it printed anything else, is stopped with SIGINT at once
    instead of 45-55 s later (restic/restic#4520); the caller starts it again."""
    held = b""
    try:
        for piece in engine.client.api.logs(helper, stream=True, follow=True, stdout=False, stderr=True):
            held += piece
            *complete, held = held.split(b"\n")
            for raw in complete:
                if run.stalled or run.lines or not retries_a_lock(raw.decode("utf-8", "replace")):
                    continue
                run.stalled = True
                logger.info("restic helper %s retries reading a lock that went: stopped to start again", helper[:12])
                engine.client.api.kill(helper, signal="SIGINT")
    except Exception as exc:  # the helper went away with its host, or ended: the wait says so
        logger.info("stopped watching restic helper %s's errors: %s", helper[:12], exc)


def restic_in_helper(
    engine: DockerEngine,
    *,
    command: list[str],
    volumes: dict[str, tuple[str, bool]],
    env: dict[str, str],
    secrets: dict[str, bytes],
    binds: dict[str, str] | None = None,
    on_line: Callable[[dict], None] | None = None,
    on_written: Callable[[int], None] | None = None,
    cancelled: Callable[[], str | None] = lambda: None,
    doing: str,
    pod_id: str,
    stop_stalls: bool = True,
) -> HelperRun:
    """Run `restic *command` in a helper on `engine`'s host with `volumes` ({docker name:
    (path in the helper, read only)}) and `binds` ({folder on the host: path in the helper},
    read-write) mounted. `on_line` gets each JSON line restic prints (on a thread: it must not
    touch the database); `on_written` the bytes restic has written so far, at each look, when
    its process can be read from here (a host on this machine). `cancelled()` is asked while
    restic runs: a reason stops restic with SIGINT (it removes its lock first) and raises that
    reason. `stop_stalls`: a restic retrying a lock that went is stopped (`HelperRun.stalled`),
    for the caller to start again."""
    image = image_ensure(engine)
    mounts = [
        docker.types.Mount(target=target, source=name, type="volume", read_only=read_only, no_copy=True)
        for name, (target, read_only) in volumes.items()
    ]
    mounts += [docker.types.Mount(target=path, source=folder, type="bind") for folder, path in (binds or {}).items()]
    kept = _secrets_kept(engine, secrets)
    if kept is not None:
        mounts.append(docker.types.Mount(target=SECRETS, source=str(kept), type="bind", read_only=True))
    api = engine.client.api
    try:
        with engine._errors(f"creating the restic helper for {doing}"):
            host_config = api.create_host_config(mounts=mounts, network_mode="host", pid_mode="host")
            helper = api.create_container(
                image,
                ["/usr/bin/restic", *command],
                environment=env,
                working_dir=MOUNT_ROOT,
                labels={HELPER_LABEL: "restic", POD_OF_HELPER: pod_id},
                host_config=host_config,
            )["Id"]
    except BaseException:
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
        raise
    run = HelperRun()
    try:
        with engine._errors(f"starting the restic helper for {doing}"):
            if kept is None and not api.put_archive(helper, "/", _secrets_tar(secrets)):
                raise DockerFailure(f"Docker host {engine.host_name!r} did not take the restic helper's key")
            api.start(helper)
        follower = threading.Thread(target=_follow, args=(engine, helper, run, on_line), daemon=True)
        follower.start()
        if stop_stalls:
            threading.Thread(target=_watch_errors, args=(engine, helper, run), daemon=True).start()
        while True:
            with engine._errors(f"waiting for the restic helper ({doing})"):
                state = api.inspect_container(helper)["State"]
            run.pid = state.get("Pid") or run.pid
            if not state.get("Running"):
                run.exit_code = int(state.get("ExitCode", -1))
                break
            if on_written is not None and engine.on_this_machine:
                written = _bytes_written(state.get("Pid"))
                if written is not None:
                    on_written(written)
            why = cancelled()
            if why:
                _interrupt(engine, helper)
                raise PanelError(why)
            _exit_wait(engine, helper)
        follower.join(timeout=10)
        with engine._errors(f"reading the restic helper's errors ({doing})"):
            run.stderr = api.logs(helper, stdout=False, stderr=True).decode("utf-8", "replace")
            _lines_missed(engine, helper, run, on_line)
    except BaseException:
        _interrupt(engine, helper)
        raise
    finally:
        try:
            engine._helper_remove(helper)
        finally:
            if kept is not None:
                shutil.rmtree(kept, ignore_errors=True)
    return run


def _exit_wait(engine: DockerEngine, helper: str) -> None:
    """Back as soon as the helper exits (Docker's wait), or after POLL_SECONDS: looked at again
    at once, not a poll later."""
    try:
        engine.client.api.wait(helper, timeout=POLL_SECONDS)
    except requests.exceptions.RequestException:
        pass  # still running, or the host went: the next look says which


def _bytes_written(pid) -> int | None:
    """What a process of this machine has written so far (`wchar`: every write and pwrite, so
    a restore's file contents), or None when it cannot be read (gone, or not ours to read)."""
    try:
        for line in Path(f"/proc/{int(pid)}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, TypeError, ValueError):
        return None
    return None


def _interrupt(engine: DockerEngine, helper: str) -> None:
    """SIGINT, as restic wants it to remove its lock; killed if it does not end in time."""
    api = engine.client.api
    try:
        api.kill(helper, signal="SIGINT")
        api.wait(helper, timeout=INTERRUPT_WAIT_SECONDS)
    except Exception as exc:  # not running any more, or it would not end: the removal kills it
        logger.info("restic helper %s did not end on SIGINT: %s", helper[:12], exc)


def pod_helpers_remove(engine: DockerEngine, pod_id: str) -> list[str]:
    """Stop (SIGINT first: restic removes its lock) and remove the restic helpers a dead worker
    left working on `pod_id`: they would hold its volumes (a removal refused as "in use") and a
    repository lock. Returns their names."""
    with engine._errors(f"looking for restic helpers of pod {pod_id}"):
        rows = engine.client.api.containers(all=True, filters={"label": f"{POD_OF_HELPER}={pod_id}"})
    for row in rows:
        if row.get("State") == "running":
            _interrupt(engine, row["Id"])
        engine._helper_remove(row["Id"])
    return [(row.get("Names") or [row["Id"][:12]])[0].lstrip("/") for row in rows]


def credentials_file() -> bytes | None:
    """The S3 credentials restic in a helper needs, as an AWS shared-credentials file."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    lines = ["[default]", f"aws_access_key_id = {key}", f"aws_secret_access_key = {secret}"]
    if os.environ.get("AWS_SESSION_TOKEN"):
        lines.append(f"aws_session_token = {os.environ['AWS_SESSION_TOKEN']}")
    return ("\n".join(lines) + "\n").encode()

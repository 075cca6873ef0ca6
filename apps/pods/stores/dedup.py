"""`dedup+file:///path` and `dedup+s3://bucket/prefix`: deduplicated, compressed, encrypted
snapshots kept by Debian's `restic` (0.14), fed the same tar stream the tar stores get.

Each object (a volume's tar, the manifest) is one restic snapshot read from stdin
(`backup --stdin --stdin-filename <volume>.tar`), tagged with its key and made under the host
name `panel`, so any worker finds it. Content-defined chunks are shared across snapshots and
pods: an unchanged volume adds almost nothing, pods from one image share their base. What a
snapshot added (`data_added` of `backup --json`) is its `stored_bytes`.

- Verify reads the snapshot back (`restic dump`) and compares size and sha256 with what was
  sent: restic checks every chunk's MAC on the way, and our sha256 proves the whole stream
  is the one we hashed. (`check --read-data-subset` samples packs at random: it can miss the
  very pack that holds this snapshot.)
- Delete is `forget` of the prefix's snapshots, then `prune --max-unused 0`, which rewrites
  packs until no unreferenced chunk is left. Restic's own repository lock makes prune
  exclusive (backup, dump of a volume, restore and forget wait for it, and it for them);
  listings and manifests are read without the lock and read again under it if a prune took
  a file from under them (`LOCKLESS_READS`); the services also defer a prune while a stop
  is writing to the store (bytes left unreferenced meanwhile are reported as a leak).
- The repository key is the file named by SNAPSHOT_KEY_FILE, never the database. Without
  it every snapshot in the store is unreadable: nobody, us included, can restore them.
"""

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from django.conf import settings

from apps.pods.stores import restic_locks, restic_raw, restic_working
from apps.pods.stores.base import CHUNK_SIZE, ObjectWriter, SnapshotStore, StoreError, StoreFull, store_full, volume_of
from apps.pods.stores.restic_locks import RepositoryLocks
from apps.pods.stores.restic_messages import (
    UNREACHABLE,
    WRONG_KEY,
    first_skipped,
    go_error,
    raced,
    refused_working,
    size_of,
)
from apps.pods.stores.restic_stalls import STALL_RESTARTS, StallWatch, watched
from apps.pods.stores.restic_writer import HOST, ResticWriter
from controlpanel.errors import PanelError, Unreachable
from controlpanel.formatting import first_line
from controlpanel.s3 import s3_client, s3_error

logger = logging.getLogger(__name__)

# Short reads run without restic's lock (`lock_free`); a backup or dump streams without a limit.
COMMAND_TIMEOUT_SECONDS = 120
LOCKED = "repository is already locked"
# Reads that end in moments and can be made again run without restic's lock. restic 0.14 reads
# every lock before it takes one, and one gone between its listing and its read (that restic
# ended) costs 45-55 s of retries (restic/restic#4520): each lock not made is one fewer to go.
LOCKLESS_READS = frozenset({"snapshots", "cat"})  # `ls` never locks in 0.14
# The tag of a restic snapshot that holds a pod's volumes as folders, one tag per volume key.
FOLDER_LAYOUT = "layout=folder"
# restic stores a chunk once: until the damaged pack is out of its index, no later backup
# writes those chunks again, and every stop that needs them fails its read-back.
DEDUP_REPAIR = (
    "repair the store before the pod's next stop: `restic check --read-data` names the damaged pack; "
    "remove that pack file, then run `restic rebuild-index`"
)


def lock_free(args, lockless: bool) -> list[str]:
    """restic's arguments, with `--no-lock` after the command when `lockless`."""
    return [args[0], "--no-lock", *args[1:]] if lockless else list(args)


def _pipe_widen(fd: int) -> None:
    """Make a pipe hold a whole chunk, when the system allows (fs.pipe-max-size)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK_SIZE)
    except OSError:
        pass  # a smaller pipe only reads slower


def folder_of(key: str) -> str:
    """`…/usr-local.tar` → `local`: the folder a volume is backed up as beside the volumes (its
    mount's last name, the name Docker's archive of the same folder starts with)."""
    from apps.pods.models import VOLUME_MOUNTS  # the store knows pods only by this one table

    return PurePosixPath(VOLUME_MOUNTS[volume_of(key)]).name


class DedupStore(RepositoryLocks, SnapshotStore):
    slow_writer_start = True  # each backup process derives the key (~0.5 s) before it reads

    def __init__(self, url: str, *, path: Path | None = None, bucket: str = "", prefix: str = ""):
        self.url = url
        self.path, self.bucket, self.prefix = path, bucket, prefix.strip("/")
        self.ids: dict[str, str] = {}  # key → restic snapshot id, for what this store wrote
        # key → the folder a volume was backed up as (`services.capture_folders`): read back
        # as restic's tar of that folder, not as the file a tar stream was stored as.
        self.folders: dict[str, str] = {}

    # --- running restic -------------------------------------------------------------

    @property
    def repository(self) -> str:
        if self.path is not None:
            return str(self.path)
        endpoint = (settings.AWS_ENDPOINT_URL or "https://s3.amazonaws.com").rstrip("/")
        return f"s3:{endpoint}/{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def key_file(self) -> str:
        path = settings.SNAPSHOT_KEY_FILE
        if not path:
            raise StoreError(
                f"snapshot store {self.url} needs its repository key: set SNAPSHOT_KEY_FILE to the file holding it"
            )
        try:
            if not Path(path).read_bytes().strip():
                raise StoreError(f"snapshot store {self.url}: SNAPSHOT_KEY_FILE {path} is empty")
        except OSError as exc:
            raise StoreError(f"snapshot store {self.url}: SNAPSHOT_KEY_FILE {path} cannot be read: {exc}") from exc
        return path

    def password(self, *, working: bool = True) -> tuple[bytes, str | None]:
        """(restic's password, the key it tries first): the repository's working key when there
        is one (`restic_working`), else SNAPSHOT_KEY_FILE's key."""
        key_file = self.key_file()
        found = restic_working.working(self) if working else None
        return (found.password, found.key_id) if found else (Path(key_file).read_bytes(), None)

    def env(self, *, working: bool = True) -> dict[str, str]:
        """restic's environment. The working key's password goes in it (a child's environment is
        readable only by its own user, as SNAPSHOT_KEY_FILE is), never into a file."""
        cache = Path(settings.VAR_DIR) / "restic-cache"
        env = {
            **os.environ,
            "RESTIC_REPOSITORY": self.repository,
            "RESTIC_CACHE_DIR": str(cache),
            "AWS_DEFAULT_REGION": settings.AWS_REGION,
        }
        for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_KEY_HINT"):
            env.pop(name, None)
        found = restic_working.working(self) if working else None
        if found is None:
            return env | {"RESTIC_PASSWORD_FILE": self.key_file()}
        return env | {"RESTIC_PASSWORD": found.password.decode(), "RESTIC_KEY_HINT": found.key_id}

    def command(self, *args: str) -> list[str]:
        restic = shutil.which("restic")
        if restic is None:
            raise StoreError(f"snapshot store {self.url} needs Debian's restic: apt-get install restic")
        return [restic, *args]

    def error(self, doing: str, stderr: str, written: int | None = None, *, hint: str | None = None) -> PanelError:
        """restic's stderr, told as one line for people (`hint`: the working key it was given)."""
        text = " ".join(line.strip() for line in stderr.splitlines() if line.strip())
        if WRONG_KEY in text and hint:
            restic_working.forget(self, hint)
            return StoreError(
                f"snapshot store {self.url} no longer has the panel's working key {hint[:8]} (removed from the "
                f"repository?) ({doing}; nothing was changed): try again, the next attempt uses SNAPSHOT_KEY_FILE"
            )
        if WRONG_KEY in text:
            return StoreError(
                f"snapshot store {self.url} refused the key in SNAPSHOT_KEY_FILE: it is not this "
                f"repository's key ({doing}; nothing was changed)"
            )
        if "no space left on device" in text.lower() or "quota exceeded" in text.lower():
            if written is not None:
                return store_full(self.url, doing.removeprefix("writing "), written)
            return StoreFull(f"snapshot store {self.url} is full while {doing}: make room in it")
        if any(word in text for word in UNREACHABLE):
            return Unreachable(f"snapshot store {self.url} unreachable while {doing}: {text[-200:]}")
        if LOCKED in text:
            return self.locked_error(restic_locks.holder(stderr) or "another restic", doing)
        fatal = next((line for line in stderr.splitlines() if line.startswith("Fatal")), None)
        detail = first_skipped(stderr) or fatal or go_error(stderr) or text[-300:]
        return StoreError(f"snapshot store {self.url} failed {doing}: {first_line(detail) or 'restic failed'}")

    def run(self, *args: str, doing: str, timeout: float | None = COMMAND_TIMEOUT_SECONDS, working: bool = True) -> str:
        """One restic command; waits (up to SNAPSHOT_LOCK_WAIT_SECONDS) while another restic
        holds the lock, after removing the locks of restics that are gone. `working=False`:
        opened with SNAPSHOT_KEY_FILE itself, not the working key."""
        deadline = time.monotonic() + settings.SNAPSHOT_LOCK_WAIT_SECONDS
        looked_at: set[str] = set()
        lockless, stalls = args[0] in LOCKLESS_READS and "--no-lock" not in args, 0
        while True:
            env = self.env(working=working)
            try:
                done = watched(
                    self.command(*lock_free(args, lockless)), env=env, timeout=timeout, armed=stalls < STALL_RESTARTS
                )
            except subprocess.TimeoutExpired as exc:
                raise Unreachable(
                    f"snapshot store {self.url} did not answer within {timeout:.0f} s while {doing}"
                ) from exc
            stderr = done.stderr
            if done.returncode == 0:
                return done.stdout.decode(errors="replace")
            if done.stalled and stalls < STALL_RESTARTS:  # a lock went as restic read it: at once
                stalls += 1  # again, its own lock, if it wrote one before the SIGINT, gone too
                self.own_lock_remove(done.pid)
                continue
            if refused_working(env, stderr):
                restic_working.forget(self, env["RESTIC_KEY_HINT"])  # removed by hand
                working = False  # once more, with SNAPSHOT_KEY_FILE
                continue
            if lockless and raced(stderr):
                lockless = False  # once more, under the lock, which waits out a prune
                continue
            if LOCKED in stderr:
                holding = restic_locks.storage_id(stderr)
                # Each lock met is looked at once: a lock left by a restic that is gone would
                # be waited on in vain (restic never skips one), so it goes and we try at once.
                if holding not in looked_at:
                    looked_at.add(holding)
                    if not any(lock.lock_id.startswith(holding) for lock in self.locks_clear()):
                        continue
                if time.monotonic() < deadline:
                    time.sleep(1)
                    continue
            raise self.error(doing, stderr)

    # --- the repository ---------------------------------------------------------------

    def repository_ensure(self) -> list[str]:
        """Open the repository (which checks the key), creating it on first use. Returns the
        ids of the locks in it: the same command, one key derivation fewer per stop; none at all
        when restic opened it with this very key before (`restic_raw`)."""
        known = restic_raw.lock_ids_if_opened(self)
        if known is not None:
            return known
        restic_working.working(self)  # found or made before the listing below, which it changes
        taken = restic_raw.taken_now(self)
        try:
            locks = self.run("list", "locks", "--no-lock", doing="opening the repository").split()
        except StoreError as exc:
            if "Is there a repository" not in str(exc) and "unable to open config" not in str(exc):
                raise
            self.run("init", doing="creating the repository", working=False)
            restic_working.working(self)  # made with the repository, not by its first copy
            locks, taken = [], restic_raw.taken_now(self)
        restic_raw.opened_record(self, taken)
        return locks

    def preflight(self, *, needed_bytes: int | None, what: str) -> None:
        """Key readable and right, repository there, no prune holding it (waited out), room."""
        if self.repository_ensure():
            self.exclusive_wait(what=what)
        super().preflight(needed_bytes=needed_bytes, what=what)

    def free_bytes(self) -> int | None:
        if self.path is None:
            return None
        folder = self.path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        usage = os.statvfs(folder)
        return usage.f_bavail * usage.f_frsize

    def repository_bytes(self) -> int:
        """Bytes the repository takes in its store, as the store counts them."""
        if self.path is not None:
            return sum(
                os.lstat(os.path.join(parent, name)).st_size
                for parent, _, files in os.walk(self.path)
                for name in files
            )
        client, total = s3_client(), 0
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                total += sum(obj["Size"] for obj in page.get("Contents") or [])
        except Exception as exc:
            raise s3_error(exc, where=f"snapshot store {self.url}") from exc
        return total

    def unreferenced_bytes(self) -> int:
        """Bytes no snapshot needs (left by a failed stop or a deferred prune)."""
        answer = self.run("prune", "--dry-run", "--max-unused", "0", doing="measuring unreferenced bytes")
        found = re.search(r"total prune:\s+\d+ blobs / ([\d.]+ \w+)", answer)
        return size_of(found.group(1)) if found else 0

    # --- objects ------------------------------------------------------------------------

    def writer(self, key: str) -> ObjectWriter:
        return ResticWriter(self, key)

    def _snapshots(self, *tags: str) -> list[dict]:
        args = ["snapshots", "--json", "--host", HOST]
        for tag in tags:
            args += ["--tag", tag]
        return json.loads(self.run(*args, doing="listing snapshots") or "[]") or []

    def remember(self, manifest: dict) -> None:
        for entry in manifest.values():
            if isinstance(entry, dict) and entry.get("key") and entry.get("store_id"):
                self.ids.setdefault(entry["key"], entry["store_id"])
                if entry.get("folder"):
                    self.folders.setdefault(entry["key"], entry["folder"])

    def _snapshot_id(self, key: str) -> str:
        if key in self.ids:
            return self.ids[key]
        found = sorted(self._snapshots(key), key=lambda s: s["time"])
        if not found:
            raise StoreError(f"{self.url}/{key} is missing")
        if FOLDER_LAYOUT in (found[-1].get("tags") or []):
            self.folders[key] = folder_of(key)
        return found[-1]["id"]

    def _dump_args(self, key: str) -> list[str]:
        """A tar stream's file; for a volume kept as a folder, restic's tar of the whole restic
        snapshot its key names (the eight folders: one read proves all of them, and a file's
        offset in it is where the read-back found it)."""
        snapshot_id = self._snapshot_id(key)
        if key in self.folders:
            return ["dump", "--archive", "tar", snapshot_id, "/"]
        return ["dump", snapshot_id, f"/{key.rsplit('/', 1)[-1]}"]

    def read(self, key: str) -> Iterator[bytes]:
        """A manifest (small) is read without restic's lock; a volume, which may take long, under it."""
        manifest = key.endswith("/manifest.json")
        if key not in self.ids and manifest:
            return self.manifest_by_tag(key)
        return self._dump(self._dump_args(key), doing=f"reading {key} back", key=key, lockless=manifest)

    def manifest_by_tag(self, key: str) -> Iterator[bytes]:
        """One restic process, not two (each derives the key): restic finds the newest snapshot
        tagged with the key itself, without taking restic's lock (a manifest is small: read again
        under the lock if a prune raced it, `_dump`)."""
        fast = ["dump", "--host", HOST, "--tag", key, "latest", "/manifest.json"]
        return self._dump(fast, doing=f"reading {key} back", key=key, lockless=True)

    def read_file(self, key: str, tar_path: str) -> Iterator[bytes]:
        """One file of a volume kept as a folder, as itself (`restic dump` of its path): only its
        own chunks are read, however large the volume."""
        if key not in self.folders:
            self._snapshot_id(key)  # learns the layout
        if key not in self.folders:
            raise StoreError(f"{self.url}/{key} holds a tar stream, not a folder: read it as a whole")
        return self._dump(["dump", self._snapshot_id(key), f"/{tar_path}"], doing=f"reading {tar_path}")

    def _dump(self, args: list[str], *, doing: str, key: str = "", lockless: bool = False) -> Iterator[bytes]:
        """`restic dump` streamed. A working key removed meanwhile: once more without it. A
        `lockless` read that failed before it gave a byte: once more under the lock. A lock met
        before a byte: dead restics' locks cleared, a prune waited out, then once more."""
        working, waited, stalls = True, False, 0
        while True:
            env = self.env(working=working)
            command = self.command(*lock_free(args, lockless))
            # Unbuffered, from a pipe as large as a chunk: restic writes whole chunks and each
            # read takes what is there in one call (a 64 KiB pipe and a buffered reader that
            # gathers a full chunk made the read-back of 1 GiB a third slower).
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
            _pipe_widen(process.stdout.fileno())
            watch = StallWatch(process, armed=stalls < STALL_RESTARTS)  # the last one waits, as restic would
            read_to_end, given = False, False
            try:
                while chunk := process.stdout.read(CHUNK_SIZE):
                    given = watch.given = True
                    yield chunk
                read_to_end = True
            finally:
                if read_to_end:
                    process.wait()
                else:
                    self.reader_stop(process)
                process.stdout.close()
                told = watch.told()
            if process.returncode == 0:
                return
            if watch.stalled and not given and stalls < STALL_RESTARTS:  # a lock went as restic
                stalls += 1  # read it: its lock, if it wrote one before the SIGINT, goes too
                self.own_lock_remove(process.pid)
                logger.info("%s: restic met a lock that went while %s; started again", self.url, doing)
                continue
            if not given and working and refused_working(env, told):
                restic_working.forget(self, env["RESTIC_KEY_HINT"])
                working = False
                continue
            if not given and lockless and raced(told):  # a prune took a file from under it:
                self.exclusive_wait(what=doing)  # read again once that prune has ended
                lockless = False
                continue
            if not given and not lockless and not waited and LOCKED in told:
                self.exclusive_wait(what=doing)
                waited = True
                continue
            if key and "no snapshot found" in told:
                raise StoreError(f"{self.url}/{key} is missing")
            raise self.error(doing, told, hint=env.get("RESTIC_KEY_HINT"))

    def size(self, key: str) -> int | None:
        try:
            snapshot_id = self._snapshot_id(key)
        except StoreError:
            return None
        if key in self.folders:
            return None  # restic's tar of a folder has no size until it is made
        for line in self.run("ls", "--json", snapshot_id, doing=f"listing {key}").splitlines():
            node = json.loads(line)
            if node.get("struct_type") == "node" and node.get("type") == "file":
                return node["size"]
        return None

    def keys_present(self, among: list[str] | None = None) -> set[str]:
        """The keys of the objects in the store now, of all or only `among` (one listing)."""
        if among is not None and not among:
            return set()
        found = self._snapshots(*(among or []))
        return {tag for snapshot in found for tag in snapshot.get("tags") or []}

    def delete_prefix(
        self, prefix: str, *, reclaim: bool = True, keep: frozenset = frozenset(), also: frozenset = frozenset()
    ) -> int:
        """Forget the prefix's snapshots but those in `keep` (a later snapshot points at them),
        and those in `also` (older objects only this snapshot still pointed at); with `reclaim`,
        prune the chunks no snapshot needs. Returns the bytes the repository shrank by."""
        before = self.repository_bytes()
        doomed = [
            s["id"]
            for s in self._snapshots()
            if any((t.startswith(f"{prefix}/") and t not in keep) or t in also for t in s.get("tags") or [])
        ]
        if doomed:
            self.run("forget", *doomed, doing=f"forgetting {prefix}")
        for key in [k for k in self.ids if k.startswith(f"{prefix}/")]:
            del self.ids[key]
        if reclaim:
            self.run("prune", "--max-unused", "0", doing="pruning", timeout=None)
        return max(0, before - self.repository_bytes())

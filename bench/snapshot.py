"""Benchmark: stop-with-snapshot and start-with-restore against the limits, in one run.

    .venv/bin/python bench/snapshot.py --store file|s3|dedup [--engine stream|beside]
                                                  (BENCH_BYTES=4294967296 to scale up)

Fills a pod's volumes with BENCH_BYTES (default 64 MiB: one large file plus BENCH_SMALL_FILES
small ones), then times, beside each other:
  read limit: `tar -cf - <volume folders> | cat > /dev/null` (the disk's speed; `cat` so that
              tar cannot skip reading because its output is /dev/null);
  naive stop: `docker cp` each volume out, `tar` it, upload it (`upload_file` to S3, a copy
              into a folder for file and dedup), no verify, volumes left;
  naive start: download (or read) each tar, `docker cp -` it into a fresh container;
  ours:       `manage.py pods stop` and `manage.py pods start`, each in its own process (the
              operation row's start-to-finish, and the process's peak RSS).
For `--store dedup` (restic, `dedup+file://`), also: a second stop of the unchanged pod (bytes
added and time, against the first), two backups of the started pod with POD_BACKUP_PAUSE=1 (the
unchanged one's time against the first, its bytes and its pause), and ten pods from one image
(a base of BENCH_BYTES/2 plus BENCH_BYTES/20 of their own each), all stopped: the store's
growth against base + 10 × own (BENCH_TEN_PODS=0 leaves it out).
Every store: one 10 MiB file (in /home after the large one: a tar stream reaches it last) read
out of the pod's latest snapshot (`snapshot_files.file_read`,
what the files page and a restore beside use), against #22's 2 s.
For `--store dedup`, restic by hand on the same volume folders is the baseline #22 measures
against, with the same promise: `backup` of the eight folders then `check --read-data` (every
stored byte read back); the same for the unchanged pod (restic picks the parent snapshot and
skips unchanged files by their metadata); `restore` into a folder for the start.
`--engine beside` (SNAPSHOT_ENGINE) runs the panel's restic in a helper container next to the
volumes instead of streaming each volume's tar into it.
S3 is SeaweedFS (`weed mini`, started here on 127.0.0.1). Prints every ratio; exits 0.
"""

import argparse
import io
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Python puts bench/ first on sys.path; a sibling script named like a stdlib module
# (bench/inspect.py) would shadow it once pytest or Django import it: use the root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

MIB = 1024 * 1024
TOTAL_BYTES = int(os.environ.get("BENCH_BYTES", str(64 * MIB)))
SMALL_FILES = int(os.environ.get("BENCH_SMALL_FILES", "2000"))
SMALL_SIZE = 2048
# The ten-pods-from-one-image measure (issue #14); BENCH_TEN_PODS=0 leaves it out of a long run.
TEN_PODS = int(os.environ.get("BENCH_TEN_PODS", "10"))
ONE_FILE = 10 * MIB
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3" if TOTAL_BYTES <= 256 * MIB else "1"))
SETTLE_SECONDS = float(os.environ.get("BENCH_SETTLE_SECONDS", "2"))
MOUNTS = ["/workspace", "/home", "/root", "/etc", "/usr/local", "/opt", "/var", "/srv"]
NAMES = ["workspace", "home", "root", "etc", "usr-local", "opt", "var", "srv"]


def small_files_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for n in range(SMALL_FILES):
            info = tarfile.TarInfo(f"small/d{n % 100:02d}/f{n:05d}.txt")
            payload = os.urandom(SMALL_SIZE)
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _pids(name: str) -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _cpu(pid: int) -> float:
    """utime + stime of a process (and its waited-for children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def settle() -> None:
    """Write back what is dirty and let the disk's queue drain before a timed step."""
    os.sync()
    time.sleep(SETTLE_SECONDS)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class Bench:
    def __init__(self, store: str, engine: str = "stream"):
        self.store, self.engine = store, engine
        self.work = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
        self.s3 = None
        self.bucket = f"bench-{uuid.uuid4().hex[:8]}"
        self.pods: list[str] = []
        self.images: list[str] = []
        self.cpu_lines: list[str] = []
        self.upload_seconds: list[float] = []  # the naive stop's uploads alone: the store's own pace
        self.env = {
            **os.environ,
            "VAR_DIR": str(self.work / "var"),
            "DATABASE_URL": f"sqlite:///{self.work / 'bench.sqlite3'}",
            "POD_IMAGE": "pinacle-base:test",
            "POD_COMMAND": "/bin/sh",
            "POD_STOP_TIMEOUT_SECONDS": "0",
            "REDIS_URL": "",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "SNAPSHOT_ENGINE": engine,
        }

    # --- parts --------------------------------------------------------------------------

    def store_up(self) -> None:
        if self.store == "s3":
            from tests.parts import SeaweedFSServer

            self.s3 = SeaweedFSServer()
            self.s3.start()
            self.s3.client().create_bucket(Bucket=self.bucket)
            self.env.update(
                SNAPSHOT_STORE_URL=f"s3://{self.bucket}/snapshots",
                AWS_ENDPOINT_URL=self.s3.endpoint_url,
                AWS_ACCESS_KEY_ID=self.s3.ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY=self.s3.SECRET_KEY,
                AWS_DEFAULT_REGION="us-east-1",
            )
        elif self.store == "dedup":
            key = self.work / "snapshot.key"
            key.write_text(uuid.uuid4().hex)
            self.env.update(SNAPSHOT_STORE_URL=f"dedup+file://{self.work / 'repo'}", SNAPSHOT_KEY_FILE=str(key))
        else:
            self.env.update(SNAPSHOT_STORE_URL=f"file://{self.work / 'store'}")

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the processes that share the machine with ours."""
        pids = {"dockerd": _pids("dockerd")}
        if self.s3 is not None and self.s3.process is not None:
            pids["S3 server"] = [self.s3.process.pid]
        return {name: sum(_cpu(pid) for pid in found) for name, found in pids.items()}

    def timed_manage(self, *args: str) -> tuple[float, float]:
        """(the operation's own seconds, peak RSS MiB) of `manage.py pods <action> <pod>`;
        prints the CPU seconds it and the processes beside it used."""
        before = self.cpu_seconds()
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        after = self.cpu_seconds()
        used = [f"ours {usage.ru_utime + usage.ru_stime:.1f}"]
        used += [f"{name} {after[name] - before[name]:.1f}" for name in after]
        self.cpu_lines.append(
            f"  {' '.join(args[:2])}: CPU seconds " + ", ".join(used) + " (each with the children it waited for)"
        )
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"`manage.py {' '.join(args)}` failed")
        with sqlite3.connect(self.work / "bench.sqlite3") as db:
            started, finished = db.execute(
                "SELECT started_at, finished_at FROM audit_operation WHERE kind = ? ORDER BY id DESC LIMIT 1",
                (f"pod.{args[1]}",),
            ).fetchone()
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
        return seconds, usage.ru_maxrss / 1024

    def one_file_seconds(self, pod_id: str, path: str) -> float:
        """Reading one file out of the pod's latest complete snapshot, in its own process
        (what the files page's download and a restore beside read), the bytes counted."""
        code = (
            "import time\n"
            "from apps.pods.models import Snapshot\n"
            "from apps.pods.services.snapshot_files import file_read, snapshot_select\n"
            f"snapshot = Snapshot.objects.filter(pod__pod_id={pod_id!r}, status='complete').latest('id')\n"
            f"selection = snapshot_select(pod_id={pod_id!r}, number=snapshot.pk, path={path!r})\n"
            "started = time.monotonic()\n"
            "count = sum(len(chunk) for chunk in file_read(selection))\n"
            "print(count, time.monotonic() - started)\n"
        )
        answer = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        if int(answer[-2]) != ONE_FILE:
            raise SystemExit(f"read {answer[-2]} bytes of {path}, expected {ONE_FILE}")
        return float(answer[-1])

    def snapshot_row(self, pod_id: str) -> tuple[int, int]:
        with sqlite3.connect(self.work / "bench.sqlite3") as db:
            return db.execute(
                "SELECT s.total_bytes, s.stored_bytes FROM pods_snapshot s JOIN pods_pod p ON p.id = s.pod_id "
                "WHERE p.pod_id = ? AND s.status = 'complete' ORDER BY s.id DESC LIMIT 1",
                (pod_id,),
            ).fetchone()

    def provision(self, image: str | None = None) -> str:
        pod_id = f"bench{uuid.uuid4().hex[:8]}"
        self.pods.append(pod_id)
        self.manage("pods", "provision", pod_id, *(["--image", image] if image else []))
        return pod_id

    # --- the naive ways and the limit ------------------------------------------------------

    def read_limit(self, client, pod_id: str) -> float:
        folders = [client.volumes.get(f"pinacle-vol-{pod_id}-{name}").attrs["Mountpoint"] for name in NAMES]
        started = time.monotonic()
        with open(os.devnull, "wb") as null:
            tar = subprocess.Popen(["tar", "-cf", "-", *folders], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            subprocess.run(["cat"], stdin=tar.stdout, stdout=null, check=False)
            tar.stdout.close()
            tar.wait()
        return time.monotonic() - started

    def naive_stop(self, pod_id: str) -> float:
        container = f"pinacle-pod-{pod_id}"
        out = self.work / "naive"
        self.upload_seconds.append(0.0)
        started = time.monotonic()
        for mount in MOUNTS:
            folder = out / mount.strip("/").replace("/", "-")
            folder.mkdir(parents=True)
            subprocess.run(["docker", "cp", f"{container}:{mount}", str(folder)], check=True)
            archive = folder.with_suffix(".tar")
            subprocess.run(["tar", "-C", str(folder), "-cf", str(archive), "."], check=True)
            if self.s3 is not None:
                sending = time.monotonic()
                self.s3.client().upload_file(str(archive), self.bucket, f"naive/{archive.name}")
                self.upload_seconds[-1] += time.monotonic() - sending
                archive.unlink()
            shutil.rmtree(folder)
        return time.monotonic() - started

    def naive_start(self, client) -> float:
        scratch = client.containers.create("pinacle-base:test", command=["/bin/sh"])
        out = self.work / "naive"
        try:
            started = time.monotonic()
            for mount in MOUNTS:
                archive = out / (mount.strip("/").replace("/", "-") + ".tar")
                if self.s3 is not None:
                    self.s3.client().download_file(self.bucket, f"naive/{archive.name}", str(archive))
                with open(archive, "rb") as body:
                    subprocess.run(["docker", "cp", "-", f"{scratch.id}:{mount}"], stdin=body, check=True)
                archive.unlink()
            return time.monotonic() - started
        finally:
            scratch.remove(force=True)

    # --- dedup: restic by hand, the baseline ---------------------------------------------------

    def restic_by_hand(self, client, pod_id: str) -> dict[str, float]:
        """restic's own times on the pod's volume folders (read on this host, as dockerd keeps
        them): first backup + read-back, unchanged backup (parent) + read-back, restore."""
        folders = [client.volumes.get(f"pinacle-vol-{pod_id}-{name}").attrs["Mountpoint"] for name in NAMES]
        env = {
            **os.environ,
            "RESTIC_REPOSITORY": str(self.work / "by-hand"),
            "RESTIC_PASSWORD_FILE": self.env["SNAPSHOT_KEY_FILE"],
            "RESTIC_CACHE_DIR": str(self.work / "by-hand-cache"),
        }

        def restic(*args: str) -> float:
            started = time.monotonic()
            subprocess.run(["restic", "-q", *args], env=env, check=True, stdout=subprocess.DEVNULL)
            return time.monotonic() - started

        restic("init")
        times = {}
        settle()
        times["key"] = restic("cat", "config")  # the key's derivation, and next to nothing else
        times["first backup"] = restic("backup", "--host", "bench", *folders)
        times["first"] = times["first backup"] + restic("check", "--read-data")
        settle()
        times["unchanged backup"] = restic("backup", "--host", "bench", *folders)
        times["unchanged"] = times["unchanged backup"] + restic("check", "--read-data")
        settle()
        times["restore"] = restic("restore", "latest", "--target", str(self.work / "by-hand-restore"))
        shutil.rmtree(self.work / "by-hand-restore", ignore_errors=True)
        settle()
        # The panel's start also has restic read every file it wrote back (`--verify`).
        target = str(self.work / "by-hand-restore")
        times["restore verified"] = restic("restore", "--verify", "latest", "--target", target)
        home = client.volumes.get(f"pinacle-vol-{pod_id}-home").attrs["Mountpoint"]
        times["one file"] = restic("dump", "latest", f"{home}/one.bin")
        shutil.rmtree(self.work / "by-hand-restore", ignore_errors=True)
        return times

    # --- dedup: backups of the running pod -----------------------------------------------------

    def backups(self, pod_id: str) -> list[dict]:
        """Two backups of the started pod, nothing written in between, POD_BACKUP_PAUSE=1: each
        one's seconds, stored bytes and pause (the operation's result)."""
        self.manage("pods", "start", pod_id)
        env, made = {**self.env, "POD_BACKUP_PAUSE": "1"}, []
        for _ in range(2):
            settle()
            subprocess.run(
                [sys.executable, "manage.py", "pods", "backup", pod_id, "--json"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            with sqlite3.connect(self.work / "bench.sqlite3") as db:
                (result,) = db.execute(
                    "SELECT result FROM audit_operation WHERE kind = 'pod.backup' ORDER BY id DESC LIMIT 1"
                ).fetchone()
            made.append(json.loads(result))
        return made

    # --- dedup: ten pods from one image ------------------------------------------------------

    def ten_pods(self, client) -> tuple[int, int]:
        base, own = TOTAL_BYTES // 2, TOTAL_BYTES // 20
        tag = f"pinacle-bench-base:{uuid.uuid4().hex[:8]}"
        builder = client.containers.create("pinacle-base:test", command=["/bin/sh"])
        try:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo("opt/base.bin")
                info.size, info.mode = base, 0o644
                tar.addfile(info, io.BytesIO(os.urandom(base)))
            builder.put_archive("/", buffer.getvalue())
            builder.commit(repository=tag.split(":")[0], tag=tag.split(":")[1])
            self.images.append(tag)
        finally:
            builder.remove(force=True)
        before = folder_bytes(self.work / "repo")
        for _ in range(TEN_PODS):
            pod_id = self.provision(image=tag)
            client.containers.get(f"pinacle-pod-{pod_id}").exec_run(
                ["sh", "-c", f"head -c {own} /dev/urandom > /workspace/own.bin"]
            )
            self.manage("pods", "stop", pod_id)
        return folder_bytes(self.work / "repo") - before, base + TEN_PODS * own

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> None:
        from tests.parts import docker_client_or_none, ensure_base_image

        client = docker_client_or_none()
        if client is None:
            print("dockerd is not reachable; start it first (see README)")
            return
        ensure_base_image(client)
        self.store_up()
        self.manage("migrate", "--noinput")
        pod_id = self.provision()
        container = f"pinacle-pod-{pod_id}"
        client.api.put_archive(container, "/workspace", small_files_tar())
        large = max(0, TOTAL_BYTES - SMALL_FILES * SMALL_SIZE - ONE_FILE)
        client.containers.get(container).exec_run(["sh", "-c", f"head -c {large} /dev/urandom > /home/large.bin"])
        client.containers.get(container).exec_run(["sh", "-c", f"head -c {ONE_FILE} /dev/urandom > /home/one.bin"])
        client.api.stop(container, timeout=0)
        print(
            f"store {self.store}, engine {self.engine}: pod of {large / MIB:.0f} MiB large file "
            f"+ {SMALL_FILES} small files"
        )

        # Each timed step starts with the disk settled: the writeback of the step before it
        # (dirty pages, a removal's journal) would otherwise be paid by whichever comes next.
        # Small files make a step's time swing by a second from run to run on a virtual disk,
        # so the tar stores run ROUNDS rounds and take each figure's median (dedup runs one:
        # its later stops would be the second, deduplicated kind).
        rounds = 1 if self.store == "dedup" else ROUNDS
        by_hand = self.restic_by_hand(client, pod_id) if self.store == "dedup" else {}
        if self.store == "dedup":
            # The panel creates its repository on first use; by hand `restic init` is not timed
            # either: both are made before the first timed stop.
            code = "from apps.pods.snapshots import store_from_url; store_from_url().repository_ensure()"
            self.manage("shell", "-c", code)
        runs: dict[str, list[float]] = {name: [] for name in ["limit", "naive_stop", "naive_start", "stop", "start"]}
        stop_rss = start_rss = 0.0
        for _ in range(rounds):
            settle()
            runs["limit"].append(self.read_limit(client, pod_id))
            settle()
            runs["naive_stop"].append(self.naive_stop(pod_id))
            settle()
            runs["naive_start"].append(self.naive_start(client))
            settle()
            seconds, rss = self.timed_manage("pods", "stop", pod_id)
            runs["stop"].append(seconds)
            stop_rss = max(stop_rss, rss)
            settle()
            seconds, rss = self.timed_manage("pods", "start", pod_id)
            runs["start"].append(seconds)
            start_rss = max(start_rss, rss)
        if rounds > 1:
            print(f"median of {rounds} rounds; every round's seconds:")
            for name, values in runs.items():
                print(f"  {name:12s} " + " ".join(f"{v:6.2f}" for v in values))
        limit, naive_stop, naive_start, stop, start = (statistics.median(runs[name]) for name in runs)
        total, stored = self.snapshot_row(pod_id)
        print(f"read limit (tar | cat > /dev/null):   {limit:7.2f} s")
        print(f"naive stop (docker cp + tar + upload): {naive_stop:7.2f} s")
        print(f"naive start (download + docker cp in): {naive_start:7.2f} s")
        print(f"our stop (stream, sha256, verify, remove): {stop:7.2f} s, peak RSS {stop_rss:.0f} MiB")
        print(f"our start (restore, sha256 checked):       {start:7.2f} s, peak RSS {start_rss:.0f} MiB")
        if self.s3 is not None:
            upload = statistics.median(self.upload_seconds)
            print(f"store's pace (naive's upload_file alone):  {upload:7.2f} s")
            print(f"ratio stop/store's pace: {stop / upload:.2f}x")
        print(f"ratio stop/naive stop:  {stop / naive_stop:.2f}x (target ≤ 0.8 for s3)")
        print(f"ratio stop/read limit:  {stop / max(limit, 1e-3):.2f}x (target ≤ 2)")
        print(f"ratio start/naive start: {start / naive_start:.2f}x (target ≤ 1)")
        print(f"peak RSS: {max(stop_rss, start_rss):.0f} MiB (target ≤ 200 MiB at 4 GiB)")
        print(f"stored {stored} of {total} bytes read ({stored / max(total, 1):.3f})")
        one = self.one_file_seconds(pod_id, "/home/one.bin")
        print(f"one 10 MiB file out of the {total / MIB:.0f} MiB snapshot: {one:.2f} s (target ≤ 2 s)")
        print(f"machine: {os.cpu_count()} cores; CPU used by each of our stops and starts:")
        print("\n".join(self.cpu_lines))
        if self.store != "dedup":
            return
        settle()
        second, _rss = self.timed_manage("pods", "stop", pod_id)
        total2, stored2 = self.snapshot_row(pod_id)
        print(f"dedup second stop of the unchanged pod: {second:7.2f} s, added {stored2} of {total2} bytes")
        print(f"ratio second stop added/pod bytes: {stored2 / max(total2, 1):.4f} (target ≤ 0.02)")
        print(f"ratio second stop/first stop time: {second / stop:.2f}x (target ≤ 0.5)")
        print(
            f"restic by hand on the same folders: first backup + read-back {by_hand['first']:.2f} s, "
            f"unchanged backup + read-back {by_hand['unchanged']:.2f} s, restore {by_hand['restore']:.2f} s"
        )
        print(f"ratio first stop/restic by hand: {stop / by_hand['first']:.2f}x (target ≤ 1.3)")
        print(f"ratio unchanged stop/restic by hand: {second / by_hand['unchanged']:.2f}x (target ≤ 1.3)")
        print(f"ratio start/restic restore by hand: {start / by_hand['restore']:.2f}x (target ≤ 1.3)")
        print(
            f"ratio start/restic restore --verify by hand ({by_hand['restore verified']:.2f} s, the start's own "
            f"promise: every file written read back): {start / by_hand['restore verified']:.2f}x"
        )
        print(f"one 10 MiB file, restic dump by hand: {by_hand['one file']:.2f} s")
        first_backup, unchanged_backup = self.backups(pod_id)
        print(
            f"backups of the running pod (POD_BACKUP_PAUSE=1): first {first_backup['seconds']:.2f} s, "
            f"paused {first_backup['paused_seconds']:.2f} s; unchanged {unchanged_backup['seconds']:.2f} s, "
            f"paused {unchanged_backup['paused_seconds']:.2f} s, added {unchanged_backup['stored_bytes']} bytes"
        )
        print(
            f"ratio unchanged backup/first backup: {unchanged_backup['seconds'] / first_backup['seconds']:.2f}x "
            f"(target ≤ 0.25; ≤ 1 MiB stored: {unchanged_backup['stored_bytes'] <= MIB}; pause ≤ 2 s at 4 GiB)"
        )
        first_own, unchanged_own = (by_hand[f"{name} backup"] - by_hand["key"] for name in ("first", "unchanged"))
        print(
            f"restic by hand, the same two backups: first {by_hand['first backup']:.2f} s, unchanged "
            f"{by_hand['unchanged backup']:.2f} s = {by_hand['unchanged backup'] / by_hand['first backup']:.2f}x; "
            f"without deriving the key ({by_hand['key']:.2f} s each, which the panel's working key saves): "
            f"{unchanged_own / first_own:.2f}x"
        )
        if not TEN_PODS:
            return
        grown, expected = self.ten_pods(client)
        print(
            f"ten pods from one image: store grew {grown / MIB:.1f} MiB for base + 10 × own = {expected / MIB:.1f} MiB"
        )
        print(f"ratio store/(base + 10 × own): {grown / expected:.2f}x (target ≤ 1.5)")

    def close(self) -> None:
        for pod_id in self.pods:
            subprocess.run(["docker", "rm", "-f", f"pinacle-pod-{pod_id}"], capture_output=True)
            for name in NAMES:
                subprocess.run(["docker", "volume", "rm", "-f", f"pinacle-vol-{pod_id}-{name}"], capture_output=True)
        for tag in self.images:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
        if self.s3 is not None:
            self.s3.close()
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["file", "s3", "dedup"], default="s3")
    parser.add_argument(
        "--engine", choices=["stream", "beside"], default="stream", help="SNAPSHOT_ENGINE of a dedup store"
    )
    args = parser.parse_args()
    bench = Bench(args.store, args.engine)
    started = time.monotonic()
    try:
        bench.run()
    finally:
        bench.close()
    print(
        f"bench process peak RSS: {__import__('resource').getrusage(0).ru_maxrss / 1024:.0f} MiB; "
        f"run took {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

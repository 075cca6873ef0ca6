"""Benchmark: stop-with-snapshot to S3 against a naive baseline, in the same run.

Fills a pod's volumes with BENCH_BYTES (default 1 GiB: one large file plus 20,000 small
files), then times
  baseline: `docker cp` each of the eight volumes to a temp folder, tar it, `upload_file`;
  ours:     `manage.py pods stop` (stream out of the stopped container, sha256, multipart
            upload, manifest, verify, remove volumes) in its own process,
and prints the ratio and the peak memory of the process that did our stop.
Needs dockerd, busybox-static and moto (started here on 127.0.0.1). Not a test.
"""

import io
import os
import resource
import shutil
import sqlite3
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

TOTAL_BYTES = int(os.environ.get("BENCH_BYTES", str(1024**3)))
SMALL_FILES = int(os.environ.get("BENCH_SMALL_FILES", "20000"))
SMALL_SIZE = 2048
MIB = 1024 * 1024


def small_files_tar() -> bytes:
    """20,000 small files in a few folders, as a tar for put_archive (faster than a shell loop)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for n in range(SMALL_FILES):
            info = tarfile.TarInfo(f"small/d{n % 100:02d}/f{n:05d}.txt")
            payload = os.urandom(SMALL_SIZE)
            info.size = len(payload)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def main() -> int:
    # Credentials for the local S3 server only.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from tests.parts import BASE_IMAGE, S3Server, docker_client_or_none, ensure_base_image

    client = docker_client_or_none()
    if client is None:
        print("dockerd is not reachable; start it first (see README)")
        return 1
    ensure_base_image(client)
    work = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    s3 = S3Server()
    s3.start()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    env = {
        **os.environ,
        "VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "SNAPSHOT_STORE_URL": f"s3://{bucket}/snapshots",
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "POD_IMAGE": BASE_IMAGE,
        "POD_COMMAND": "/bin/sh",
        "POD_STOP_TIMEOUT_SECONDS": "0",
        "REDIS_URL": "",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    }
    pod_id = f"bench{uuid.uuid4().hex[:8]}"
    container = f"pinacle-pod-{pod_id}"

    def manage(*args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

    try:
        manage("migrate", "--noinput")
        manage("pods", "provision", pod_id)
        small = small_files_tar()
        large_bytes = max(0, TOTAL_BYTES - SMALL_FILES * SMALL_SIZE)
        client.api.put_archive(container, "/workspace", small)
        client.containers.get(container).exec_run(
            ["sh", "-c", f"head -c {large_bytes} /dev/urandom > /home/large.bin"], detach=False
        )
        print(f"pod {pod_id}: {large_bytes / MIB:.0f} MiB large file + {SMALL_FILES} small files")

        # Baseline: docker cp → folder, tar, upload_file; volume by volume.
        mounts = ["/workspace", "/home", "/root", "/etc", "/usr/local", "/opt", "/var", "/srv"]
        started = time.monotonic()
        s3client = s3.client()
        for mount in mounts:
            folder = work / "baseline" / mount.strip("/").replace("/", "-")
            folder.mkdir(parents=True)
            subprocess.run(["docker", "cp", f"{container}:{mount}", str(folder)], check=True)
            archive = folder.with_suffix(".tar")
            subprocess.run(["tar", "-C", str(folder), "-cf", str(archive), "."], check=True)
            s3client.upload_file(str(archive), bucket, f"baseline/{archive.name}")
            shutil.rmtree(folder)
            archive.unlink()
        baseline = time.monotonic() - started
        # Free the baseline's copies in the S3 server before our run.
        for obj in s3client.list_objects_v2(Bucket=bucket, Prefix="baseline/").get("Contents", []):
            s3client.delete_object(Bucket=bucket, Key=obj["Key"])

        # Ours, in its own process so its peak memory is its own.
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "manage.py", "pods", "stop", pod_id], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        ours = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            print("our stop failed; see the output above")
            return 1
        peak_mib = usage.ru_maxrss / 1024  # kilobytes on Linux
        # The worker's own view: from claiming the operation to finishing it (a running
        # qcluster worker has Django, boto3 and docker imported already, like this script).
        with sqlite3.connect(work / "bench.sqlite3") as db:
            started_at, finished_at = db.execute(
                "SELECT started_at, finished_at FROM audit_operation WHERE kind = 'pod.stop'"
            ).fetchone()
        worker = (datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)).total_seconds()

        print(f"baseline (docker cp + tar + upload_file, no verify, volumes left): {baseline:6.1f} s")
        print(f"ours: stop + stream + sha256 + multipart + verify + remove volumes: {worker:6.1f} s")
        print(f"      (the whole `manage.py pods stop` process, start-up included: {ours:6.1f} s)")
        print(f"ratio baseline/ours: {baseline / worker:.2f}x ({'faster' if worker < baseline else 'SLOWER'})")
        print(f"peak memory of the stop process: {peak_mib:.0f} MiB (target < 200 MiB)")
        print(f"bench process peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return 0 if worker < baseline and peak_mib < 200 else 1
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        for name in ["workspace", "home", "root", "etc", "usr-local", "opt", "var", "srv"]:
            subprocess.run(["docker", "volume", "rm", "-f", f"pinacle-vol-{pod_id}-{name}"], capture_output=True)
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: reconcile and the size schedule at fleet scale, on the local dockerd.

    .venv/bin/python bench/reconcile.py               # 100 pods (800 volumes), ~1–2 minutes
    .venv/bin/python bench/reconcile.py --pods 1000   # scale up

Creates N pods (rows, their eight labelled volumes, and a container created but never
started: the pods are `paused`, as reconcile finds them), times reconcile, then puts
--files small files into each of --full pods and times reconcile again, and runs the size
schedule with a roomy and a tight budget. Prints:

- reconcile time with files vs without (target ≤ 1.2×) and its peak Python memory both ways;
- reconcile time per 1,000 pods (target ≤ 5 s per 1,000 on the 2-core machine);
- the size schedule's time per run against its budget (target ≤ budget + 10%);
- queries per run of each;
- for scale, what the old reconcile paid on every run: `docker system df -v` alone.

Everything it creates is named `pinacle-…-bench…` and removed at the end. Not a test.
"""

import os
import sys

# bench/inspect.py is named like the standard library's `inspect`: take bench/ off the path
# before anything imports it, and put the project root there instead.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [ROOT, *(p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench"))]

import argparse  # noqa: E402
import io  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

# Seconds of the second size run: too few to walk every volume of the default bench.
TIGHT = 3


def setup_django(workdir: Path, budget: int) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings",
            "VAR_DIR": str(workdir),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "POD_IMAGE": "pinacle-base:test",
            "POD_SIZE_BUDGET_SECONDS": str(budget),
            "REDIS_URL": "",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def files_tar(count: int) -> bytes:
    """`count` small files in 100 folders, as a tar for put_archive (faster than a shell loop)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for n in range(count):
            info = tarfile.TarInfo(f"many/d{n % 100:02d}/f{n:06d}")
            info.size = 16
            tar.addfile(info, io.BytesIO(b"x" * 16))
    return buffer.getvalue()


def pods_create(client, count: int, tag: str) -> list[str]:
    from docker.types import Mount

    from apps.pods import services
    from apps.pods.models import POD_LABEL, VOLUME_LABEL, VOLUME_MOUNTS, Pod, PodVolume, container_name
    from apps.pods.models import volume_docker_name as volume_name

    host = services.host_default()
    made = []
    for n in range(count):
        pod_id = f"bench{tag}{n:05d}"
        for name in VOLUME_MOUNTS:
            client.volumes.create(name=volume_name(pod_id, name), labels={POD_LABEL: pod_id, VOLUME_LABEL: name})
        mounts = [Mount(target=path, source=volume_name(pod_id, name)) for name, path in VOLUME_MOUNTS.items()]
        client.containers.create(
            "pinacle-base:test", ["sh"], name=container_name(pod_id), mounts=mounts, labels={POD_LABEL: pod_id}
        )
        pod = Pod.objects.create(pod_id=pod_id, host=host, image="pinacle-base:test", status=Pod.Status.PAUSED)
        services._volume_rows_ensure(pod)
        made.append(pod_id)
        if (n + 1) % 100 == 0:
            print(f"  {n + 1} pods created", flush=True)
    PodVolume.objects.filter(pod__pod_id__in=made).update(exists=True)
    return made


def pods_remove(client, pod_ids: list[str]) -> None:
    from tests.pods.conftest import remove_pod_objects

    for pod_id in pod_ids:
        remove_pod_objects(client, pod_id)


def timed(work, repeats: int) -> tuple[float, int, float]:
    """Best seconds of `repeats` runs (the least disturbed by whatever else the machine and
    its dockerd are doing), queries of one run, peak traced Python memory (MiB) of one run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as queries:
        tracemalloc.start()
        work()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return min(seconds), len(queries), peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--full", type=int, default=3, help="pods that get files")
    parser.add_argument("--files", type=int, default=30_000, help="small files in each of those pods")
    parser.add_argument("--budget", type=int, default=5, help="POD_SIZE_BUDGET_SECONDS for the size runs")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    from tests.parts import docker_client_or_none, ensure_base_image

    client = docker_client_or_none()
    if client is None:
        print("dockerd is not reachable; start it first (see README)")
        return 1
    ensure_base_image(client)
    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    setup_django(workdir, args.budget)

    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.pods.models import PodVolume, container_name
    from apps.pods.services import pods_reconcile
    from apps.pods.services.sizes import pods_measure

    tag = uuid.uuid4().hex[:6]
    print(f"creating {args.pods} pods ({args.pods * 8} volumes, containers created, not started)…", flush=True)
    pod_ids: list[str] = []
    try:
        pod_ids = pods_create(client, args.pods, tag)

        def reconcile() -> None:
            pods_reconcile(actor="bench")

        reconcile()  # the first run records the state; later runs find nothing changed
        empty, empty_queries, empty_peak = timed(reconcile, args.repeats)

        print(f"putting {args.files:,} files into each of {args.full} pods…", flush=True)
        payload = files_tar(args.files)
        for pod_id in pod_ids[: args.full]:
            client.api.put_archive(container_name(pod_id), "/workspace", payload)
        os.sync()  # the daemon's writes on disk, not competing with the timed runs
        started = time.perf_counter()
        client.df()
        system_df = time.perf_counter() - started
        full, full_queries, full_peak = timed(reconcile, args.repeats)

        def measure() -> dict:
            return pods_measure(actor="bench")

        with CaptureQueriesContext(connection) as queries:
            roomy = measure()
        roomy_queries = len(queries)
        measured = sum(host["measured"] for host in roomy["hosts"].values())
        # Every size stale again, and a budget too tight to walk them all.
        PodVolume.objects.update(measured_at=None, size_tried_at=None)
        settings.POD_SIZE_BUDGET_SECONDS = TIGHT
        tight = measure()
        tight_measured = sum(host["measured"] for host in tight["hosts"].values())
    finally:
        print("removing the bench pods…", flush=True)
        pods_remove(client, pod_ids)

    files = args.full * args.files
    print()
    print(f"pods {args.pods} ({args.pods * 8} volumes); {files:,} files in {args.full} of them")
    print(f"best of {args.repeats} runs each")
    print(f"reconcile without files   {empty:7.3f} s   {empty_queries} queries   peak {empty_peak:.1f} MiB")
    print(f"reconcile with files      {full:7.3f} s   {full_queries} queries   peak {full_peak:.1f} MiB")
    print(f"  ratio with/without      {full / empty:7.2f}×  (target ≤ 1.2×; memory {full_peak / empty_peak:.2f}×)")
    print(f"  per 1,000 pods          {full / args.pods * 1000:7.3f} s  (target ≤ 5 s)")
    print(f"old way: docker system df {system_df:7.3f} s   (walks every file, every run)")
    for label, run, budget, count, queries_count in (
        ("size run, roomy budget", roomy, args.budget, measured, roomy_queries),
        ("size run, tight budget", tight, TIGHT, tight_measured, None),
    ):
        ratio = run["seconds"] / budget
        verdict = "≤ budget + 10%" if run["seconds"] <= budget * 1.1 else "OVER budget + 10%"
        print(
            f"{label:25} {run['seconds']:7.3f} s   budget {budget} s ({ratio:.2f}×, {verdict}); "
            f"{count} of {args.pods * 8} volumes measured"
            + (f"; {queries_count} queries" if queries_count is not None else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Seed the database with many rows fast (bulk_create), for query-count tests and bench/pages.py.

Each seeder makes rows the way the panel's syncs would, spread over statuses and ages,
without touching Docker, S3 or any volume."""

from datetime import timedelta

from django.utils import timezone

from apps.audit.models import AuditEvent

BATCH = 2000


LEAK_EVERY = 50  # one pod in this many that should hold no volume still has them: a leak


def _volumes_exist(pod, n: int) -> bool:
    """Running and paused pods hold their volumes; stopped, deprovisioned and deleted pods
    hold none (the services delete them), except one in LEAK_EVERY, for the overview's leaks."""
    from apps.pods.models import Pod

    return pod.status in Pod.HOLDS_VOLUMES or n % LEAK_EVERY == 0


def seed_pods(count: int) -> None:
    from apps.pods.models import VOLUME_MOUNTS, DockerHost, Pod, PodVolume, Snapshot, volume_docker_name

    host, _ = DockerHost.objects.get_or_create(name="seeded", defaults={"base_url": "unix:///var/run/docker.sock"})
    statuses = [Pod.Status.RUNNING, Pod.Status.STOPPED, Pod.Status.PAUSED, Pod.Status.DEPROVISIONED]
    now = timezone.now()
    start = Pod.objects.count()
    pods = [
        Pod(pod_id=f"seed-{start + i}", host=host, image="pinacle-base:latest", status=statuses[i % len(statuses)])
        for i in range(count)
    ]
    Pod.objects.bulk_create(pods, batch_size=BATCH)
    pods = list(Pod.objects.filter(pod_id__startswith="seed-").order_by("-id")[:count])
    volumes = [
        PodVolume(
            pod=pod,
            name=name,
            docker_name=volume_docker_name(pod.pod_id, name),
            mount_path=mount,
            exists=_volumes_exist(pod, n),
            size_bytes=4096 * (i + 1),
            measured_at=now,
        )
        for n, pod in enumerate(pods)
        for i, (name, mount) in enumerate(VOLUME_MOUNTS.items())
    ]
    PodVolume.objects.bulk_create(volumes, batch_size=BATCH)
    snapshots = [
        Snapshot(
            pod=pod,
            status=Snapshot.Status.COMPLETE,
            store_url=f"file:///seed/{pod.pod_id}",
            total_bytes=10_000_000,
            bytes_done=10_000_000,
            finished_at=now,
        )
        for pod in pods
        if pod.status == Pod.Status.STOPPED
    ]
    Snapshot.objects.bulk_create(snapshots, batch_size=BATCH)


def seed_sessions(count: int, *, volume: str = "music-split-jobs-data") -> None:
    from apps.separations.models import SeparationSession

    now = timezone.now()
    start = SeparationSession.objects.count()
    SeparationSession.objects.bulk_create(
        [
            SeparationSession(
                session_id=f"seed-{start + i}",
                volume=volume,
                input_present=True,
                stems_present=4,
                total_bytes=80_000_000,
                file_count=5,
                created_at=now - timedelta(minutes=i),
                modified_at=now - timedelta(minutes=i),
                status=SeparationSession.Status.COMPLETE,
            )
            for i in range(count)
        ],
        batch_size=BATCH,
    )


def seed_audit(count: int) -> None:
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor_name="seed", action="pod.stop", target_type="pod", target_id=f"seed-{i}", outcome="succeeded"
            )
            for i in range(count)
        ],
        batch_size=BATCH,
    )


SEEDERS = {"pods": seed_pods, "sessions": seed_sessions, "audit": seed_audit}


def seed_mixjobs(count: int, *, sessions: int = 5000) -> None:
    from apps.mixjobs.models import MixJob

    now = timezone.now()
    start = MixJob.objects.count()
    states = [MixJob.State.COMPLETE, MixJob.State.ERROR, MixJob.State.MIXING, MixJob.State.QUEUED]
    rows = []
    for i in range(count):
        state = states[i % len(states)]
        updated = now - timedelta(hours=i % 100)
        rows.append(
            MixJob(
                session_id=f"seed-s{(start + i) % sessions}",
                job_id=f"seed-j{start + i}",
                state=state,
                progress=100 if state == MixJob.State.COMPLETE else 40,
                updated_at=updated,
                created_at=updated,
                job_path=f"/seed/seed-s{(start + i) % sessions}/jobs/seed-j{start + i}.json",
                job_bytes=900,
                expires_at=updated + timedelta(hours=48) if state == MixJob.State.COMPLETE else None,
            )
        )
        if len(rows) >= BATCH:
            MixJob.objects.bulk_create(rows, batch_size=BATCH)
            rows = []
    MixJob.objects.bulk_create(rows, batch_size=BATCH)


SEEDERS["mixjobs"] = seed_mixjobs

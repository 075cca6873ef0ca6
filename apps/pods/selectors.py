"""Reads for pages, the CLI and the overview: a fixed number of queries each, no Docker calls."""

from django.conf import settings
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.urls import reverse

from apps.pods.models import DockerHost, OrphanVolume, Pod, PodVolume, Snapshot


def pods_with_totals() -> QuerySet[Pod]:
    """Pods with their host, bytes held in existing volumes and their latest snapshot (one query)."""
    latest = Snapshot.objects.filter(pod=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        Pod.objects.select_related("host")
        .annotate(
            volume_bytes=Sum("volumes__size_bytes", filter=Q(volumes__exists=True)),
            volumes_existing=Count("volumes", filter=Q(volumes__exists=True)),
            last_snapshot_id=Subquery(latest.values("id")[:1]),
            last_snapshot_status=Subquery(latest.values("status")[:1]),
            last_snapshot_bytes=Subquery(latest.values("total_bytes")[:1]),
            last_snapshot_at=Subquery(latest.values("created_at")[:1]),
        )
        .order_by("pod_id")
    )


def pod_as_dict(pod: Pod) -> dict:
    """What `pods show --json` prints."""
    last = pod.snapshots.order_by("-created_at", "-id").first()
    return {
        "pod_id": pod.pod_id,
        "status": pod.status,
        "host": pod.host.name,
        "image": pod.image,
        "container_id": pod.container_id,
        "container_name": pod.container_name,
        "last_error": pod.last_error,
        "created_at": pod.created_at.isoformat(),
        "updated_at": pod.updated_at.isoformat(),
        "volumes": [
            {
                "name": v.name,
                "docker_name": v.docker_name,
                "mount_path": v.mount_path,
                "exists": v.exists,
                "size_bytes": v.size_bytes,
            }
            for v in pod.volumes.order_by("id")
        ],
        "last_snapshot": None
        if last is None
        else {
            "id": last.pk,
            "status": last.status,
            "total_bytes": last.total_bytes,
            "store_url": last.store_url,
            "finished_at": last.finished_at.isoformat() if last.finished_at else None,
            "error": last.error,
        },
    }


def snapshot_leaks(keep: int | None = None) -> list[Snapshot]:
    """Failed snapshots and complete ones beyond retention (what the retention run will purge)."""
    from apps.pods.services import snapshots_to_retire

    return snapshots_to_retire(keep=keep)


def overview_section() -> dict:
    pods = dict(Pod.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    held = PodVolume.objects.filter(exists=True).aggregate(total=Sum("size_bytes"))["total"] or 0
    snapshot_bytes = (
        Snapshot.objects.filter(status=Snapshot.Status.COMPLETE).aggregate(total=Sum("total_bytes"))["total"] or 0
    )
    sweep_url = reverse("pods:sweep")
    leaks = [
        {
            "label": f"orphaned volume {row.docker_name} ({row.reason})",
            "domain": "pods",
            "bytes": row.size_bytes,
            "fix_url": sweep_url,
            "fix_label": "Review orphan sweep",
        }
        for row in OrphanVolume.objects.all()[:200]
    ]
    leftovers = (
        PodVolume.objects.filter(exists=True, pod__status__in=Pod.NO_VOLUMES)
        .values("pod__pod_id", "pod__status")
        .annotate(n=Count("id"), total=Sum("size_bytes"))
    )
    for row in leftovers:
        leaks.append(
            {
                "label": f"{row['n']} volumes of {row['pod__status']} pod {row['pod__pod_id']} still exist",
                "domain": "pods",
                "bytes": row["total"],
                "fix_url": reverse("pods:confirm", args=[row["pod__pod_id"], "deprovision"])
                if row["pod__status"] != Pod.Status.DELETED
                else sweep_url,
                "fix_label": "Review removal",
            }
        )
    retire = snapshot_leaks()
    if retire:
        leaks.append(
            {
                "label": f"{len(retire)} failed or superseded snapshots past retention ({settings.SNAPSHOT_RETENTION})",
                "domain": "pods",
                "bytes": sum(s.total_bytes or s.bytes_done for s in retire),
                "fix_url": reverse("pods:retention"),
                "fix_label": "Review retention",
            }
        )
    unreachable = list(DockerHost.objects.filter(reachable=False).values_list("name", "last_error"))
    section = {
        "title": "Pods",
        "url": reverse("pods:list"),
        "bytes": held + snapshot_bytes,
        "rows": [
            ("pods", sum(pods.values())),
            *[(status, n) for status, n in sorted(pods.items())],
            ("in volumes", _human(held)),
            ("in snapshots", _human(snapshot_bytes)),
        ],
        "leaks": leaks,
    }
    if unreachable:
        section["error"] = "; ".join(error or f"Docker host {name!r} unreachable" for name, error in unreachable)
    return section


def _human(value: int) -> str:
    from apps.dashboard.templatetags.panel import humanize_bytes

    return humanize_bytes(value)

"""Reads for pages, the CLI and the overview: a fixed number of queries each, no Docker calls."""

from django.conf import settings
from django.db.models import Case, Count, F, Min, OuterRef, Q, QuerySet, Subquery, Sum, When, Window
from django.db.models.functions import Coalesce, RowNumber
from django.urls import reverse

from apps.audit.models import Operation, StorageSample
from apps.audit.names import TargetType
from apps.audit.overview import Leak, OverviewSection
from apps.pods.models import DOMAIN, UNREFERENCED_DOMAIN, DockerHost, OrphanVolume, Pod, PodVolume, Snapshot
from controlpanel.formatting import humanize_bytes


def pods_with_totals() -> QuerySet[Pod]:
    """Pods with their host, bytes held in existing volumes and their latest snapshot (one
    query). Every total is a correlated subquery, not a join and GROUP BY: the database works
    them out for the rows of one page only, and counting the pages counts pods alone."""
    existing = PodVolume.objects.filter(pod=OuterRef("pk"), exists=True).order_by().values("pod")
    latest = Snapshot.objects.filter(pod=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        Pod.objects.select_related("host")
        .annotate(
            volume_bytes=Subquery(existing.annotate(total=Sum("size_bytes")).values("total")),
            volumes_existing=Coalesce(Subquery(existing.annotate(n=Count("id")).values("n")), 0),
            # How old the bytes shown are: the oldest size among them, and how many have one.
            sizes_measured_at=Subquery(existing.annotate(oldest=Min("measured_at")).values("oldest")),
            volumes_measured=Coalesce(Subquery(existing.annotate(n=Count("measured_at")).values("n")), 0),
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
                "measured_at": v.measured_at.isoformat() if v.measured_at else None,
            }
            for v in pod.volumes.order_by("id")
        ],
        "last_snapshot": None
        if last is None
        else {
            "id": last.pk,
            "status": last.status,
            "total_bytes": last.total_bytes,
            # Bytes this snapshot added to the store (less than total_bytes in a dedup store).
            "stored_bytes": last.stored_bytes,
            "store_url": last.store_url,
            "finished_at": last.finished_at.isoformat() if last.finished_at else None,
            "error": last.error,
        },
    }


def pods_busy() -> QuerySet:
    """Pod ids with an operation pending or running (as a subquery, or `set()` it)."""
    return Operation.objects.filter(target_type=TargetType.POD, status__in=Operation.ACTIVE).values_list(
        "target_id", flat=True
    )


def snapshots_past_retention(keep: int | None = None) -> QuerySet[Snapshot]:
    """The retention rules, in one query: failed snapshots, and complete ones beyond the
    latest `keep` of each pod (so never the one a stopped pod needs); never a snapshot of a
    pod with work in flight, nor one being restored (those are left out before counting)."""
    keep = max(1, keep if keep is not None else settings.SNAPSHOT_RETENTION)
    restoring = Pod.objects.filter(restoring_snapshot__isnull=False).values("restoring_snapshot_id")
    candidates = (
        Snapshot.objects.filter(status__in=[Snapshot.Status.COMPLETE, Snapshot.Status.FAILED])
        .exclude(pod__pod_id__in=pods_busy())
        .exclude(pk__in=restoring)
    )
    ranked = candidates.filter(status=Snapshot.Status.COMPLETE).annotate(
        rank=Window(RowNumber(), partition_by=[F("pod_id")], order_by=[F("finished_at").desc(), F("id").desc()])
    )
    superseded = ranked.filter(rank__gt=keep).values("pk")
    return Snapshot.objects.filter(
        Q(pk__in=candidates.filter(status=Snapshot.Status.FAILED).values("pk")) | Q(pk__in=superseded)
    )


def snapshot_leaks(keep: int | None = None) -> list[Snapshot]:
    """Failed snapshots and complete ones beyond retention (what the retention run will purge)."""
    return list(snapshots_past_retention(keep).select_related("pod").order_by("pod_id", "-finished_at", "-id"))


def snapshot_leaks_totals(keep: int | None = None) -> dict:
    """How many snapshots `snapshot_leaks` would list and their bytes, without loading them."""
    # `total_bytes or bytes_done`, as the retention run reports what it reclaims.
    size = Case(When(total_bytes=0, then=F("bytes_done")), default=F("total_bytes"))
    return snapshots_past_retention(keep).aggregate(count=Count("pk"), bytes=Sum(size, default=0))


def unreferenced_leaks() -> list[Leak]:
    """Bytes a deduplicated snapshot store holds that no snapshot needs (a failed stop's
    chunks, or a prune deferred while a stop wrote), as last measured. One query, made only
    while the configured store is a dedup one (the tar stores have no such bytes)."""
    if not settings.SNAPSHOT_STORE_URL.startswith("dedup+"):
        return []
    newest = StorageSample.objects.filter(domain=UNREFERENCED_DOMAIN, subject=OuterRef("subject")).order_by(
        "-sampled_at", "-id"
    )
    rows = StorageSample.objects.filter(
        domain=UNREFERENCED_DOMAIN, pk=Subquery(newest.values("pk")[:1]), total_bytes__gt=0
    ).order_by("subject")
    return [
        Leak(
            f"unreferenced chunks in snapshot store {row.subject} (the next purge prunes them)",
            DOMAIN,
            row.total_bytes,
            reverse("pods:retention"),
            "Review retention",
        )
        for row in rows[:20]
    ]


LEFTOVERS_SHOWN = 200
SWEEP_LABEL = "Review orphan sweep"


def overview_section() -> OverviewSection:
    """The pods' card on the overview and their leaks: database reads only, no Docker call."""
    pods = dict(Pod.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    held = PodVolume.objects.filter(exists=True).aggregate(total=Sum("size_bytes"))["total"] or 0
    snapshot_bytes = (
        Snapshot.objects.filter(status=Snapshot.Status.COMPLETE).aggregate(total=Sum("total_bytes"))["total"] or 0
    )
    sweep_url = reverse("pods:sweep")
    leaks = [
        Leak(f"orphaned volume {row.docker_name} ({row.reason})", DOMAIN, row.size_bytes, sweep_url, SWEEP_LABEL)
        for row in OrphanVolume.objects.all()[:200]
    ]
    # Volumes that still exist for pods that should hold none: each pod's is one leak, the
    # largest first and at most LEFTOVERS_SHOWN of them (a runaway leak must not make the
    # overview render thousands of rows); one more line counts the rest.
    leftover_volumes = PodVolume.objects.filter(exists=True, pod__status__in=Pod.NO_VOLUMES)
    leftovers = list(
        leftover_volumes.values("pod__pod_id", "pod__status")
        .annotate(n=Count("id"), total=Sum("size_bytes"))
        .order_by("-total", "pod__pod_id")[:LEFTOVERS_SHOWN]
    )
    for row in leftovers:
        pod_id, status = row["pod__pod_id"], row["pod__status"]
        fix_url = reverse("pods:confirm", args=[pod_id, "deprovision"]) if status != Pod.Status.DELETED else sweep_url
        leaks.append(
            Leak(
                f"{row['n']} volumes of {status} pod {pod_id} still exist",
                DOMAIN,
                row["total"],
                fix_url,
                "Review removal",
            )
        )
    everything = leftover_volumes.aggregate(pods=Count("pod", distinct=True), total=Sum("size_bytes", default=0))
    if everything["pods"] > len(leftovers):
        leaks.append(
            Leak(
                f"volumes of {everything['pods'] - len(leftovers)} more stopped, deprovisioned, deleted"
                " or failed pods still exist",
                DOMAIN,
                everything["total"] - sum(row["total"] or 0 for row in leftovers),
                sweep_url,
                SWEEP_LABEL,
            )
        )
    retire = snapshot_leaks_totals()
    if retire["count"]:
        leaks.append(
            Leak(
                f"{retire['count']} failed or superseded snapshots past retention ({settings.SNAPSHOT_RETENTION})",
                DOMAIN,
                retire["bytes"],
                reverse("pods:retention"),
                "Review retention",
            )
        )
    leaks.extend(unreferenced_leaks())
    unreachable = list(DockerHost.objects.filter(reachable=False).values_list("name", "last_error"))
    return OverviewSection(
        title="Pods",
        url=reverse("pods:list"),
        bytes=held + snapshot_bytes,
        rows=[
            ("pods", sum(pods.values())),
            *[(status, n) for status, n in sorted(pods.items())],
            ("in volumes", humanize_bytes(held)),
            ("in snapshots", humanize_bytes(snapshot_bytes)),
        ],
        leaks=leaks,
        error="; ".join(error or f"Docker host {name!r} unreachable" for name, error in unreachable),
    )

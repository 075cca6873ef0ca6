"""Reads for pages, the CLI and the overview: a fixed number of queries each, no Docker calls."""

from datetime import UTC, timedelta

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, Coalesce, RowNumber, TruncDay, TruncWeek
from django.urls import reverse
from django.utils import timezone

from apps.audit.holds import holds_active
from apps.audit.models import Operation, StorageSample
from apps.audit.names import TargetType
from apps.audit.overview import Attention, Leak, OverviewSection
from apps.pods.models import DOMAIN, UNREFERENCED_DOMAIN, DockerHost, OrphanVolume, Pod, PodVolume, Snapshot
from apps.pods.selectors_backup import backups_overview
from controlpanel.formatting import humanize_bytes, plural


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
        "backup_every_hours": pod.backup_every_hours,  # None: POD_BACKUP_EVERY_HOURS
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
            "kind": last.kind,  # stop, or backup of the running pod
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


def retention_keep_last(keep: int | None = None) -> int:
    """How many of each pod's latest complete snapshots retention keeps: `keep`, else
    SNAPSHOT_KEEP_LAST, else SNAPSHOT_RETENTION; never fewer than one."""
    return max(1, keep if keep is not None else (settings.SNAPSHOT_KEEP_LAST or settings.SNAPSHOT_RETENTION))


def _retention_ranked(keep: int | None = None) -> QuerySet[Snapshot]:
    """What retention purges, holds aside. Candidates (never a snapshot of a pod with work in flight, nor one being
    restored): failed snapshots, and complete ones past the policy: not its pod's latest,
    not among the latest SNAPSHOT_KEEP_LAST (or `keep`), not the newest of one of the last
    SNAPSHOT_KEEP_DAILY UTC days, not the newest of one of the last SNAPSHOT_KEEP_WEEKLY ISO
    weeks (today and this week count as the first)."""
    keep_last = retention_keep_last(keep)
    restoring = Pod.objects.filter(restoring_snapshot__isnull=False).values("restoring_snapshot_id")
    candidates = (
        Snapshot.objects.filter(status__in=[Snapshot.Status.COMPLETE, Snapshot.Status.FAILED])
        .exclude(pod__pod_id__in=pods_busy())
        .exclude(pk__in=restoring)
    )
    newest_first = [F("finished_at").desc(), F("id").desc()]
    day, week = TruncDay("finished_at", tzinfo=UTC), TruncWeek("finished_at", tzinfo=UTC)
    ranked = candidates.filter(status=Snapshot.Status.COMPLETE).annotate(
        rank=Window(RowNumber(), partition_by=[F("pod_id")], order_by=newest_first),
        day=day,
        day_rank=Window(RowNumber(), partition_by=[F("pod_id"), day], order_by=newest_first),
        week=week,
        week_rank=Window(RowNumber(), partition_by=[F("pod_id"), week], order_by=newest_first),
    )
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    past = Q(rank__gt=keep_last)
    if settings.SNAPSHOT_KEEP_DAILY > 0:
        past &= Q(day_rank__gt=1) | Q(day__lt=today - timedelta(days=settings.SNAPSHOT_KEEP_DAILY - 1))
    if settings.SNAPSHOT_KEEP_WEEKLY > 0:
        monday = today - timedelta(days=today.weekday())
        past &= Q(week_rank__gt=1) | Q(week__lt=monday - timedelta(weeks=settings.SNAPSHOT_KEEP_WEEKLY - 1))
    failed = candidates.filter(status=Snapshot.Status.FAILED).values("pk")
    return Snapshot.objects.filter(Q(pk__in=failed) | Q(pk__in=ranked.filter(past).values("pk")))


def _held_filter() -> Q:
    """Snapshots held themselves, or through their pod (subqueries: no query of its own).
    Needs `pk_text` (`_with_pk_text`): a hold names what it holds as text."""
    held = holds_active().values("target_id")
    return Q(pk_text__in=held.filter(target_type=TargetType.SNAPSHOT)) | Q(
        pod__pod_id__in=held.filter(target_type=TargetType.POD)
    )


def _with_pk_text(snapshots: QuerySet[Snapshot]) -> QuerySet[Snapshot]:
    return snapshots.annotate(pk_text=Cast("pk", CharField()))


def snapshots_past_retention(keep: int | None = None) -> QuerySet[Snapshot]:
    """The retention rules (`_retention_ranked`): failed snapshots and complete ones past the
    policy, never a held one (they are `snapshots_kept_on_hold`)."""
    return Snapshot.objects.filter(pk__in=_with_pk_text(_retention_ranked(keep)).exclude(_held_filter()).values("pk"))


def snapshots_kept_on_hold(keep: int | None = None) -> QuerySet[Snapshot]:
    """What retention would purge but keeps, on hold."""
    return Snapshot.objects.filter(pk__in=_with_pk_text(_retention_ranked(keep)).filter(_held_filter()).values("pk"))


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


def proven_overview(by_status: dict[str, dict]) -> tuple[tuple[str, str], list[Attention]]:
    """The overview's "last proven restorable": how many pods a drill or a verification
    proved, and the newest proof (from the status counts, `by_status`); and what failed:
    drills and verifications, in one query."""
    proven = sum(row["proven"] for row in by_status.values())
    last = max((row["last"] for row in by_status.values() if row["last"]), default=None)
    text = f"{plural(proven, 'pod')}" + (f", last {last:%Y-%m-%d %H:%M} UTC" if last else "; none yet")
    drills = Pod.objects.exclude(drill_error="").order_by().values_list("pod_id", Value(0, output_field=IntegerField()))
    failed = Snapshot.objects.filter(status=Snapshot.Status.COMPLETE).exclude(verify_error="").order_by()
    verifications = failed.values_list("pod__pod_id", "pk")
    attention = [
        Attention(
            f"snapshot #{pk} of pod {pod_id} failed verification" if pk else f"restore drill of pod {pod_id} failed",
            reverse("pods:detail", args=[pod_id]),
            "error",
        )
        for pod_id, pk in drills.union(verifications, all=True)[:40]
    ]
    return ("proven restorable", text), attention


def dormant_overview() -> tuple[list[tuple[str, int]], list[Attention]]:
    """Dormant pods for the overview: a row on the pods card (while dormancy is on, or any is
    left marked) and an attention item, with when the first warned one goes (one query)."""
    dormant = Pod.objects.filter(status=Pod.Status.STOPPED, dormant_since__isnull=False).aggregate(
        n=Count("pk"), warned=Count("pk", filter=Q(dormant_warned_at__isnull=False)), first=Min("dormant_warned_at")
    )
    if not dormant["n"]:
        return ([("dormant", 0)] if settings.POD_DORMANT_DAYS else []), []
    label = f"{plural(dormant['n'], 'dormant pod')} (stopped, not started for {settings.POD_DORMANT_DAYS:g} days)"
    if dormant["warned"]:
        goes = dormant["first"] + timedelta(days=1)
        label += f"; {dormant['warned']} to be deprovisioned (snapshots kept) from {goes:%Y-%m-%d %H:%M} UTC"
    return [("dormant", dormant["n"])], [Attention(label, reverse("pods:list"), "warning")]


LEFTOVERS_SHOWN = 200
SWEEP_LABEL = "Review orphan sweep"


def orphan_grace_ends() -> timedelta:
    return timedelta(minutes=settings.POD_ORPHAN_GRACE_MINUTES)


def orphan_label(row: OrphanVolume, grace: timedelta) -> str:
    """An orphan's leak line; one still inside the grace period says until when the sweep
    leaves it (a volume just made may be a pod's being provisioned)."""
    label = f"orphaned volume {row.docker_name} ({row.reason})"
    if row.created_at and row.created_at + grace > timezone.now():
        label += f"; in its grace period, the sweep takes it from {row.created_at + grace:%Y-%m-%d %H:%M} UTC"
    return label


def overview_section() -> OverviewSection:
    """The pods' card on the overview and their leaks: database reads only, no Docker call."""
    by_status = {
        row["status"]: row
        for row in Pod.objects.values("status").annotate(
            n=Count("id"), proven=Count("id", filter=Q(proven_at__isnull=False)), last=Max("proven_at")
        )
    }
    pods = {status: row["n"] for status, row in by_status.items()}
    held = PodVolume.objects.filter(exists=True).aggregate(total=Sum("size_bytes"))["total"] or 0
    snapshot_bytes = (
        Snapshot.objects.filter(status=Snapshot.Status.COMPLETE).aggregate(total=Sum("total_bytes"))["total"] or 0
    )
    sweep_url = reverse("pods:sweep")
    grace_ends = orphan_grace_ends()
    leaks = [
        Leak(orphan_label(row, grace_ends), DOMAIN, row.size_bytes, sweep_url, SWEEP_LABEL)
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
                f"{retire['count']} failed or superseded snapshots past retention",
                DOMAIN,
                retire["bytes"],
                reverse("pods:retention"),
                "Review retention",
            )
        )
    leaks.extend(unreferenced_leaks())
    unreachable = list(DockerHost.objects.filter(reachable=False).values_list("name", "last_error"))
    proven_row, proven_attention = proven_overview(by_status)
    dormant_rows, dormant_attention = dormant_overview()
    backup_rows, backup_attention = backups_overview()
    return OverviewSection(
        title="Pods",
        url=reverse("pods:list"),
        bytes=held + snapshot_bytes,
        rows=[
            ("pods", sum(pods.values())),
            *[(status, n) for status, n in sorted(pods.items())],
            ("in volumes", humanize_bytes(held)),
            ("in snapshots", humanize_bytes(snapshot_bytes)),
            proven_row,
            *dormant_rows,
            *backup_rows,
        ],
        attention=proven_attention + dormant_attention + backup_attention,
        leaks=leaks,
        error="; ".join(error or f"Docker host {name!r} unreachable" for name, error in unreachable),
    )

"""Reads for the mix jobs pages and the overview: the mirror only, a fixed number of queries."""

from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.urls import reverse
from django.utils import timezone

from apps.audit.holds import held_ids
from apps.audit.models import StorageSample
from apps.audit.names import TargetType
from apps.audit.overview import Leak, OverviewSection
from apps.mixjobs.models import MixJob
from controlpanel.formatting import plural

# What sync measures: every job file, index file and output, as one subject.
SAMPLE_DOMAIN = "mixjobs"
SAMPLE_SUBJECT = "all"


def live_jobs() -> QuerySet[MixJob]:
    return MixJob.objects.filter(deleted_at__isnull=True, vanished_at__isnull=True)


def stalled_filter() -> Q:
    cutoff = timezone.now() - timedelta(hours=settings.STALLED_JOB_HOURS)
    return Q(state__in=MixJob.IN_PROGRESS, updated_at__lt=cutoff, problem="")


def expired_filter() -> Q:
    return Q(expires_at__lte=timezone.now(), problem="")


def session_jobs_expired(session_id: str, now) -> bool:
    """The mirror knows jobs of the session and every one was past its expiry at `now` (one never
    read, unreadable or unfinished has none): an output left without them was theirs."""
    rows = MixJob.objects.filter(session_id=session_id)
    return rows.exists() and not rows.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).exists()


OVERVIEW_TITLE = "Mix jobs"
TOTALS_CACHE_KEY = "mixjobs:totals"
TOTALS_CACHE_SECONDS = 60


def mixjobs_totals() -> dict:
    """Counts by state, expired and stalled counts and bytes. One scan of the table, kept a
    minute in the shared cache; sync and cleanup drop it when they change the rows."""
    return cache.get_or_set(TOTALS_CACHE_KEY, _mixjobs_totals, TOTALS_CACHE_SECONDS)


def mixjobs_totals_forget() -> None:
    cache.delete(TOTALS_CACHE_KEY)


def _mixjobs_totals() -> dict:
    per_state = {f"state_{value}": Count("id", filter=Q(state=value)) for value in MixJob.State.values}
    held = held_ids(target_type=TargetType.MIXJOB_SESSION)
    # What the cleanup would take: expired jobs of sessions not on hold, with their index files.
    reclaimable = expired_filter() & ~Q(session_id__in=held)
    totals = live_jobs().aggregate(
        **per_state,
        jobs=Count("id"),
        jobs_bytes=Sum("job_bytes"),
        indexes_bytes=Sum("index_bytes"),
        expired=Count("id", filter=reclaimable),
        expired_bytes=Sum(F("job_bytes") + F("index_bytes"), filter=reclaimable),
        stalled=Count("id", filter=stalled_filter()),
        problems=Count("id", filter=~Q(problem="")),
    )
    by_state = {value: totals.pop(f"state_{value}") for value in MixJob.State.values}
    by_state = {state: count for state, count in by_state.items() if count}
    totals = {k: v or 0 for k, v in totals.items()}
    # And a session's final_mix.wav once every job it has left is one of those (it is shared).
    totals["expired_bytes"] += sum(
        live_jobs()
        .values("session_id")
        .annotate(left=Count("id"), going=Count("id", filter=reclaimable), output=Max("output_bytes"))
        .filter(going=F("left"))
        .values_list("output", flat=True)
        .iterator()
    )
    return {"by_state": by_state, **totals}


def mixjobs_held_bytes() -> int | None:
    """Job files, index files and outputs, as the last sync measured them (one query)."""
    sample = StorageSample.objects.filter(domain=SAMPLE_DOMAIN, subject=SAMPLE_SUBJECT).order_by("-sampled_at").first()
    return sample.total_bytes if sample else None


def overview_section() -> OverviewSection:
    """The overview's card and the leak report's rows (registered in MixjobsConfig.ready())."""
    totals = mixjobs_totals()
    held = mixjobs_held_bytes()
    leaks = []
    if totals["expired"]:
        leaks.append(
            Leak(
                label=f"{plural(totals['expired'], 'expired mix job')} not yet removed",
                domain=SAMPLE_DOMAIN,
                bytes=totals["expired_bytes"],
                fix_url=reverse("mixjobs:cleanup"),
                fix_label="Clean up expired jobs",
            )
        )
    rows = [("jobs", totals["jobs"])]
    rows += [(state, count) for state, count in sorted(totals["by_state"].items()) if state]
    rows += [("stalled", totals["stalled"]), ("problems", totals["problems"])]
    return OverviewSection(
        title=OVERVIEW_TITLE,
        url=reverse("mixjobs:list"),
        bytes=held if held is not None else totals["jobs_bytes"] + totals["indexes_bytes"],
        rows=rows,
        leaks=leaks,
    )

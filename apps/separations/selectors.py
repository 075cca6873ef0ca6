"""Reads for the sessions pages and the overview: the mirror and the size samples only,
never the volume itself (pages must not wait on Modal)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import StorageSample
from apps.audit.overview import Leak, OverviewSection
from apps.separations.models import SeparationSession
from apps.separations.services import SAMPLE_DOMAIN, sessions_volume_name
from controlpanel.formatting import humanize_bytes, plural

OLDEST_SHOWN = 5
TITLE = "Separation sessions"


@dataclass
class Gauge:
    volume: str
    used: int | None  # bytes at the last sync, None before the first one
    budget: int
    measured_at: datetime | None

    @property
    def over(self) -> bool:
        return self.used is not None and self.used > self.budget

    @property
    def percent(self) -> int:
        if self.used is None or not self.budget:
            return 0
        return int(self.used * 100 / self.budget)

    @property
    def bar_value(self) -> int:
        return min(100, self.percent)


def stale_age() -> timedelta:
    """Past this age every policy would have deleted a session: still there means a leak."""
    return timedelta(
        minutes=max(settings.SESSIONS_POLICY_DOWNLOAD_AGE_MINUTES, settings.SESSIONS_POLICY_EXIT_AGE_MINUTES)
    )


def volume_name() -> str:
    return sessions_volume_name()


def sessions_gauge(*, volume: str) -> Gauge:
    """One query: the latest size sample of the volume."""
    sample = StorageSample.objects.filter(domain=SAMPLE_DOMAIN, subject=volume).order_by("-sampled_at").first()
    return Gauge(
        volume=volume,
        used=sample.total_bytes if sample else None,
        budget=settings.SESSIONS_VOLUME_MAX_BYTES,
        measured_at=sample.sampled_at if sample else None,
    )


def sessions_totals(*, volume: str) -> dict:
    """One query: live sessions and their bytes, and those past every policy's age."""
    cutoff = timezone.now() - stale_age()
    stale = Q(modified_at__lt=cutoff)
    # Live in the WHERE clause, not in a FILTER on each total: the database then reads only
    # the live entries of its covering index, and tests one condition per row, not four.
    return SeparationSession.objects.filter(volume=volume, status__in=SeparationSession.LIVE).aggregate(
        live_count=Count("pk"),
        live_bytes=Sum("total_bytes", default=0),
        stale_count=Count("pk", filter=stale),
        stale_bytes=Sum("total_bytes", filter=stale, default=0),
    )


def sessions_oldest(*, volume: str, limit: int = OLDEST_SHOWN) -> list[SeparationSession]:
    return list(
        SeparationSession.objects.filter(volume=volume, modified_at__isnull=False)
        .exclude(status=SeparationSession.Status.DELETED)  # live: the partial index's condition
        .order_by("modified_at", "session_id")[:limit]
    )


def overview_section() -> OverviewSection:
    """Bytes against the budget and the leaks, in two queries."""
    volume = volume_name()
    gauge = sessions_gauge(volume=volume)
    totals = sessions_totals(volume=volume)
    leaks = []
    stale_hours = f"{stale_age().total_seconds() / 3600:g} h"
    over_by = gauge.used - gauge.budget if gauge.over else 0
    if totals["stale_count"]:
        label = f"{plural(totals['stale_count'], 'session')} older than {stale_hours} on {volume}"
        if over_by:
            label += f" (volume over its budget by {humanize_bytes(over_by)})"
        leaks.append(
            Leak(
                label=label,
                domain=SAMPLE_DOMAIN,
                bytes=totals["stale_bytes"],
                fix_url=reverse("separations:cleanup", args=["exit"]),
                fix_label="Clean up (exit policy)",
            )
        )
    elif over_by:
        leaks.append(
            Leak(
                label=f"volume {volume} over its {humanize_bytes(gauge.budget)} budget",
                domain=SAMPLE_DOMAIN,
                bytes=over_by,
                fix_url=reverse("separations:list"),
                fix_label="Review sessions",
            )
        )
    budget_text = f"{humanize_bytes(gauge.budget)}"
    if gauge.used is not None:
        budget_text = f"{gauge.percent}% of {budget_text}" + (" (over)" if gauge.over else "")
    return OverviewSection(
        title=TITLE,
        url=reverse("separations:list"),
        bytes=gauge.used if gauge.used is not None else totals["live_bytes"],
        rows=[
            ("Volume", volume),
            ("Sessions", totals["live_count"]),
            ("Budget", budget_text),
            ("Measured", f"{gauge.measured_at:%Y-%m-%d %H:%M} UTC" if gauge.measured_at else "never synced"),
        ],
        leaks=leaks,
    )

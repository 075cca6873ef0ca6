"""What the dashboard reads: the sections every domain app registers (collected by
`apps.audit.overview`; a part out of reach is a section with its error), added up and
cached, the work in flight, and the charts. Nothing here writes a row."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from apps.audit.charts import bytes_chart
from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.audit.overview import Leak, OverviewSection, overview_collect

# The overview and the leak report add up every domain (tens of thousands of rows), so the
# figures are cached under the newest audit event and storage sample: every state change
# that moves bytes writes one or the other, so a committed change makes a new key and shows
# on the next view, without the audit app knowing the dashboard exists.
# OVERVIEW_CACHE_SECONDS bounds the rest (a status moving mid-work, a transaction that took
# its id before the newest one but committed after it).
OVERVIEW_CACHE_PREFIX = "dashboard:overview"


def newest_change_ids() -> tuple[int | None, int | None]:
    """The newest audit event id and the newest storage sample id, in one query."""
    # Two scalar subqueries in one SELECT, which the ORM cannot say without a table to start
    # from; the names come from the models, never from input.
    events, samples = (connection.ops.quote_name(model._meta.db_table) for model in (AuditEvent, StorageSample))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT (SELECT MAX(id) FROM {events}), (SELECT MAX(id) FROM {samples})")  # noqa: S608
        event_id, sample_id = cursor.fetchone()
    return event_id, sample_id


def overview_figures() -> tuple[list[OverviewSection], datetime]:
    """The sections and when they were added up: from the cache while no audit event or
    storage sample has been committed since, otherwise computed now."""
    event_id, sample_id = newest_change_ids()
    key = f"{OVERVIEW_CACHE_PREFIX}:{event_id or 0}:{sample_id or 0}"
    cached = cache.get(key)
    if cached is None:
        cached = (overview_collect(), timezone.now())
        cache.set(key, cached, settings.OVERVIEW_CACHE_SECONDS)
    return cached


def leak_rows(sections: list[OverviewSection]) -> list[Leak]:
    """Every leak of every section, largest first."""
    leaks = [leak for section in sections for leak in section.leaks]
    return sorted(leaks, key=lambda leak: leak.bytes or 0, reverse=True)


def in_flight_context() -> dict:
    """Running work, and what finished in the last ten minutes (so a result stays visible)."""
    recent = timezone.now() - timedelta(minutes=10)
    finished = Operation.objects.filter(status__in=Operation.TERMINAL, finished_at__gte=recent)
    return {
        "active_operations": list(Operation.objects.filter(status__in=Operation.ACTIVE).order_by("created_at")[:20]),
        "finished_operations": list(finished.order_by("-finished_at")[:5]),
    }


def recent_charts(limit: int = 6) -> list[dict]:
    """Bytes over time for the most recently measured subjects of every domain."""
    subjects = (
        StorageSample.objects.values("domain", "subject").annotate(last=Max("sampled_at")).order_by("-last")[:limit]
    )
    return [
        {
            "title": f"{row['domain']}: {row['subject']}",
            "chart": bytes_chart(domain=row["domain"], subject=row["subject"]),
        }
        for row in subjects
    ]

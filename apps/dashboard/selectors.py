"""What the dashboard reads: the sections every domain app registers (collected by
`apps.audit.overview`; a part out of reach is a section with its error), added up and
cached, the work in flight, and the charts. Nothing here writes a row."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from apps.audit import operations
from apps.audit.charts import bytes_chart
from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.audit.overview import Attention, Leak, OverviewSection, bytes_leaked, overview_collect
from apps.dashboard.templatetags.panel import kind_label
from controlpanel.formatting import first_line, humanize_bytes, plural

# The overview and the leak report add up every domain (tens of thousands of rows), so the
# figures are cached under the newest audit event and storage sample: every state change
# that moves bytes writes one or the other, so a committed change makes a new key and shows
# on the next view, without the audit app knowing the dashboard exists.
# OVERVIEW_CACHE_SECONDS bounds the rest (a status moving mid-work, a transaction that took
# its id before the newest one but committed after it).
OVERVIEW_CACHE_PREFIX = "dashboard:overview"
# Failed work older than this has left the overview's strip (Tasks keeps all of it).
ATTENTION_HOURS = 24


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


def attention_items(sections: list[OverviewSection], leaks: list[Leak]) -> list[Attention]:
    """What needs a person, most urgent first: recent work that failed and has not
    succeeded since, parts out of reach, what each domain flags, then the leaks."""
    items = failed_work()
    items += [
        Attention(f"{section.title}: {section.error}", section.url, "error") for section in sections if section.error
    ]
    for section in sections:
        # Figures cached by an older release may predate the field (for OVERVIEW_CACHE_SECONDS).
        items += getattr(section, "attention", [])
    if leaks:
        label = f"{plural(len(leaks), 'leak')} hold {humanize_bytes(bytes_leaked(sections))}"
        items.append(Attention(label, reverse("dashboard:leaks"), "warning"))
    return items


def failed_work(limit: int = 50) -> list[Attention]:
    """Failed or errored work of the last ATTENTION_HOURS, one line per kind and target
    (repeats counted), unless the same work has succeeded since. One query, two when any
    work failed."""
    since = timezone.now() - timedelta(hours=ATTENTION_HOURS)
    fields = ("id", "kind", "target_type", "target_id", "status", "error", "finished_at")
    failed = list(
        Operation.objects.filter(status__in=[Operation.Status.FAILED, Operation.Status.ERRORED], finished_at__gte=since)
        .order_by("-finished_at", "-id")
        .values(*fields)[:limit]
    )
    if not failed:
        return []
    succeeded = {
        (row["kind"], row["target_type"], row["target_id"]): row["last"]
        for row in Operation.objects.filter(
            status=Operation.Status.SUCCEEDED, finished_at__gte=since, kind__in={row["kind"] for row in failed}
        )
        .values("kind", "target_type", "target_id")
        .annotate(last=Max("finished_at"))
    }
    newest: dict[tuple, dict] = {}
    repeats: dict[tuple, int] = {}
    for row in failed:
        key = (row["kind"], row["target_type"], row["target_id"])
        newest.setdefault(key, row)
        repeats[key] = repeats.get(key, 0) + 1
    items = []
    for key, row in newest.items():
        if key in succeeded and succeeded[key] > row["finished_at"]:
            continue
        times = f" ({repeats[key]} times)" if repeats[key] > 1 else ""
        error = first_line(row["error"], default=row["status"])[:160]
        label = f"{kind_label(row['kind'])} on {row['target_type']} {row['target_id']} {row['status']}{times}: {error}"
        items.append(Attention(label, reverse("dashboard:operation", args=[row["id"]]), "error"))
    return items


def schedule_actors() -> set[str]:
    """The names schedules act under: their successes are routine."""
    return {kind.schedule.actor for kind in operations.kinds() if kind.schedule is not None}


def operation_kinds() -> list[tuple[str, str]]:
    """Every declared kind as (name, label), for the Tasks filter, by label."""
    return sorted(((kind.name, kind.label) for kind in operations.kinds()), key=lambda pair: pair[1].lower())


def operations_filtered(query) -> tuple:
    """Tasks' rows for a query string (kind, target, actor, status, routine) and the
    filters it applied. Routine schedule successes (a schedule's run that went well, every
    minute for some kinds) are left out unless `routine` is set."""
    queryset = Operation.objects.all()
    filters = {}
    for name in ("kind", "target", "actor", "status"):
        value = query.get(name, "").strip()[:255]
        if value:
            filters[name] = value
    if filters.get("kind"):
        queryset = queryset.filter(kind=filters["kind"])
    if filters.get("target"):
        queryset = queryset.filter(target_id__icontains=filters["target"])
    if filters.get("actor"):
        queryset = queryset.filter(actor_name__icontains=filters["actor"])
    if filters.get("status") in Operation.Status.values:
        queryset = queryset.filter(status=filters["status"])
    filters["routine"] = query.get("routine") == "1"
    if not filters["routine"]:
        queryset = queryset.exclude(
            status=Operation.Status.SUCCEEDED, actor_user__isnull=True, actor_name__in=schedule_actors()
        )
    return queryset, filters

"""The panel watching itself: the leak total against NOTIFY_LEAK_BYTES, and a daily digest.
Both are operation kinds with schedules, declared here and registered by AuditConfig."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.notify import notify
from apps.audit.operations import OperationKind, Schedule
from apps.audit.overview import bytes_held, bytes_leaked, overview_collect
from apps.audit.services import operation_log
from controlpanel.formatting import humanize_bytes, plural


def _previous_result(kind: str, operation: Operation) -> dict:
    previous = (
        Operation.objects.filter(kind=kind, status=Operation.Status.SUCCEEDED)
        .exclude(pk=operation.pk)
        .order_by("-finished_at", "-id")
        .first()
    )
    return previous.result if previous else {}


def leak_watch(operation: Operation) -> dict:
    """Notify when the leak total crosses NOTIFY_LEAK_BYTES upwards (not on every run above it)."""
    leaked = bytes_leaked(overview_collect())
    limit = settings.NOTIFY_LEAK_BYTES
    before = _previous_result(Kind.PANEL_WATCH, operation).get("leaked_bytes", 0)
    crossed = limit > 0 and leaked >= limit > before
    operation_log(operation, f"leaks hold {humanize_bytes(leaked)}; the limit is {humanize_bytes(limit)}")
    if crossed:
        notify(
            event="leaks.over-limit",
            subject="all",
            title=f"Leaks hold {humanize_bytes(leaked)}",
            body=f"Storage held by leaks is {humanize_bytes(leaked)} ({leaked} bytes), over the limit of "
            f"{humanize_bytes(limit)}. The leak report lists each one with its fix.",
        )
    return {"leaked_bytes": leaked, "limit_bytes": limit, "crossed": crossed}


def digest_send(operation: Operation) -> dict:
    """Held, leaked, reclaimed and failures of the last day, in one message."""
    sections = overview_collect()
    since = timezone.now() - timedelta(days=1)
    reclaimed = AuditEvent.objects.filter(occurred_at__gte=since).aggregate(total=Sum("bytes_reclaimed", default=0))
    failures = Operation.objects.filter(finished_at__gte=since).aggregate(
        failed=Count("id", filter=Q(status=Operation.Status.FAILED)),
        errored=Count("id", filter=Q(status=Operation.Status.ERRORED)),
    )
    result = {
        "held_bytes": bytes_held(sections),
        "leaked_bytes": bytes_leaked(sections),
        "reclaimed_bytes": reclaimed["total"],
        "failed": failures["failed"],
        "errored": failures["errored"],
    }
    lines = [
        f"Held: {humanize_bytes(result['held_bytes'])}",
        f"Leaked: {humanize_bytes(result['leaked_bytes'])}",
        f"Reclaimed in the last 24 h: {humanize_bytes(result['reclaimed_bytes'])}",
        f"Failed operations: {result['failed']}, errored: {result['errored']}",
    ]
    lines += [f"{section.title}: {section.error}" for section in sections if section.error]
    sent = notify(
        event="digest",
        subject=timezone.now().strftime("%Y-%m-%d"),
        title="Storage control panel: daily digest",
        body="\n".join(lines),
        level="info",
    )
    return {**result, "sent": sent}


def _describe_watch(result: dict) -> str:
    state = "over" if result["leaked_bytes"] >= result["limit_bytes"] > 0 else "within"
    told = " People were notified." if result.get("crossed") else ""
    return f"Leaks hold {humanize_bytes(result['leaked_bytes'])}, {state} the limit.{told}"


def _describe_digest(result: dict) -> str:
    problems = plural(result["failed"] + result["errored"], "failed operation")
    sent = {True: "sent", False: "not sent (see the audit log)", None: "not sent (notifications are off)"}
    return (
        f"Digest {sent[result['sent']]}: {humanize_bytes(result['held_bytes'])} held, "
        f"{humanize_bytes(result['leaked_bytes'])} leaked, {problems} in a day."
    )


KINDS = [
    OperationKind(
        name=Kind.PANEL_WATCH,
        target_type=TargetType.PANEL,
        target_id="leaks",
        run=leak_watch,
        permission="audit.retry_operation",
        audit_action=AuditAction.NOTIFY_SENT,
        label="Watch the leak total",
        describe=_describe_watch,
        schedule=Schedule("watch leaks", 15, "schedule:watch-leaks"),
    ),
    OperationKind(
        name=Kind.PANEL_DIGEST,
        target_type=TargetType.PANEL,
        target_id="digest",
        run=digest_send,
        permission="audit.retry_operation",
        audit_action=AuditAction.NOTIFY_SENT,
        label="Send the daily digest",
        describe=_describe_digest,
        schedule=Schedule("daily digest", 24 * 60, "schedule:daily-digest"),
    ),
]

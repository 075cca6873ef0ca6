"""Template helpers every page uses: humanised sizes, status badges, and operations told
in words (their kind's label, the sentence of their result)."""

from datetime import UTC, datetime

from django import template
from django.utils.html import format_html
from django.utils.text import slugify

from apps.audit import operations
from apps.audit.models import Operation
from apps.audit.roles import OUR_APPS
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes, humanize_duration

register = template.Library()

RETRYABLE = {Operation.Status.FAILED, Operation.Status.ERRORED}

register.filter("bytes", humanize_bytes)


@register.simple_tag
def badge(status) -> str:
    """A coloured badge whose text also says the status (colour is never the only signal).
    A plain tag, not an included template: list pages draw one per row."""
    text = str(status)
    return format_html('<span class="badge badge-{}">{}</span>', slugify(text), text)


@register.filter
def kind_label(kind_name) -> str:
    """The declared label of a kind of work; an old row of a kind no longer declared keeps its raw name."""
    try:
        return operations.kind_get(kind_name).label
    except PanelError:
        return str(kind_name)


@register.filter
def outcome(operation) -> str:
    """One sentence for people about how the operation ended, or where it is."""
    return operations.sentence(operation)


@register.filter
def can_retry(operation, user) -> bool:
    """Offer Retry only where it can work: failed work of a declared kind, and a person who
    may both retry and ask for that kind."""
    if operation.status not in RETRYABLE or not user.has_perm("audit.retry_operation"):
        return False
    try:
        return operations.user_may(user, operation.kind)
    except PanelError:
        return False


@register.filter
def may_act(user) -> bool:
    """Whether this person's role may change anything here (an operator), or only look (a
    viewer). For controls whose exact kind of work the page does not know (a leak's fix)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    # get_all_permissions() is the same per-request cache `perms` and has_perm fill.
    return any(
        perm.split(".", 1)[0] in OUR_APPS and not perm.split(".", 1)[1].startswith("view_")
        for perm in user.get_all_permissions()
    )


@register.simple_tag(takes_context=True)
def may_confirm(context) -> bool:
    """Whether the confirmation page's button is live for this person: the kind it asks
    for when the page names one, otherwise the person's role."""
    user = context.get("user")
    kind = context.get("kind")
    if not kind:
        return may_act(user)
    try:
        return operations.user_may(user, kind)
    except PanelError:
        return False


@register.filter
def percent(part, whole) -> int:
    try:
        return max(0, min(100, int(float(part) * 100 / float(whole))))
    except (TypeError, ValueError, ZeroDivisionError):
        return 0


@register.filter
def utc(value, precision: str = "minutes") -> str:
    """A time as UTC `YYYY-MM-DD HH:MM` (or `…:SS` with `utc:"seconds"`), "" for none.

    List pages draw two per row: a plain strftime, not the localising `date` filter."""
    if not isinstance(value, datetime):
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S" if precision == "seconds" else "%Y-%m-%d %H:%M")


@register.filter
def age(value, now=None) -> str:
    """How long ago, in the two largest units ("3 d 4 h", "5 min"): cheaper than `timesince`,
    which list pages would call once per row."""
    if not isinstance(value, datetime):
        return ""
    now = now if isinstance(now, datetime) else datetime.now(UTC)
    return humanize_duration((now - value).total_seconds())


@register.filter
def progress_of(operation) -> dict:
    """What a progress bar may honestly say (issue #17): its phase from the first second
    (the newest log line, else where the work stands), a value only when the total is known
    and not passed (otherwise indeterminate, with the amount so far), never done > total."""
    done, total, unit = operation.progress_done or 0, operation.progress_total, operation.progress_unit
    lines = (operation.log or "").strip().splitlines()
    # Log lines start with a "YYYY-MM-DD HH:MM:SS " stamp; the phase is what follows it.
    phase = lines[-1][20:] if lines else ("waiting for a worker" if operation.status == "pending" else "starting")
    known = bool(total) and done <= total
    show = humanize_bytes if unit == "bytes" else str
    amount = ""
    if done or total:
        amount = f"{show(done)} of {show(total)}" if known else f"{show(done)} so far"
        if unit and unit != "bytes":
            amount += f" {unit}"
    return {"phase": phase, "amount": amount, "value": operation.percent if known else None}


@register.simple_tag
def size(value) -> str:
    """Bytes for people, the exact count on hover: `{% size volume.size_bytes %}`."""
    if value is None or value == "":
        return humanize_bytes(value)
    try:
        exact = f"{int(value):,} bytes"
    except (TypeError, ValueError):
        return humanize_bytes(value)
    return format_html('<span class="bytes" title="{}">{}</span>', exact, humanize_bytes(value))

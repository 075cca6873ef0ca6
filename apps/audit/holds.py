"""Holds: set and release them (audited), and ask whether something is held.

Every deletion path asks before it deletes: an automatic one (schedules, policies, sweeps)
skips what `held_ids` returns and reports it kept "on hold"; a manual one calls
`hold_refuse` and is refused with one line until the hold is released. Those answers are
for plans and previews: at the moment of each deletion the path asks again with
`hold_guard` and deletes inside its block, under the lock `hold_set` writes with
(`apps.audit.holdlocks`), so a hold that answered "set" is never followed by the deletion.

    with hold_guard((TargetType.SEPARATION_SESSION, session_id)) as hold:
        if hold is None:
            backend.remove(path, recursive=True)
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.audit.holdlocks import deletion_locked, hold_write_locked, wide_locked
from apps.audit.models import Hold
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, actor_parts, audit_record
from controlpanel.errors import InvalidInput, NotFound, PanelError

HOLDABLE = {
    TargetType.POD,
    TargetType.SNAPSHOT,
    TargetType.SEPARATION_SESSION,
    TargetType.MIXJOB_SESSION,
    TargetType.VOLUME_FOLDER,
}
ON_HOLD = "on hold"


# Where a held thing lives, for a removal that reaches whatever lies inside a folder: per
# target type, each place of one held id as (volume URL, path inside it, what to call it).
# Each app registers its own in `AppConfig.ready()`.
HOLD_PLACES: dict[str, Callable[[str], list[tuple[str, str, str]]]] = {}


def hold_places_register(target_type: str, places: Callable[[str], list[tuple[str, str, str]]]) -> None:
    HOLD_PLACES[target_type] = places


def held_places() -> Iterator[tuple[Hold, str, str, str]]:
    """Every active hold whose type says where its item lives, with each of its places."""
    for hold in holds_active().filter(target_type__in=list(HOLD_PLACES)).order_by("target_type", "target_id"):
        for url, path, label in HOLD_PLACES[hold.target_type](hold.target_id):
            yield hold, url, path, label


class Held(PanelError):
    """A manual deletion of something on hold; release the hold first."""


def holds_active(now: datetime | None = None) -> QuerySet[Hold]:
    now = now or timezone.now()
    return Hold.objects.filter(released_at__isnull=True).filter(Q(until__isnull=True) | Q(until__gt=now))


def hold_for(*, target_type: str, target_id: str) -> Hold | None:
    return holds_active().filter(target_type=target_type, target_id=str(target_id)).first()


def held_ids(*, target_type: str, target_ids: Iterable[str] | None = None) -> set[str]:
    """Which of these (or, with None, which at all) are on hold now: one query."""
    held = holds_active().filter(target_type=target_type)
    if target_ids is not None:
        held = held.filter(target_id__in=[str(target_id) for target_id in target_ids])
    return set(held.values_list("target_id", flat=True))


@contextmanager
def hold_guard(*targets: tuple[str, str]) -> Iterator[Hold | None]:
    """The hold on any of `targets` now, or None, read under each target's lock; the lock
    stays until the block ends, so what the block deletes while it saw None stays unheld
    until it is gone (a `hold_set` meanwhile waits for it)."""
    shown = ", ".join(f"{kind} {ident}" for kind, ident in targets)[:120]
    with deletion_locked(targets, busy=f"could not check the holds on {shown}: try again in a minute"):
        found = None
        for target_type, target_id in targets:
            found = found or hold_for(target_type=target_type, target_id=target_id)
        yield found


@contextmanager
def holds_frozen(*, what: str) -> Iterator[None]:
    """No hold of any kind is set while the block runs: for a removal that reaches whatever
    lies inside a folder, which reads every hold inside the block and removes in it."""
    with wide_locked(busy=f"could not check the holds for {what}: try again in a minute"):
        yield


def hold_refuse(*, target_type: str, target_id: str, what: str) -> None:
    """Refuse a manual deletion of a held item with one line saying whose hold and why."""
    hold = hold_for(target_type=target_type, target_id=target_id)
    if hold is not None:
        until = f" until {hold.until:%Y-%m-%d %H:%M} UTC" if hold.until else ""
        raise Held(f"{what} is on hold by {hold.held_by}{until} ({hold.reason}); release the hold first")


def hold_set(*, target_type: str, target_id: str, reason: str, actor: Actor, until: datetime | None = None) -> Hold:
    if target_type not in HOLDABLE:
        raise InvalidInput(f"{str(target_type)[:40]!r} cannot be held: use one of {', '.join(sorted(HOLDABLE))}")
    target_id = str(target_id).strip()
    reason = (reason or "").strip()
    if not target_id or len(target_id) > 255 or "\x00" in target_id:
        raise InvalidInput("a hold needs the id of what it holds (at most 255 characters)")
    if not reason:
        raise InvalidInput("a hold needs a reason, so others know why it is there")
    if until is not None and until <= timezone.now():
        raise InvalidInput("a hold's end must be in the future")
    user, name = actor_parts(actor)
    busy = (
        f"a deletion that reaches {target_type} {target_id[:80]} is running; "
        "the hold was not set: try again when it ends"
    )
    with hold_write_locked((target_type, target_id), busy=busy):
        existing = hold_for(target_type=target_type, target_id=target_id)
        if existing is not None:
            raise PanelError(f"{target_type} {target_id} is already on hold by {existing.held_by} ({existing.reason})")
        hold = Hold.objects.create(
            target_type=target_type,
            target_id=target_id,
            reason=reason[:300],
            held_by_user=user,
            held_by=name,
            until=until,
        )
        audit_record(
            actor=actor,
            action=AuditAction.HOLD_SET,
            target_type=target_type,
            target_id=target_id,
            message=f"on hold: {reason}" + (f" (until {until:%Y-%m-%d %H:%M} UTC)" if until else ""),
            details={"hold": hold.pk},
        )
    return hold


def hold_release(*, target_type: str, target_id: str, actor: Actor) -> Hold:
    with transaction.atomic():
        hold = holds_active().select_for_update().filter(target_type=target_type, target_id=str(target_id)).first()
        if hold is None:
            raise NotFound(f"{target_type} {str(target_id)[:80]} is not on hold")
        _, name = actor_parts(actor)
        hold.released_at, hold.released_by = timezone.now(), name
        hold.save(update_fields=["released_at", "released_by"])
        audit_record(
            actor=actor,
            action=AuditAction.HOLD_RELEASE,
            target_type=target_type,
            target_id=str(target_id),
            message=f"hold released (was: {hold.reason})",
            details={"hold": hold.pk},
        )
    return hold


def holds_by_id(*, target_type: str, target_ids: Iterable[str]) -> dict[str, Hold]:
    """The active hold of each of these, by target id: one query for a page of rows."""
    found = holds_active().filter(target_type=target_type, target_id__in=[str(target_id) for target_id in target_ids])
    return {hold.target_id: hold for hold in found}

"""The one hold control every page shows (a pod, a separation session, a mix-job session, a
volume folder) and the one pair of views that set and release a hold from it.

A page renders `{% hold_control target_type target_id %}`; its forms post to
`dashboard:hold-set` / `dashboard:hold-release`. With htmx the answer is the control itself,
re-read, and an `HX-Trigger: hold-changed` so the page's other parts (audit trails) reload;
without it, a redirect back to the page with a message."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.audit.holds import HOLDABLE, hold_for, hold_release, hold_set
from apps.audit.models import Hold
from apps.audit.names import TargetType
from controlpanel.errors import InvalidInput, PanelError

HOLD_PERMISSION = "audit.hold_storage"
TEMPLATE = "includes/hold.html"
# What a hold on each kind of thing keeps from happening, said under the control.
KEEPS = {
    TargetType.POD: "Nothing stops, deprovisions or deletes this pod or purges its snapshots",
    TargetType.SNAPSHOT: "Retention never purges this snapshot, and its pod cannot be deleted,",
    TargetType.SEPARATION_SESSION: "No cleanup policy and no manual cleanup deletes this session",
    TargetType.MIXJOB_SESSION: "No cleanup deletes this session's mix jobs, index files or final mix",
    TargetType.VOLUME_FOLDER: "No folder removal deletes this folder, anything in it or a folder above it",
}


@dataclass(frozen=True)
class HoldControl:
    target_type: str
    target_id: str
    hold: Hold | None
    may_change: bool
    compact: bool = False
    error: str = ""

    @property
    def keeps(self) -> str:
        return f"{KEEPS.get(self.target_type, 'Nothing deletes this')} until the hold is released."

    @property
    def dom_id(self) -> str:
        # Ids may hold slashes and colons (`volume:cache/x`): a stable digest is a valid HTML id.
        return "hold-" + hashlib.sha256(f"{self.target_type}\0{self.target_id}".encode()).hexdigest()[:12]


def hold_control_context(
    request, *, target_type: str, target_id: str, compact: bool = False, holds: dict | None = None, error: str = ""
) -> dict:
    """The include's context. `holds`: every row's active hold by target id, when a page that
    lists many read them in one query (`holds_by_id`)."""
    if holds is not None:
        hold = holds.get(str(target_id))
    else:
        hold = hold_for(target_type=target_type, target_id=target_id)
    control = HoldControl(
        target_type=target_type,
        target_id=str(target_id),
        hold=hold,
        may_change=request.user.has_perm(HOLD_PERMISSION),
        compact=compact,
        error=error,
    )
    # Back to the page, not to the part of it that htmx reloaded (`?part=…`).
    query = request.GET.copy()
    query.pop("part", None)
    back = f"{request.path}?{query.urlencode()}" if query else request.path
    return {"control": control, "next": back, "user": request.user}


def _until(text: str) -> datetime | None:
    """An optional end: a date (the end of that day, UTC) or a date and time (UTC)."""
    text = (text or "").strip()
    if not text:
        return None
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise InvalidInput(f"{text[:40]!r} is not a date (YYYY-MM-DD) or a date and time")
        moment = datetime.combine(day, time(23, 59, 59))
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


def _target(request) -> tuple[str, str]:
    if not request.user.has_perm(HOLD_PERMISSION):
        raise PermissionDenied
    target_type = request.POST.get("target_type", "")
    target_id = request.POST.get("target_id", "").strip()
    if target_type not in HOLDABLE or not target_id:
        raise Http404("nothing of that kind can be held")
    return target_type, target_id


def _answer(request, target_type: str, target_id: str, *, error: str, done: str):
    compact = request.POST.get("compact") == "1"
    if request.headers.get("HX-Request"):
        context = hold_control_context(
            request, target_type=target_type, target_id=target_id, compact=compact, error=error
        )
        # The page the control sits on, not this view's URL, is where its forms come back to.
        context["next"] = _back(request)
        response = render(request, TEMPLATE, context)
        response["HX-Trigger"] = "hold-changed"
        return response
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    return redirect(_back(request))


def _back(request) -> str:
    back = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return back if safe and back.startswith("/") else "/"


def _label(target_type: str, target_id: str) -> str:
    return f"{TargetType(target_type).label.capitalize()} {target_id}"


@require_POST
def hold_set_view(request):
    target_type, target_id = _target(request)
    error = ""
    try:
        hold_set(
            target_type=target_type,
            target_id=target_id,
            reason=request.POST.get("reason", ""),
            until=_until(request.POST.get("until", "")),
            actor=request.user,
        )
    except PanelError as exc:
        error = str(exc)
    except ValueError:  # a date the calendar has not got (2026-02-30)
        error = "that end date does not exist"
    done = f"{_label(target_type, target_id)} is on hold: nothing deletes it until the hold is released."
    return _answer(request, target_type, target_id, error=error, done=done)


@require_POST
def hold_release_view(request):
    target_type, target_id = _target(request)
    error = ""
    try:
        hold_release(target_type=target_type, target_id=target_id, actor=request.user)
    except PanelError as exc:
        error = str(exc)
    done = f"Hold on {_label(target_type, target_id).lower()} released."
    return _answer(request, target_type, target_id, error=error, done=done)

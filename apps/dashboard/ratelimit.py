"""Failed-login limiting, per username and per client address, through django-axes.

django-axes counts the failures (settings `AXES_*`, from `LOGIN_RATE_LIMIT` and
`LOGIN_RATE_WINDOW_SECONDS`) in its `AccessAttempt` rows: one per username, address and
browser, created under a unique constraint and incremented with `F() + 1` under a row lock,
so failures that arrive together are all counted; the admin lists them under "Axes". What is
ours: how a username is counted, the page a locked-out visitor sees (saying when to retry),
and clearing a username's failures once it logs in.
"""

import math
from datetime import timedelta

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_ip_address, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.utils import reset
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from controlpanel.formatting import plural


def login_username(request, credentials: dict | None) -> str | None:
    """The username failures are counted under (`AXES_USERNAME_CALLABLE`): without case, so
    `Root` and `root` share one count."""
    source = credentials if credentials else getattr(request, "POST", {})
    name = source.get("username")
    return name.lower() if isinstance(name, str) else None


def login_retry_after(request, credentials: dict | None = None) -> timedelta:
    """How long until enough of the failures that lock this visitor out (by username or by
    address) have left the window for the count to drop under the limit."""
    window = get_cool_off(request)
    limit = get_failure_limit(request, credentials)
    now = timezone.now()
    wait = timedelta(0)
    for who in ({"username": login_username(request, credentials)}, {"ip_address": get_client_ip_address(request)}):
        attempts = list(AccessAttempt.objects.filter(**who, attempt_time__gt=now - window).order_by("attempt_time"))
        counted = sum(attempt.failures_since_start for attempt in attempts)
        # Rows leave the window oldest first; the lock lifts when the one that brings the
        # count under the limit does.
        for attempt in attempts:
            if counted < limit:
                break
            wait = max(wait, attempt.attempt_time + window - now)
            counted -= attempt.failures_since_start
    return wait


def login_locked_out(request, original_response=None, credentials: dict | None = None):
    """The login page again, refusing with the time to wait (`AXES_LOCKOUT_CALLABLE`)."""
    wait = login_retry_after(request, credentials)
    minutes = max(1, math.ceil(wait.total_seconds() / 60))
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    context = {
        "form": AuthenticationForm(request, initial={"username": request.POST.get("username", "")}),
        "lockout": f"Too many failed logins. Try again in {plural(minutes, 'minute')}.",
        "next": next_url,
    }
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(max(1, math.ceil(wait.total_seconds())))
    return response


def login_succeeded(*, username: str) -> None:
    """A login clears that username's failures; the address's other failures still count."""
    reset(username=username.lower())


def login_limit_middleware(get_response):
    """Stamps every request with what django-axes measures (time, address, browser) before the
    view runs, not only logins: its admin action "clean up expired attempts" reads the time
    and would fail with a 500 without it."""

    def middleware(request):
        AxesProxyHandler.update_request(request)
        return get_response(request)

    return middleware

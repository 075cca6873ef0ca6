"""Failed-login limiting through django-axes: per username and per address, a page that says
when to retry, failures listed in the admin, `LOGIN_RATE_*` still the settings."""

import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

WRONG = "not-the-password"
RIGHT = "pw-root-123!"


@pytest.fixture
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=10)
    return 3


def log_in(client, username, password, *, address="127.0.0.1", url=None, **extra):
    return client.post(
        url or reverse("login"), {"username": username, "password": password, **extra}, REMOTE_ADDR=address
    )


def failures(**who) -> int:
    return AccessAttempt.objects.filter(**who).aggregate(total=Sum("failures_since_start"))["total"] or 0


def test_the_limit_and_window_come_from_login_rate_settings(tmp_path):
    code = "from django.conf import settings as s; print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds())"
    env = {
        "PATH": "/usr/bin:/bin",
        "VAR_DIR": str(tmp_path),
        "LOGIN_RATE_LIMIT": "7",
        "LOGIN_RATE_WINDOW_SECONDS": "90",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=django_settings.BASE_DIR,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "90.0"]


def test_lockout_says_when_to_retry_and_the_wait_counts_down(client, staff_user, limit):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(limit - 1):
            assert log_in(client, "root", WRONG).status_code == 200
        locked = log_in(client, "root", WRONG)
        assert locked.status_code == 429
        assert "Too many failed logins. Try again in 10 minutes." in locked.text
        assert locked["Retry-After"] == "600"
        assert failures(username="root") == limit

        clock.move_to(start + timedelta(minutes=4, seconds=30))
        # The right password does not get through, and the refused attempt is not counted,
        # so the wait it announces stays true.
        blocked = log_in(client, "root", RIGHT)
        assert blocked.status_code == 429
        assert "Try again in 6 minutes." in blocked.text
        assert failures(username="root") == limit

        clock.move_to(start + timedelta(minutes=10, seconds=1))
        assert log_in(client, "root", RIGHT).status_code == 302


def test_a_username_is_limited_from_any_address_and_without_case(client, staff_user, limit):
    for n in range(limit):
        log_in(client, "ROOT" if n % 2 else "root", WRONG, address=f"10.0.0.{n + 1}")
    blocked = log_in(client, "root", RIGHT, address="10.9.9.9")
    assert blocked.status_code == 429
    assert "Try again in" in blocked.text


def test_an_address_is_limited_whatever_username_it_tries(client, staff_user, limit):
    for n in range(limit):
        log_in(client, f"guess-{n}", WRONG, address="10.0.0.66")
    assert log_in(client, "root", RIGHT, address="10.0.0.66").status_code == 429
    # Another address is not held back by that one.
    assert log_in(client, "root", RIGHT, address="10.0.0.67").status_code == 302


def test_a_login_clears_its_username_but_not_the_address(client, staff_user, limit):
    log_in(client, "root", WRONG, address="10.0.0.5")
    log_in(client, "guest", WRONG, address="10.0.0.5")
    assert failures(ip_address="10.0.0.5") == 2
    assert log_in(client, "root", RIGHT, address="10.0.0.5").status_code == 302
    assert failures(username="root") == 0
    # The other username's failure from that address still counts.
    assert failures(ip_address="10.0.0.5") == 1
    client.logout()
    assert log_in(client, "guest", WRONG, address="10.0.0.5").status_code == 200
    assert log_in(client, "guest", WRONG, address="10.0.0.5").status_code == 429


def test_the_admin_login_is_limited_too(client, staff_user, limit):
    url = reverse("admin:login")
    for _ in range(limit - 1):
        assert log_in(client, "root", WRONG, url=url).status_code == 200
    assert log_in(client, "root", WRONG, url=url).status_code == 429
    assert log_in(client, "root", RIGHT, url=url).status_code == 429


def test_the_lockout_page_never_echoes_an_outside_next(client, staff_user, limit):
    for _ in range(limit):
        log_in(client, "root", WRONG)
    page = log_in(client, "root", RIGHT, next="https://evil.example/")
    assert page.status_code == 429
    assert "evil.example" not in page.text
    assert 'name="next" value="/pods/"' in log_in(client, "root", RIGHT, next="/pods/").text


def test_failures_are_listed_in_the_admin(staff_client, limit):
    visitor = Client()
    log_in(visitor, "mallory", WRONG, address="10.0.0.99")
    log_in(visitor, "mallory", WRONG, address="10.0.0.99")
    page = staff_client.get(reverse("admin:axes_accessattempt_changelist"))
    assert page.status_code == 200
    assert "mallory" in page.text and "10.0.0.99" in page.text
    row = AccessAttempt.objects.get(username="mallory")
    detail = staff_client.get(reverse("admin:axes_accessattempt_change", args=[row.pk]))
    assert detail.status_code == 200
    assert '<div class="readonly">2</div>' in detail.text  # failures since start

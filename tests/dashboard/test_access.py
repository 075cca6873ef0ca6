import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from apps.audit.models import AuditEvent, Operation
from apps.audit.services import operation_create, operation_execute
from controlpanel.errors import PanelError

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_non_staff_accounts_are_refused(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="someone", password="x-Password-1"))
    assert client.get(reverse("dashboard:overview")).status_code == 403


def test_staff_sees_the_overview_with_navigation(staff_client):
    response = staff_client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    for label in ["Pods", "Sessions", "Mix jobs", "Volumes", "Tasks", "Audit"]:
        assert f">{label}</a>" in response.text


def test_pages_carry_security_headers_and_no_inline_script(staff_client):
    response = staff_client.get(reverse("dashboard:overview"))
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert "<script>" not in response.text and "onclick=" not in response.text


def test_login_is_rate_limited(client, staff_user):
    url = reverse("login")
    for _ in range(django_settings.LOGIN_RATE_LIMIT - 1):
        assert client.post(url, {"username": "root", "password": "wrong"}).status_code == 200
    # The failure that reaches the limit already answers with the wait (django-axes).
    assert client.post(url, {"username": "root", "password": "wrong"}).status_code == 429
    blocked = client.post(url, {"username": "root", "password": "pw-root-123!"})
    assert blocked.status_code == 429
    assert "Too many failed logins" in blocked.text


def test_login_with_the_right_password_reaches_the_overview(client, staff_user):
    response = client.post(reverse("login"), {"username": "root", "password": "pw-root-123!"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("dashboard:overview")


def test_operation_progress_fragment_polls_only_while_active(staff_client):
    operation = operation_create(kind="demo", target_type="thing", target_id="1", actor="tests")
    running = staff_client.get(reverse("dashboard:operation-progress", args=[operation.pk]))
    assert 'hx-trigger="every 1s"' in running.text
    operation_execute(operation_id=operation.pk, work=lambda op: {})
    done = staff_client.get(reverse("dashboard:operation-progress", args=[operation.pk]))
    assert "hx-trigger" not in done.text and "succeeded" in done.text


def test_retry_needs_post_permission_and_csrf(viewer_client, staff_user, client):
    operation = operation_create(kind="demo", target_type="thing", target_id="1", actor="tests", task="x.y")
    operation_execute(operation_id=operation.pk, work=lambda op: (_ for _ in ()).throw(PanelError("no")))
    url = reverse("dashboard:operation-retry", args=[operation.pk])
    assert viewer_client.get(url).status_code == 405
    assert viewer_client.post(url).status_code == 403
    viewer_client.logout()
    client.force_login(staff_user)
    client.handler.enforce_csrf_checks = True
    assert client.post(url).status_code == 403
    assert Operation.objects.count() == 1


def test_audit_page_filters_events(staff_client):
    from apps.audit.services import audit_record

    audit_record(actor="tests", action="pod.stop", target_type="pod", target_id="alpha")
    audit_record(actor="tests", action="mixjobs.cleanup", target_type="session", target_id="beta")
    response = staff_client.get(reverse("dashboard:audit"), {"target_id": "alpha"})
    assert "alpha" in response.text and "beta" not in response.text
    assert AuditEvent.objects.count() == 2


def test_check_deploy_passes_with_production_settings(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DEBUG": "0",
        "SECRET_KEY": "a-real-secret-" + "x" * 60,
        "ALLOWED_HOSTS": "panel.example.com",
        "VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True,
        text=True,
        env=env,
        cwd=django_settings.BASE_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_a_secret(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DEBUG": "0", "VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, env=env, cwd=django_settings.BASE_DIR
    )
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) is required" in result.stderr

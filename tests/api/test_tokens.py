"""Tokens: printed once, kept as a hash, refused once revoked (CLI and admin)."""

import hashlib
from io import StringIO

import pytest
from django.core.management import call_command

from apps.api.models import ApiToken
from apps.audit.models import AuditEvent
from tests.api.conftest import bearer

pytestmark = pytest.mark.django_db


def apitoken(*args) -> str:
    out = StringIO()
    call_command("apitoken", *args, stdout=out)
    return out.getvalue()


def test_create_prints_the_token_once_alone_on_its_last_line_and_keeps_only_its_hash(client):
    printed = apitoken("create", "deploy-bot", "--group", "operator")
    secret = printed.splitlines()[-1]
    assert secret.startswith("cpt_") and " " not in secret and len(secret) > 40
    assert "api:deploy-bot" in printed and "operator" in printed

    token = ApiToken.objects.get(name="deploy-bot")
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in ApiToken.objects.values_list().get(pk=token.pk)]
    assert all(secret not in value for value in stored)
    assert secret[:10] == token.prefix
    listed = apitoken("list")
    assert "deploy-bot" in listed and token.prefix in listed and secret not in listed

    assert "never used" in listed
    assert client.get("/api/pods", **bearer(secret)).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert "last used" in apitoken("list")


def test_a_name_is_taken_once_and_a_role_must_exist():
    apitoken("create", "once", "--group", "viewer")
    with pytest.raises(Exception, match="already exists"):
        apitoken("create", "once", "--group", "viewer")
    with pytest.raises(Exception, match="not a token name"):
        apitoken("create", "Bad Name", "--group", "viewer")


def test_a_token_revoked_with_the_cli_is_refused_with_401(client):
    secret = apitoken("create", "old-ci", "--group", "operator").splitlines()[-1]
    assert client.get("/api/pods", **bearer(secret)).status_code == 200
    assert "revoked" in apitoken("revoke", "old-ci")
    response = client.get("/api/pods", **bearer(secret))
    assert response.status_code == 401
    assert response.json() == {"error": "missing, wrong or revoked API token"}
    assert "revoked" in apitoken("list")
    # Making and revoking a token are audit events; the token itself is in neither.
    events = AuditEvent.objects.filter(target_type="api-token", target_id="old-ci").order_by("pk")
    assert list(events.values_list("action", flat=True)) == ["api.token-create", "api.token-revoke"]
    assert all(secret not in event.message + str(event.details) for event in events)


def test_a_token_revoked_in_the_admin_is_refused_with_401(client, staff_client):
    secret = apitoken("create", "leaked", "--group", "viewer").splitlines()[-1]
    token = ApiToken.objects.get(name="leaked")
    response = staff_client.post(
        "/admin/api/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert "Revoked API token leaked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    staff_client.logout()
    assert client.get("/api/pods", **bearer(secret)).status_code == 401


def test_no_token_or_a_wrong_one_is_401_json_not_a_login_redirect(client, operator_token):
    # As a real client: without a session there is no CSRF check to fail, a POST too is a 401.
    client.handler.enforce_csrf_checks = True
    for headers in ({}, bearer("cpt_not-a-token"), bearer(operator_token[:-1]), {"HTTP_AUTHORIZATION": "Basic eDp5"}):
        for response in (client.get("/api/pods", **headers), client.post("/api/pods/p1/stop", **headers)):
            assert response.status_code == 401
            assert response["Content-Type"] == "application/json"
            assert response.json()["error"] == "missing, wrong or revoked API token"
            assert response["WWW-Authenticate"].startswith("Bearer")

"""The separation service's three cleanups, now in the API and its document: the service's
token and its answers are what they were, byte for byte; an API token works too."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.audit.models import AuditEvent
from tests.api.conftest import bearer
from tests.separations.helpers import put_session, session_bytes, volume_root

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
SERVICE_TOKEN = "s3rvice-token-0123456789"


@pytest.fixture(autouse=True)
def service_token(settings):
    settings.SESSIONS_API_TOKEN = SERVICE_TOKEN
    with time_machine.travel(NOW, tick=False):
        yield


def test_the_service_token_gets_the_answers_it_always_got_byte_for_byte(client):
    put_session("old", mtime=NOW - timedelta(hours=3))
    response = client.post("/api/sessions/cleanup-on-exit", **bearer(SERVICE_TOKEN))
    assert response.status_code == 200
    assert response.content == f'{{"deleted": ["old"], "bytes_reclaimed": {session_bytes()}, "commits": 0}}'.encode()
    assert response["Content-Type"] == "application/json"
    assert AuditEvent.objects.get().actor_name == "api:separation-service"

    refused = client.post("/api/sessions/cleanup-on-exit", **bearer("wrong"))
    assert (refused.status_code, refused.content) == (401, b'{"error": "missing or wrong bearer token"}')
    assert refused["WWW-Authenticate"] == 'Bearer realm="sessions"'
    # A GET is Django's bare 405, as from the view these endpoints had before.
    get = client.get("/api/sessions/cleanup-on-download", **bearer(SERVICE_TOKEN))
    assert (get.status_code, get.content, get["Allow"]) == (405, b"", "POST")


def test_an_operator_api_token_cleans_up_sessions_in_its_own_name(client, operator_token, viewer_token):
    put_session("old", mtime=NOW - timedelta(hours=3))
    refused = client.post("/api/sessions/old/cleanup", **bearer(viewer_token))
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("api:dash-reader may not clean up separation sessions")
    assert (volume_root() / "sessions" / "old").exists()

    response = client.post("/api/sessions/old/cleanup", **bearer(operator_token))
    assert response.json() == {"deleted": ["old"], "bytes_reclaimed": session_bytes(), "commits": 0}
    assert AuditEvent.objects.get(action="sessions.cleanup").actor_name == "api:ci-deploy"


def test_the_document_describes_the_sessions_endpoints(client, viewer_token):
    paths = client.get("/api/openapi.json", **bearer(viewer_token)).json()["paths"]
    for path in ("cleanup-on-download", "cleanup-on-exit", "{session_id}/cleanup"):
        operation = paths[f"/api/sessions/{path}"]["post"]
        assert operation["security"] == [{"TokenAuth": []}, {"SessionsServiceToken": []}]

import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.audit.models import AuditEvent, Operation
from apps.audit.services import operation_create
from apps.separations.services import TARGET_TYPE
from tests.separations.helpers import put_session, session_bytes, volume_root

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "s3cr3t-token-for-tests-0123456789"


@pytest.fixture(autouse=True)
def api_setup(settings):
    settings.SESSIONS_API_TOKEN = TOKEN
    with time_machine.travel(NOW, tick=False):
        yield


def post(client, path, token=TOKEN, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.post(f"/api/sessions/{path}", **headers, **extra)


def on_disk(session_id):
    return (volume_root() / "sessions" / session_id).exists()


def test_cleanup_on_download_returns_what_it_deleted(client):
    put_session("old", mtime=NOW - timedelta(hours=2))
    put_session("young", mtime=NOW - timedelta(minutes=10))
    response = post(client, "cleanup-on-download")
    assert response.status_code == 200
    assert response.json() == {"deleted": ["old"], "bytes_reclaimed": session_bytes(), "commits": 0}
    assert not on_disk("old") and on_disk("young")
    assert AuditEvent.objects.get().actor_name == "api:separation-service"


def test_cleanup_on_exit(client):
    put_session("a", mtime=NOW - timedelta(hours=3))
    put_session("b", mtime=NOW - timedelta(hours=1))
    assert post(client, "cleanup-on-exit").json()["deleted"] == ["a"]
    assert on_disk("b")


def test_cleanup_one_session(client):
    put_session("tmp0f1e2d3c4b5a69788796a5b4c3d2e1f0", mtime=NOW)
    response = post(client, "tmp0f1e2d3c4b5a69788796a5b4c3d2e1f0/cleanup")
    assert response.status_code == 200
    assert response.json()["deleted"] == ["tmp0f1e2d3c4b5a69788796a5b4c3d2e1f0"]


def test_nothing_to_delete_is_an_empty_answer(client):
    volume_root().mkdir(parents=True)
    assert post(client, "cleanup-on-download").json() == {"deleted": [], "bytes_reclaimed": 0, "commits": 0}


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_wrong_or_missing_token_is_401_and_touches_nothing(client, token):
    put_session("old", mtime=NOW - timedelta(hours=9))
    for path in ["cleanup-on-download", "cleanup-on-exit", "old/cleanup"]:
        response = post(client, path, token=token)
        assert response.status_code == 401, path
    assert on_disk("old")
    assert not Operation.objects.exists() and not AuditEvent.objects.exists()


def test_another_scheme_is_401(client):
    put_session("old", mtime=NOW - timedelta(hours=9))
    response = client.post("/api/sessions/cleanup-on-exit", HTTP_AUTHORIZATION=f"Basic {TOKEN}")
    assert response.status_code == 401
    assert on_disk("old")


def test_no_token_configured_means_the_api_is_off(client, settings):
    settings.SESSIONS_API_TOKEN = ""
    put_session("old", mtime=NOW - timedelta(hours=9))
    assert post(client, "cleanup-on-exit", token="").status_code == 401
    assert post(client, "cleanup-on-exit", token="anything").status_code == 401
    assert on_disk("old")


def test_the_token_is_compared_in_constant_time(client, monkeypatch):
    import hmac

    import apps.separations.api as api

    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    post(client, "cleanup-on-exit", token="guess")
    assert seen == [(b"guess", TOKEN.encode())]


def test_the_token_is_never_logged(client, caplog):
    put_session("old", mtime=NOW - timedelta(hours=9))
    with caplog.at_level(logging.DEBUG):
        post(client, "cleanup-on-exit")
        post(client, "cleanup-on-exit", token="wrong-" + TOKEN)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(op.params) + op.log for op in Operation.objects.all())


def test_unknown_session_is_404(client):
    volume_root().mkdir(parents=True)
    response = post(client, "nope/cleanup")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


@pytest.mark.parametrize("bad", ["a.b", "%2e%2e", "a%20b", "x" * 200, "\u0430dmin"])
def test_bad_id_is_400(client, bad):
    put_session("a", mtime=NOW - timedelta(hours=9))
    response = post(client, f"{bad}/cleanup")
    assert response.status_code == 400
    assert "not valid" in response.json()["error"]
    assert on_disk("a")
    assert not Operation.objects.exists()


def test_dot_dot_id_is_400(client):
    response = post(client, "%2E%2E/cleanup")
    assert response.status_code == 400
    assert "not valid" in response.json()["error"]
    response = post(client, "..%5Cetc/cleanup")
    assert response.status_code == 400


def test_a_batch_already_running_is_409(client):
    put_session("old", mtime=NOW - timedelta(hours=9))
    operation_create(kind="sessions.cleanup", target_type=TARGET_TYPE, target_id="music-split-jobs-data", actor="x")
    response = post(client, "cleanup-on-exit")
    assert response.status_code == 409
    assert "already" in response.json()["error"]
    assert on_disk("old")


def test_get_is_not_allowed(client):
    assert client.get("/api/sessions/cleanup-on-exit", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_modal_unreachable_is_503_with_one_line(client, modal_server, settings):
    settings.SESSIONS_VOLUME_URL = "modal://music-split-jobs-data"
    modal_server.create_volume("music-split-jobs-data")
    modal_server.stop()
    response = post(client, "cleanup-on-exit")
    assert response.status_code == 503
    assert "unreachable" in response.json()["error"]


def test_csrf_does_not_apply_to_the_token_api(client):
    client.handler.enforce_csrf_checks = True
    put_session("old", mtime=NOW - timedelta(hours=9))
    assert post(client, "old/cleanup").status_code == 200


def test_a_missing_volume_is_503_not_404(client):
    response = post(client, "cleanup-on-exit")
    assert response.status_code == 503
    assert "volume" in response.json()["error"]

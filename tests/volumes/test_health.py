"""/healthz asks Modal only when a modal:// volume is configured, through the real SDK."""

import pytest

from apps.volumes.models import Volume

pytestmark = [pytest.mark.django_db, pytest.mark.modal]


def test_no_modal_check_without_a_modal_volume(client):
    assert not [name for name in client.get("/healthz").json()["checks"] if name.startswith("modal")]


def test_a_modal_volume_is_checked_and_a_missing_one_fails(client, modal_server):
    modal_server.create_volume("ml-results")
    Volume.objects.create(name="ml-results", url="modal://ml-results")
    Volume.objects.create(name="gone", url="modal://gone-volume")
    checks = client.get("/healthz").json()["checks"]
    assert checks["modal volume ml-results"] == {"ok": True, "message": "reachable"}
    assert checks["modal volume gone"]["ok"] is False
    assert "gone-volume" in checks["modal volume gone"]["message"]

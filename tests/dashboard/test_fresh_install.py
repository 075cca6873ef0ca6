"""`make run` on a fresh machine starts with no failed task: bootstrap makes the default
sessions folder, so the first scheduled sync finds it."""

from pathlib import Path

import pytest
from django.core.management import call_command

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_scheduled

pytestmark = pytest.mark.django_db


def test_the_first_scheduled_sessions_sync_on_a_fresh_machine_succeeds(settings, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "fresh-Password-1")
    root = Path(settings.VAR_DIR) / "volumes" / "music-split-jobs-data"
    settings.SESSIONS_VOLUME_URL = f"local://{root}"
    assert not root.exists()
    call_command("bootstrap")
    assert (root / "sessions").is_dir()
    assert run_scheduled(Kind.SESSIONS_SYNC).startswith("succeeded")
    assert not Operation.objects.exclude(status=Operation.Status.SUCCEEDED).exists()
    call_command("bootstrap")  # idempotent


def test_a_sessions_folder_configured_elsewhere_is_never_made(settings, tmp_path, monkeypatch):
    # A missing mount must show as missing, not as an empty folder the panel made.
    monkeypatch.setenv("ADMIN_PASSWORD", "fresh-Password-1")
    elsewhere = tmp_path / "mnt" / "sessions-volume"
    settings.SESSIONS_VOLUME_URL = f"local://{elsewhere}"
    call_command("bootstrap")
    assert not elsewhere.exists()

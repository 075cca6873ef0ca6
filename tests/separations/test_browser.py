"""The sessions page in Chromium: gauge over budget, preview, confirm, the batch runs."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.separations.helpers import put_session, sync_now, volume_root

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_clean_up_old_sessions_from_the_page(logged_in_page, live_server, settings, q_sync, artifacts):
    settings.SESSIONS_VOLUME_MAX_BYTES = 3000
    now = datetime.now(UTC)
    put_session("stale-one", mtime=now - timedelta(hours=5))
    put_session("stale-two", mtime=now - timedelta(hours=4))
    put_session("fresh", mtime=now - timedelta(minutes=5))
    sync_now(actor="test")
    browser_page = logged_in_page
    browser_page.goto(f"{live_server.url}/sessions/")
    assert browser_page.locator(".gauge.over").is_visible()
    assert browser_page.locator("text=Oldest sessions to clean").is_visible()
    browser_page.screenshot(path=str(artifacts / "sessions-list.png"), full_page=True)

    browser_page.click("text=Clean up (exit policy)")
    assert browser_page.locator("td", has_text="stale-one").is_visible()
    assert browser_page.locator("td", has_text="fresh").count() == 0
    browser_page.screenshot(path=str(artifacts / "sessions-confirm.png"), full_page=True)
    browser_page.click("button:has-text('Delete these sessions')")
    browser_page.wait_for_url("**/operations/*/")
    browser_page.locator("[data-status=succeeded]").wait_for(timeout=10000)
    assert not (volume_root() / "sessions" / "stale-one").exists()
    assert not (volume_root() / "sessions" / "stale-two").exists()
    assert (volume_root() / "sessions" / "fresh").exists()
    assert not [e for e in browser_page.console_errors if "Content Security Policy" in e]

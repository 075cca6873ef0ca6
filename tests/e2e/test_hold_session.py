"""A hold from the page, in Chromium: an operator puts a separation session on hold from the
session's page and the page shows the hold at once (htmx swaps the control; no reload)."""

from datetime import UTC, datetime, timedelta

import pytest

from apps.audit.models import Hold
from apps.audit.names import TargetType
from tests.separations.helpers import put_session, sync_now

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_operator_holds_a_session_from_its_page_and_sees_the_hold(logged_in_page, live_server, artifacts):
    put_session("kept-one", mtime=datetime.now(UTC) - timedelta(hours=5))
    sync_now(actor="test")
    page = logged_in_page
    page.goto(f"{live_server.url}/sessions/kept-one/")
    control = page.locator("section.hold-control")
    assert control.get_attribute("data-held") == "no"
    # A full page load would drop this; htmx swapping the control in place keeps it.
    page.evaluate("window.heldWithoutReload = true")

    control.locator("input[name=reason]").fill("the artist disputes the mix")
    control.locator("button:has-text('Put on hold')").click()

    held = page.locator("section.hold-control[data-held=yes]")
    held.wait_for(timeout=10000)
    assert "On hold by root" in held.inner_text() and "the artist disputes the mix" in held.inner_text()
    assert held.locator("button:has-text('Release the hold')").is_enabled()
    assert page.evaluate("window.heldWithoutReload === true")
    hold = Hold.objects.get(target_type=TargetType.SEPARATION_SESSION, target_id="kept-one")
    assert hold.reason == "the artist disputes the mix" and hold.released_at is None
    page.screenshot(path=str(artifacts / "session-held.png"), full_page=True)
    assert not [e for e in page.console_errors if "Content Security Policy" in e]

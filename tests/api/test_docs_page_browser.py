"""The browsable API page works in a real browser under the panel's strict CSP."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_api_page_lists_the_operations_with_nothing_blocked(logged_in_page, live_server):
    page = logged_in_page
    page.goto(f"{live_server.url}/api/docs")
    page.wait_for_selector(".opblock", timeout=15000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/pods/{pod_id}/{action}" in text.replace("\u200b", "") for text in paths), paths
    assert page.console_errors == []

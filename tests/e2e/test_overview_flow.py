"""The admin's whole path through the dashboard, in Chromium: overview with seeded data →
leak report → dry-run preview → confirm → progress bar runs to the end → audit event."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now, run_operation
from tests.separations.helpers import put_session, volume_root

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def run_like_a_worker(operation_id: int, *, delay: float) -> threading.Thread:
    """What a qcluster worker does with the queued id, after the page has started polling."""

    def work():
        time.sleep(delay)
        run_operation(operation_id)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_overview_leak_fix_with_preview_progress_and_audit(logged_in_page, live_server, settings, artifacts):
    page = logged_in_page
    now = datetime.now(UTC)
    for index in range(3):
        put_session(f"stale-{index}", mtime=now - timedelta(hours=6 + index), input_bytes=50_000)
    put_session("fresh", mtime=now - timedelta(minutes=2), input_bytes=50_000)
    run_now(Kind.SESSIONS_SYNC, actor="test")

    page.goto(f"{live_server.url}/")
    assert page.locator(".domain h2", has_text="Separation sessions").first.is_visible()
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)

    page.click("a[href='/leaks/']")
    page.wait_for_url("**/leaks/")
    row = page.locator("tr", has_text="3 sessions older than").first
    assert row.is_visible()
    row.locator("a.button").click()

    # The dry run: the preview lists exactly what goes, and nothing is gone yet.
    page.wait_for_selector("form.actions button.danger")
    for index in range(3):
        assert page.locator("td", has_text=f"stale-{index}").count() == 1
    assert page.locator("td", has_text="fresh").count() == 0
    assert (volume_root() / "sessions" / "stale-0").exists()

    page.click("form.actions button.danger")
    page.wait_for_url("**/operations/*/")
    operation_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert Operation.objects.get(pk=operation_id).status == "pending"
    assert page.locator(f"#operation-{operation_id}[data-status=pending]").is_visible()

    worker = run_like_a_worker(operation_id, delay=1.5)
    page.locator(f"#operation-{operation_id}[data-status=succeeded]").wait_for(timeout=20000)
    worker.join(timeout=10)
    assert page.locator(f"#operation-{operation_id} progress").get_attribute("value") == "100"
    for index in range(3):
        assert not (volume_root() / "sessions" / f"stale-{index}").exists()
    assert (volume_root() / "sessions" / "fresh").exists()

    event = AuditEvent.objects.filter(operation_id=operation_id).get()
    page.goto(f"{live_server.url}/audit/?action={event.action}")
    audit_row = page.locator("tbody tr", has_text=event.target_id).first
    assert audit_row.is_visible() and "root" in audit_row.inner_text()
    assert event.bytes_reclaimed > 0
    assert not [e for e in page.console_errors if "Content Security Policy" in e]

"""The volume page in Chromium: inspect from the button, read findings and sizes, cross-check."""

import pytest
from playwright.sync_api import expect

from apps.volumes.services import layout_preset_import
from tests.volumes.helpers import lay_out_s3_mount_plan

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_inspect_and_cross_check_from_the_volume_page(
    logged_in_page, live_server, q_sync, artifacts, local_world, s3_server, s3_bucket
):
    lay_out_s3_mount_plan(local_world)
    local_world.put("results/results/train/metrics.json", 1234)
    local_world.put("cache/tusz/train/a.npz", 3)
    s3_server.client().put_object(Bucket=s3_bucket, Key="cache/tusz/train/a.npz", Body=b"123")
    volume = local_world.volume()
    layout_preset_import(volume=volume, preset="s3-mount", actor="test")
    browser_page = logged_in_page

    browser_page.goto(f"{live_server.url}/volumes/")
    browser_page.click(f"text={volume.name}")
    assert browser_page.locator("text=Not inspected yet.").is_visible()
    browser_page.click("button:has-text('Inspect now')")
    browser_page.locator("[data-status=succeeded]").first.wait_for(timeout=10000)
    # No reload: the volume's body refreshes itself when the inspection ends.
    expect(browser_page.locator("td", has_text="results/ should not exist")).to_be_visible(timeout=10000)
    expect(browser_page.locator("td", has_text="cache/tusz/ should not exist")).to_be_visible()
    expect(browser_page.locator("td", has_text="checkpoints/run-1/model.pt")).to_be_visible()
    browser_page.screenshot(path=str(artifacts / "volume-detail.png"), full_page=True)

    browser_page.fill("input[name=folder]", "cache/tusz/train")
    browser_page.fill("input[name=s3_url]", f"s3://{s3_bucket}/cache/tusz/train")
    browser_page.click("button:has-text('Cross-check')")
    browser_page.locator("text=Same name and size").wait_for(timeout=10000)
    assert browser_page.locator("h3 .badge-ok").is_visible()

    browser_page.goto(f"{live_server.url}/")
    assert browser_page.locator("text=results/ should not exist").first.is_visible()
    assert not [e for e in browser_page.console_errors if "Content Security Policy" in e]

"""Back up now in Chromium: the pod page asks for `pod.backup`, and its outcome (the new
snapshot, "not yet proven", the pod still running) arrives on the page without a reload."""

import pytest
from playwright.sync_api import expect

from apps.pods import services
from tests.e2e.test_journey import Watcher, assert_not_reloaded, mark
from tests.pods.conftest import new_pod_id, pods_settings  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_back_up_now_shows_the_copy_without_a_reload(
    logged_in_page,
    live_server,
    docker_client,
    new_pod_id,  # noqa: F811 - the pods tests' fixture, imported above
):
    page = logged_in_page
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    pod_url = f"{live_server.url}/pods/{pod_id}/"
    page.goto(pod_url)
    backups = page.locator("#pod-backups")
    expect(backups).to_contain_text("crash-consistent: what a power cut would leave")
    expect(backups).to_contain_text("none yet")

    backups.get_by_role("button", name="Back up now").click()
    page.wait_for_url(pod_url)
    mark(page)
    operation = Watcher(page).run_queued(kind="pod.backup")

    snapshot = operation.result["snapshot"]
    expect(backups).to_contain_text(f"snapshot #{snapshot} (backup)")
    expect(page.locator("#pod-snapshots")).to_contain_text("not yet proven")
    expect(page.locator("#pod-head .pod-status .badge")).to_have_text("running")
    expect(backups.get_by_role("button", name="Back up now")).to_be_enabled()
    assert_not_reloaded(page)

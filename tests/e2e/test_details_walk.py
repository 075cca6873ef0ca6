"""Issue #23 part 1's Done-when, in Chromium: each detail that was not true is walked as admin
and as viewer, at 1,400 and 390 px, on real parts (dockerd, the file snapshot store, the
panel's own operations run like a worker), and asserted on the page as it shows it. No
reload: an action's outcome must arrive on the page by itself (htmx parts), checked with
Playwright's auto-waiting expect() and the journey's reload mark."""

import uuid
from datetime import UTC, datetime, timedelta
from itertools import product

import pytest
from playwright.sync_api import expect

from apps.audit.models import Operation, StorageSample
from apps.pods.models import OrphanVolume, PodVolume, container_name, volume_docker_name
from tests.e2e.test_journey import Watcher, assert_not_reloaded, confirm_and_run, exact_bytes, mark
from tests.e2e.test_roles import log_in
from tests.mixjobs.helpers import write_job
from tests.pods.conftest import new_pod_id, pods_settings  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VIEWER_SENTENCE = "Your role may look at this pod but not stop, deprovision or delete it."
HELD_TITLE = "On hold: release the hold first"


# A laptop window and a phone. One pod and one login per role serve both: each page is
# resized between the two, and the pod's actions are pressed at one width or the other.
WIDE, PHONE = 1400, 390
WIDTHS = (WIDE, PHONE)


def at(width: int, *pages) -> None:
    for page in pages:
        page.set_viewport_size({"width": width, "height": 900})


@pytest.fixture
def admin(logged_in_page):
    at(WIDE, logged_in_page)
    return logged_in_page


@pytest.fixture
def viewer(browser, live_server, viewer_user):
    context = browser.new_context(viewport={"width": WIDE, "height": 900})
    page = context.new_page()
    log_in(page, live_server, "viewer", "pw-viewer-123!")
    yield page
    context.close()


@pytest.fixture
def figures_uncached(settings):
    """A reconcile records orphans without an audit event or a storage sample, the changes the
    leak report's cache is keyed on: the report shows them once OVERVIEW_CACHE_SECONDS have
    passed. Set before logging in, whose overview would otherwise keep its figures."""
    settings.OVERVIEW_CACHE_SECONDS = 0


def open_nav(page, name: str) -> None:
    """Follow the main navigation's link, opening the phone's menu first where it is folded."""
    link = page.locator("nav.nav a", has_text=name)
    if not link.is_visible():
        page.click("label.nav-toggle-label")
    link.click()


def test_leaks_unmeasured_the_sweep_in_its_grace_period_and_the_panels_404(
    figures_uncached,
    admin,
    viewer,
    live_server,
    docker_client,
    pods_settings,  # noqa: F811 - the pods tests' fixture, imported above
):
    # Every orphan on the shared daemon stays young: the sweep has nothing to do yet.
    pods_settings.POD_ORPHAN_GRACE_MINUTES = 60 * 24 * 365
    pods_settings.DEBUG = True  # `make run`: an unknown URL is still the panel's own 404
    name = volume_docker_name(f"g{uuid.uuid4().hex[:10]}", "workspace")
    docker_client.volumes.create(name=name)
    try:
        # The admin reconciles from the pods page; the orphan is recorded, never measured.
        admin.goto(f"{live_server.url}/pods/")
        admin.click("button:has-text('Reconcile now')")
        admin.wait_for_url(f"{live_server.url}/pods/")
        Watcher(admin).run_queued(kind="pods.reconcile")
        assert OrphanVolume.objects.get(docker_name=name).size_bytes is None
        # A chart of nothing held, and a mix-job session with one job left past the expired one.
        now = datetime.now(UTC)
        StorageSample.objects.bulk_create(
            StorageSample(domain="walk", subject="empty", total_bytes=0, sampled_at=now - timedelta(hours=hours))
            for hours in (2, 1, 0)
        )
        write_job("walk-s1", "job-expired", state="complete", updated_at=now - timedelta(hours=60))
        write_job("walk-s1", "job-new", state="complete", updated_at=now)

        for width, page in product(WIDTHS, (admin, viewer)):
            at(width, page)
            # The 404 of an unknown URL is the panel's, with its navigation and a Leaks link.
            response = page.goto(f"{live_server.url}/no-such-page/{width}/")
            assert response.status == 404
            expect(page.locator("h1")).to_have_text("Not found")
            expect(page.locator("nav.nav a", has_text="Leaks")).to_have_count(1)
            expect(page.locator("body")).not_to_contain_text("Using the URLconf")
            open_nav(page, "Leaks")
            page.wait_for_url(f"{live_server.url}/leaks/")

            row = page.locator("tr", has_text=name)
            expect(row.locator("td.num")).to_have_text("not measured yet")
            expect(row).to_contain_text("in its grace period, the sweep takes it from")
            headline = page.locator("#leaked-bytes").locator("xpath=..")
            expect(headline).to_contain_text("not measured yet")
            expect(page.locator("#leaked-bytes")).not_to_have_text("0 B")

            row.locator("a.button").click()
            page.wait_for_url(f"{live_server.url}/pods/sweep/")
            card = page.locator("main section.card").first
            expect(card).to_contain_text("Nothing to delete yet:")
            expect(card).to_contain_text(f"inside the {pods_settings.POD_ORPHAN_GRACE_MINUTES}-minute grace period")
            expect(card).to_contain_text("can be swept from")
            expect(card).not_to_contain_text("These 0 volumes")
            expect(page.locator("form.actions button")).to_have_count(0)

            # An all-zero chart is one line labelled "0 B" (not "1 B / 0 B / 0 B").
            open_nav(page, "Overview")
            page.wait_for_url(f"{live_server.url}/")
            chart = page.locator("figure.chart-box", has=page.locator("figcaption", has_text="walk: empty"))
            expect(chart.locator("svg text[dominant-baseline=middle]")).to_have_text(["0 B"])
            # The mix-job cleanup preview counts what is kept in words that agree.
            page.goto(f"{live_server.url}/mixjobs/cleanup/")
            expect(page.locator("main")).to_contain_text("the session's output; 1 job of the session remains")
    finally:
        docker_client.volumes.get(name).remove(force=True)


def test_a_real_pod_held_stopped_verified_and_started_as_admin_and_viewer(
    admin,
    viewer,
    live_server,
    docker_client,
    new_pod_id,  # noqa: F811 - the pods tests' fixture, imported above
):
    pod_id = new_pod_id()
    pod_url = f"{live_server.url}/pods/{pod_id}/"
    watcher = Watcher(admin)
    admin.goto(f"{live_server.url}/pods/")
    admin.fill("#id_pod_id", pod_id)
    admin.click("form.provision button[type=submit]")
    admin.wait_for_url(f"{live_server.url}/pods/")
    watcher.run_queued(kind="pod.provision")
    written = docker_client.containers.get(container_name(pod_id)).exec_run(
        ["sh", "-c", "head -c 300000 /dev/urandom > /workspace/walk.bin"]
    )
    assert written.exit_code == 0, written.output.decode()

    # (a) The viewer is told in words what its role may not do; no Python object on the page.
    viewer.goto(pod_url)
    for width in WIDTHS:
        at(width, viewer)
        expect(viewer.locator("#pod-head")).to_contain_text(VIEWER_SENTENCE)
        expect(viewer.locator("#pod-head .pod-actions span", has_text=VIEWER_SENTENCE)).to_be_visible()
        expect(viewer.locator("main")).not_to_contain_text("PodAction(")
        expect(viewer.locator("#proven")).not_to_contain_text("Verify latest snapshot")

    # (d) No snapshot yet: nothing to verify or drill, and the page says why. (e) A pod just
    # provisioned is measured: no "not measured yet" on its page.
    admin.goto(pod_url)
    at(PHONE, admin)
    expect(admin.locator("#pod-volumes td.exists")).to_have_text(["yes"] * 8)
    expect(admin.locator("#pod-volumes")).not_to_contain_text("not measured yet")
    proven = admin.locator("#proven")
    expect(proven).to_contain_text("No complete snapshot yet")
    expect(proven.get_by_role("button", name="Verify latest snapshot")).to_have_count(0)

    # (c) A hold from the page (on a phone): Stop, Deprovision and Delete turn disabled with
    # the reason, without a reload (the head listens to hold-changed).
    head = admin.locator("#pod-head")
    actions = head.locator(".pod-actions")
    expect(actions.locator("a.button", has_text="Stop")).to_be_visible()
    # A deprovision confirmation left open in another tab from before the hold.
    side = admin.context.new_page()
    at(WIDE, side)
    side.goto(f"{pod_url}confirm/deprovision/")
    expect(side.locator("form.actions button.danger")).to_be_enabled()
    mark(admin)
    hold = admin.locator("section.hold-control")
    hold.locator("input[name=reason]").fill("legal asked to keep it")
    hold.locator("button:has-text('Put on hold')").click()
    expect(admin.locator("section.hold-control[data-held=yes]")).to_contain_text("legal asked to keep it")
    for width in (PHONE, WIDE):
        at(width, admin)
        for name in ("Stop", "Deprovision", "Delete"):
            button = actions.locator("button", has_text=name)
            expect(button).to_be_visible()
            expect(button).to_be_disabled()
            expect(button).to_have_attribute("title", HELD_TITLE)
        expect(actions.locator("a.button", has_text="Stop")).to_have_count(0)
        expect(actions).to_contain_text("On hold by root (legal asked to keep it)")
    assert_not_reloaded(admin)
    # The viewer sees the hold, and still no control of its own.
    at(PHONE, viewer)
    viewer.goto(pod_url)
    expect(viewer.locator("section.hold-control[data-held=yes]")).to_contain_text("legal asked to keep it")
    expect(viewer.locator("section.hold-control button")).to_be_disabled()
    # The deprovision confirmation says it is held, with no button to press.
    for page in (admin, viewer):
        response = page.goto(f"{pod_url}confirm/deprovision/")
        assert response.status == 409
        expect(page.locator("p.error")).to_contain_text(f"pod {pod_id} is on hold by root")
        expect(page.locator("main button")).to_have_count(0)
    # The open tab's button pressed anyway: refused with the hold's reason, and audited.
    side.click("form.actions button.danger")
    side.wait_for_url(pod_url)
    expect(side.locator("main")).to_contain_text(f"pod {pod_id} is on hold by root (legal asked to keep it)")
    expect(side.locator("#pod-audit")).to_contain_text("refused: pod")
    expect(side.locator("#pod-head .badge").first).to_have_text("running")
    side.close()
    assert not Operation.objects.filter(kind="pod.deprovision").exists()
    # Released from the page (on a laptop): Stop is a live link again, still without a reload.
    admin.goto(pod_url)
    mark(admin)
    admin.locator("section.hold-control button:has-text('Release the hold')").click()
    expect(admin.locator("section.hold-control[data-held=no]")).to_be_visible()
    expect(actions.locator("a.button", has_text="Stop")).to_be_visible()
    assert_not_reloaded(admin)

    # (d) Stop; then Verify from the page (on a phone): disabled while it runs, listed in the
    # pod's Operations, and the Proven card changes by itself when it ends.
    actions.locator("a.button", has_text="Stop").click()
    confirm_and_run(admin, pod_url, watcher, kind="pod.stop")
    expect(head.locator(".pod-status .badge")).to_have_text("stopped")
    at(PHONE, admin)
    verify = proven.get_by_role("button", name="Verify latest snapshot")
    expect(verify).to_be_enabled()
    verify.click()
    admin.wait_for_url(pod_url)
    expect(verify).to_be_disabled()
    expect(proven.get_by_role("button", name="Run a restore drill")).to_be_disabled()
    mark(admin)
    verification = watcher.run_queued(kind="pods.verify")
    operations_card = admin.locator("section.card", has=admin.locator("h2", has_text="Operations"))
    for width in (PHONE, WIDE):
        at(width, admin)
        expect(proven).to_contain_text("Last proven restorable")
        expect(proven).to_contain_text("by verification of snapshot #")
        expect(admin.locator(f"#operation-{verification.pk}")).to_have_attribute("data-status", "succeeded")
        expect(operations_card).to_contain_text(f"#{verification.pk}")
        expect(verify).to_be_enabled()
    assert_not_reloaded(admin)
    viewer.goto(pod_url)
    expect(viewer.locator("#proven")).to_contain_text("Last proven restorable")
    expect(viewer.locator(f"#operation-{verification.pk}")).to_be_visible()

    # (e) Start (on a phone): the page's workspace size is what the deprovision confirmation
    # measures, for either role at either width.
    at(PHONE, admin)
    actions.locator("a.button", has_text="Start").click()
    confirm_and_run(admin, pod_url, watcher, kind="pod.start")
    expect(head.locator(".pod-status .badge")).to_have_text("running")
    workspace = volume_docker_name(pod_id, "workspace")
    measured = PodVolume.objects.get(docker_name=workspace).size_bytes
    assert measured >= 300_000
    shown = admin.locator("#pod-volumes tr[data-volume=workspace] td.num .bytes")
    expect(shown).to_have_attribute("title", f"{measured:,} bytes")
    assert_not_reloaded(admin)
    at(WIDE, admin)
    for page in (admin, viewer):
        page.goto(pod_url)
        on_page = exact_bytes(page.locator("#pod-volumes tr[data-volume=workspace] td.num .bytes"))
        expect(page.locator("#pod-volumes tr[data-volume=workspace]")).not_to_contain_text("not measured yet")
        page.goto(f"{pod_url}confirm/deprovision/")
        confirmed = exact_bytes(page.locator("tbody tr", has_text=workspace).locator("td.num"))
        assert on_page == confirmed == measured, (on_page, confirmed, measured)
    assert Operation.objects.filter(kind="pods.verify", params__pod_id=pod_id).count() == 1

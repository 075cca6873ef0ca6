"""A viewer may look everywhere and change nothing: no page offers a viewer a live control
that would change something, and a refusal is the panel's own page."""

from urllib.parse import urlparse

import pytest
from django.urls import Resolver404, resolve

from tests.e2e.world import LIVE_CONTROLS_JS, build_world, page_urls, same_site_links

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The domain pages that once offered a viewer destructive controls (issue #17): each is
# checked on its own as well as in the walk.
DOMAIN_PAGES = ["pods:detail", "separations:list", "separations:detail", "mixjobs:list"]


def log_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def url_name(path: str) -> str:
    try:
        match = resolve(urlparse(path).path)
    except Resolver404:
        return "not-found"
    return f"{match.namespace}:{match.url_name}" if match.namespace else match.url_name


def test_a_viewer_finds_no_live_destructive_control_on_any_page_it_can_reach(
    page, live_server, viewer_user, tmp_path, artifacts
):
    world = build_world(tmp_path)
    log_in(page, live_server, "viewer", "pw-viewer-123!")
    # Walk the navigation, every list, one detail page per app and every preview they link
    # to; and the pages no link leads to (a stopped pod, the confirmation of a stop).
    queue = [path for path in same_site_links(page, live_server.url)]
    queue += [page_urls(world)[name] for name in ("pod-stopped", "pod-stop-confirm", "operation-failed")]
    seen, offered, reached = set(), {}, set()
    while queue and len(seen) < 80:
        path = queue.pop(0)
        name = url_name(path)
        # One page per route and query shape is enough: page 2 of a list is page 1 again.
        shape = (name, tuple(sorted(part.split("=")[0] for part in urlparse(path).query.split("&") if part)))
        if shape in seen or name in {"login", "dashboard:in-flight"} or "page=" in path:
            continue
        seen.add(shape)
        response = page.goto(f"{live_server.url}{path}")
        # A preview refused now (409 busy, 503 a part out of reach) is still a page to check.
        assert response.status in {200, 409, 503}, f"{path} answered {response.status} to a viewer"
        reached.add(name)
        controls = page.evaluate(LIVE_CONTROLS_JS)
        if controls:
            offered[path] = controls
            page.screenshot(path=str(artifacts / f"viewer-offered-{name.replace(':', '-')}.png"), full_page=True)
        queue += same_site_links(page, live_server.url)
    assert not offered, f"pages offering a viewer controls it cannot use: {offered}"
    # The walk really went everywhere: the lists, a detail page of every app, the previews.
    for name in [
        "dashboard:overview",
        "dashboard:leaks",
        "dashboard:operations",
        "dashboard:operation",
        "dashboard:audit",
        "pods:list",
        "pods:detail",
        "pods:confirm",
        "separations:list",
        "separations:detail",
        "separations:cleanup",
        "mixjobs:list",
        "mixjobs:cleanup",
        "volumes:list",
        "volumes:detail",
    ]:
        assert name in reached, f"the walk never reached {name}"


@pytest.mark.parametrize("name", DOMAIN_PAGES)
def test_domain_pages_offer_a_viewer_no_live_destructive_control(page, live_server, viewer_user, tmp_path, name):
    world = build_world(tmp_path)
    log_in(page, live_server, "viewer", "pw-viewer-123!")
    paths = {url_name(path): path for path in page_urls(world).values()}
    page.goto(f"{live_server.url}{paths[name]}")
    assert page.evaluate(LIVE_CONTROLS_JS) == []


def test_a_confirmation_shows_a_viewer_a_disabled_button_and_why(page, live_server, viewer_user, tmp_path):
    world = build_world(tmp_path)
    log_in(page, live_server, "viewer", "pw-viewer-123!")
    page.goto(f"{live_server.url}{page_urls(world)['mixjobs-cleanup']}")
    button = page.get_by_role("button", name="Delete these jobs")
    assert button.is_disabled()
    assert "may look but not change anything here" in page.locator("#why-not").inner_text()


def test_a_refused_request_is_the_panels_own_page_with_its_navigation(page, live_server, viewer_user, tmp_path):
    world = build_world(tmp_path)
    log_in(page, live_server, "viewer", "pw-viewer-123!")
    # A viewer posting a retry anyway (a form kept from an older page, a crafted request).
    page.goto(f"{live_server.url}{page_urls(world)['operation-failed']}")
    response = page.request.post(
        f"{live_server.url}/operations/{world.failed_operation_id}/retry/",
        form={"csrfmiddlewaretoken": next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")},
        headers={"Referer": f"{live_server.url}/"},
    )
    assert response.status == 403
    body = response.text()
    assert "<h1>Not allowed</h1>" in body and 'aria-label="Main"' in body and "panel.css" in body
    page.goto(f"{live_server.url}/no-such-page/")
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator("nav.nav a", has_text="Tasks").count() == 1

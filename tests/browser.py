"""Browser fixtures (Debian chromium through Playwright), shared by every folder's UI tests."""

import os
from pathlib import Path

import pytest

from tests.parts import require_part

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# around it are synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


# Per module: Playwright's sync API keeps an event loop running while the browser is open,
# and the Modal SDK (rightly) warns about blocking calls made under a running loop.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        require_part("chromium", f"{CHROMIUM} is missing", "Install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.console_errors = errors
    yield page
    context.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def logged_in_page(page, live_server, staff_user):
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-123!")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    return page

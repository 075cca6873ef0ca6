import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_login_through_chromium_shows_the_overview(page, live_server, staff_user, artifacts):
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-123!")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("h1").first.inner_text() == "Overview"
    assert page.locator("text=Leak report").is_visible()
    # The strict content security policy is satisfied: nothing was blocked.
    assert not [e for e in page.console_errors if "Content Security Policy" in e]
    page.screenshot(path=str(artifacts / "login-overview.png"), full_page=True)


def test_wrong_password_shows_a_message_not_an_error_page(page, live_server, staff_user):
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert "enter a correct username and password" in page.content()

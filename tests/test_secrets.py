"""No secret is ever rendered: every panel page and every admin list/add page is walked
as a superuser with secrets configured, and none of them may appear."""

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.test_security import panel_urls

pytestmark = pytest.mark.django_db


@pytest.fixture
def secrets_configured(settings, monkeypatch):
    settings.SESSIONS_API_TOKEN = "sessions-token-7f1c9a55e0b34d2c"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-9d0e4c1b7a2f")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "modal-secret-5e2a8c3f1b0d")
    # SECRET_KEY keeps its value (changing it would sign the test's session out).
    return [settings.SESSIONS_API_TOKEN, settings.SECRET_KEY, "aws-secret-9d0e4c1b7a2f", "modal-secret-5e2a8c3f1b0d"]


def admin_pages():
    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    return pages


def test_no_page_or_admin_screen_shows_a_secret(staff_client, secrets_configured):
    pages = [path for name, path, view, *_ in panel_urls() if getattr(view, "login_required", True)]
    pages += admin_pages()
    checked = 0
    for path in pages:
        response = staff_client.get(path)
        if response.status_code != 200 or not response.get("Content-Type", "").startswith("text/html"):
            continue
        checked += 1
        for secret in secrets_configured:
            assert secret not in response.text, f"{path} shows a secret"
    assert checked >= 5

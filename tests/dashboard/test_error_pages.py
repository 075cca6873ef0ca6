"""403, 404 and 500 are the panel's own pages, with its navigation; a refusal logs one line."""

import logging

import pytest
from django.test import Client
from django.urls import reverse

from apps.audit.names import Kind, TargetType
from apps.audit.services import operation_create, operation_execute
from controlpanel.errors import PanelError

pytestmark = pytest.mark.django_db

NAVIGATION = 'aria-label="Main"'


def failed_sync():
    operation = operation_create(
        kind=Kind.SESSIONS_SYNC, target_type=TargetType.SESSION_VOLUME, target_id="music-split-jobs-data", actor="t"
    )
    return operation_execute(operation_id=operation.pk, work=lambda op: (_ for _ in ()).throw(PanelError("gone")))


@pytest.mark.parametrize("debug", [False, True], ids=["production", "make-run"])
def test_a_viewer_refused_sees_the_panels_page_and_the_log_has_one_line(viewer_client, settings, caplog, debug):
    settings.DEBUG = debug
    operation = failed_sync()
    with caplog.at_level(logging.INFO):
        response = viewer_client.post(reverse("dashboard:operation-retry", args=[operation.pk]))
    assert response.status_code == 403
    assert "<h1>Not allowed</h1>" in response.text and NAVIGATION in response.text
    assert "may look at this panel but may not do this" in response.text
    refused = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in refused] == [f"refused POST /operations/{operation.pk}/retry/ for viewer"]
    assert refused[0].exc_info is None  # one line: no traceback under it


def test_an_account_that_is_not_staff_is_refused_with_the_panels_page(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="someone", password="x-Password-1"))
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 403
    assert "This control panel is for staff accounts only." in response.text
    assert NAVIGATION not in response.text  # no links that would all be refused
    assert "Log out" in response.text


@pytest.mark.parametrize("debug", [False, True], ids=["production", "make-run"])
def test_an_unknown_page_is_the_panels_404_with_its_navigation(staff_client, settings, caplog, debug):
    settings.DEBUG = debug
    with caplog.at_level(logging.INFO):
        response = staff_client.get("/no-such-page/")
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.text and NAVIGATION in response.text
    assert "/no-such-page/" in response.text
    assert f'href="{reverse("dashboard:leaks")}"' in response.text  # the leak report is in the navigation
    assert "URLconf" not in response.text  # not Django's debug page, under `make run` either
    # A view's own 404 (an unknown pod) is the panel's page too; a missing slash still redirects.
    response = staff_client.get(reverse("pods:detail", args=["nosuchpod"]))
    assert response.status_code == 404 and "<h1>Not found</h1>" in response.text
    assert staff_client.get("/pods").status_code == 301
    if debug:
        assert any("no-such-page" in record.getMessage() for record in caplog.records)


def test_a_bug_is_the_panels_500_with_its_navigation(staff_user, settings, caplog):
    settings.ROOT_URLCONF = "tests.dashboard.urls_boom"
    client = Client(raise_request_exception=False)
    client.force_login(staff_user)
    response = client.get("/boom/")
    assert response.status_code == 500
    text = response.content.decode()
    assert "<h1>Something broke</h1>" in text and NAVIGATION in text
    assert "a bug" not in text  # the traceback goes to the log only
    assert any(record.exc_info for record in caplog.records)

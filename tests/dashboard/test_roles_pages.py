"""What a role cannot do is not offered: a viewer's pages have no live button that changes
anything (the browser walk in tests/e2e/test_roles.py covers every page; these pin each rule)."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import RequestFactory
from django.urls import reverse

from apps.audit.names import Kind
from apps.audit.roles import OPERATOR_GROUP, roles_sync
from apps.dashboard.templatetags.panel import may_act
from controlpanel.preview import Preview, PreviewItem, confirm_page
from tests.dashboard.test_error_pages import failed_sync
from tests.mixjobs.helpers import write_job

pytestmark = pytest.mark.django_db

PREVIEW = Preview(title="Clean up", summary="One job goes.", delete=[PreviewItem(name="job-1", bytes=10)])


def render_confirm(user, **extra) -> str:
    request = RequestFactory().get("/confirm/")
    request.user = user
    response = confirm_page(request, title="Clean up", preview=PREVIEW, action_url="/run/", **extra)
    return response.content.decode()


@pytest.fixture
def operator(django_user_model):
    roles_sync()
    user = django_user_model.objects.create_user(username="op", password="pw-op-123!", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    return user


def test_roles_tell_who_may_act(viewer_user, operator, staff_user, django_user_model):
    assert not may_act(viewer_user)
    assert may_act(operator) and may_act(staff_user)
    staff_without_role = django_user_model.objects.create_user(username="bare", password="x-Password-1", is_staff=True)
    assert not may_act(staff_without_role)


def test_a_confirmation_offers_a_viewer_a_disabled_button_with_the_reason(viewer_user, operator):
    html = render_confirm(viewer_user)
    assert '<button type="button" disabled' in html and 'class="danger"' not in html
    assert "may look but not change anything here" in html and 'name="confirm"' not in html
    html = render_confirm(operator)
    assert '<button type="submit" class="danger">Confirm</button>' in html


def test_a_confirmation_naming_its_kind_asks_for_that_kinds_permission(operator):
    # An operator missing one kind's permission sees that kind's button disabled.
    operator.user_permissions.clear()
    group = Group.objects.get(name=OPERATOR_GROUP)
    group.permissions.remove(Permission.objects.get(codename="cleanup_mixjob"))
    operator = type(operator).objects.get(pk=operator.pk)  # a fresh permission cache
    assert "disabled" in render_confirm(operator, kind=Kind.MIXJOBS_CLEANUP)
    assert "disabled" not in render_confirm(operator, kind=Kind.SESSIONS_CLEANUP)


def test_an_empty_preview_offers_no_button(operator):
    request = RequestFactory().get("/confirm/")
    request.user = operator
    empty = Preview(title="Sweep", summary="Nothing to sweep.")
    html = confirm_page(request, title="Sweep", preview=empty, action_url="/run/").content.decode()
    main = html.split("<main", 1)[1]
    assert "Nothing to delete." in main and "<button" not in main


def test_the_leak_report_offers_a_viewer_a_preview_not_a_fix(viewer_client, settings):
    from datetime import UTC, datetime, timedelta

    from apps.audit.operations import run_now

    write_job("s1", "j1", state="complete", updated_at=datetime.now(UTC) - timedelta(hours=60))
    run_now(Kind.MIXJOBS_SYNC, actor="test")
    for url in (reverse("dashboard:leaks"), reverse("dashboard:overview")):
        text = viewer_client.get(url).text
        assert "expired mix job" in text
        assert ">Preview</a>" in text and "Clean up expired jobs</a>" not in text


def test_retry_is_offered_to_an_operator_and_not_to_a_viewer(viewer_client, operator, client):
    operation = failed_sync()
    retry = reverse("dashboard:operation-retry", args=[operation.pk])
    for url in (reverse("dashboard:operations"), reverse("dashboard:operation", args=[operation.pk])):
        assert retry not in viewer_client.get(url).text
    client.force_login(operator)
    for url in (reverse("dashboard:operations"), reverse("dashboard:operation", args=[operation.pk])):
        assert retry in client.get(url).text

"""The one hold control on the session page, the mix-job session (the mix-job list filtered
to it) and each folder of the volume page: an operator puts the thing on hold and releases
it from the page (htmx gets the control back, re-read, and a `hold-changed` event; without
htmx a redirect back), a viewer sees the buttons disabled with the reason and is refused."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from apps.audit.models import AuditEvent, Hold
from apps.audit.names import AuditAction, TargetType
from apps.audit.roles import OPERATOR_GROUP, roles_sync
from tests.separations.helpers import put_session, sync_now
from tests.volumes.helpers import inspect_now

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def operator_client(client, django_user_model):
    roles_sync()
    user = django_user_model.objects.create_user(username="op", password="pw-op-123!", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    client.force_login(user)
    return client


def session_page() -> tuple[str, str, str]:
    put_session("alpha", mtime=datetime(2026, 6, 1, tzinfo=UTC))
    sync_now()
    return reverse("separations:detail", args=["alpha"]), TargetType.SEPARATION_SESSION, "alpha"


def mixjob_session_page() -> tuple[str, str, str]:
    return f"{reverse('mixjobs:list')}?session=mix-1", TargetType.MIXJOB_SESSION, "mix-1"


def volume_folder_page(tmp_path) -> tuple[str, str, str]:
    from apps.volumes.models import Volume

    (tmp_path / "vol" / "cache" / "tusz").mkdir(parents=True)
    (tmp_path / "vol" / "cache" / "tusz" / "a.npz").write_bytes(b"x" * 10)
    volume = Volume.objects.create(name="ml", url=f"local://{tmp_path / 'vol'}")
    inspect_now(volume)
    return reverse("volumes:detail", args=["ml"]), TargetType.VOLUME_FOLDER, "ml:cache/tusz"


PAGES = {"session": session_page, "mixjob-session": mixjob_session_page, "volume-folder": volume_folder_page}


@pytest.fixture(params=sorted(PAGES))
def held_page(request, tmp_path):
    build = PAGES[request.param]
    return build(tmp_path) if request.param == "volume-folder" else build()


def posted(target_type: str, target_id: str, url: str, **fields) -> dict:
    return {"target_type": target_type, "target_id": target_id, "next": url, **fields}


def test_an_operator_holds_and_releases_it_from_its_page(operator_client, held_page):
    url, target_type, target_id = held_page
    page = operator_client.get(url).text
    assert f'value="{target_id}"' in page and f'action="{reverse("dashboard:hold-set")}"' in page

    answer = operator_client.post(
        reverse("dashboard:hold-set"), posted(target_type, target_id, url, reason="legal review"), **HTMX
    )

    assert answer.status_code == 200 and answer["HX-Trigger"] == "hold-changed"
    assert "On hold by op" in answer.text and "legal review" in answer.text and "Release the hold" in answer.text
    hold = Hold.objects.get(target_type=target_type, target_id=target_id, released_at__isnull=True)
    assert hold.held_by == "op"
    assert "legal review" in operator_client.get(url).text

    released = operator_client.post(reverse("dashboard:hold-release"), posted(target_type, target_id, url))

    assert released.status_code == 302 and released["Location"] == url
    hold.refresh_from_db()
    assert hold.released_at is not None and hold.released_by == "op"
    assert AuditEvent.objects.filter(action=AuditAction.HOLD_RELEASE, target_id=target_id).exists()
    page = operator_client.get(url).text
    assert "Release the hold" not in page and "Put on hold" in page


def test_a_viewer_sees_the_control_disabled_and_is_refused(viewer_client, held_page):
    url, target_type, target_id = held_page
    page = viewer_client.get(url).text
    assert "Put on hold" in page
    assert reverse("dashboard:hold-set") not in page  # no form to send
    assert '<button type="button" class="button" disabled' in page

    refused = viewer_client.post(
        reverse("dashboard:hold-set"), posted(target_type, target_id, url, reason="mine"), **HTMX
    )

    assert refused.status_code == 403
    assert not Hold.objects.exists()


def test_a_refusal_is_said_inside_the_control(operator_client):
    url, target_type, target_id = mixjob_session_page()
    answer = operator_client.post(
        reverse("dashboard:hold-set"), posted(target_type, target_id, url, reason=" "), **HTMX
    )
    assert "a hold needs a reason" in answer.text and not Hold.objects.exists()


def test_only_holdable_kinds_and_a_page_of_this_site(operator_client):
    assert operator_client.post(reverse("dashboard:hold-set"), posted("panel", "x", "/")).status_code == 404
    answer = operator_client.post(
        reverse("dashboard:hold-set"), posted(TargetType.MIXJOB_SESSION, "m", "https://evil.example/", reason="r")
    )
    assert answer.status_code == 302 and answer["Location"] == "/"

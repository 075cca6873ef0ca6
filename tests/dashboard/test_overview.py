import sys
import types
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.services import operation_create, operation_execute, storage_sample_record
from controlpanel.errors import PanelError

pytestmark = pytest.mark.django_db


def test_overview_draws_bytes_over_time_from_samples(staff_client):
    start = timezone.now() - timedelta(hours=3)
    for hour, size in enumerate([1_000, 5_000, 3_000]):
        with time_machine.travel(start + timedelta(hours=hour), tick=False):
            storage_sample_record(domain="sessions", subject="music-split-jobs-data", total_bytes=size)
    response = staff_client.get(reverse("dashboard:overview"))
    assert "sessions: music-split-jobs-data" in response.text
    points = response.text.split('<polyline class="line" points="')[1].split('"')[0].split()
    assert len(points) == 3
    # The highest sample sits at the top of the plot (smallest y), the lowest at the bottom.
    ys = [float(point.split(",")[1]) for point in points]
    assert ys[1] < ys[2] < ys[0]


def test_work_in_flight_shows_running_work_and_recent_results(staff_client):
    running = operation_create(kind="pods.stop", target_type="pod", target_id="alpha", actor="tests")
    done = operation_create(kind="mixjobs.cleanup", target_type="session", target_id="beta", actor="tests")
    operation_execute(operation_id=done.pk, work=lambda op: {})
    response = staff_client.get(reverse("dashboard:in-flight"))
    assert f"#{running.pk} pods.stop" in response.text
    assert f"#{done.pk} mixjobs.cleanup" in response.text
    assert 'hx-trigger="every 2s"' in response.text


def test_failed_operations_offer_retry_only_to_those_allowed(staff_user, viewer_user):
    operation = operation_create(kind="pods.stop", target_type="pod", target_id="alpha", actor="tests", task="x.y")
    operation_execute(operation_id=operation.pk, work=lambda op: (_ for _ in ()).throw(PanelError("S3 refused")))
    retry_url = reverse("dashboard:operation-retry", args=[operation.pk])
    staff, viewer = Client(), Client()
    staff.force_login(staff_user)
    viewer.force_login(viewer_user)
    assert retry_url in staff.get(reverse("dashboard:operations")).text
    assert retry_url not in viewer.get(reverse("dashboard:operations")).text


def test_a_domain_that_cannot_be_reached_is_shown_not_raised(staff_client, monkeypatch):
    def unreachable():
        raise PanelError("Docker host 'local' unreachable: connection refused")

    # The audit app has no selectors module of its own; give it one whose part is down.
    monkeypatch.setitem(sys.modules, "apps.audit.selectors", types.SimpleNamespace(overview_section=unreachable))
    for url in [reverse("dashboard:overview"), reverse("dashboard:leaks")]:
        response = staff_client.get(url)
        assert response.status_code == 200
        assert "Docker host &#x27;local&#x27; unreachable: connection refused" in response.text

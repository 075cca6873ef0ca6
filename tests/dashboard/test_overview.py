from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from apps.audit import overview
from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import kind_get
from apps.audit.services import operation_create, operation_execute, storage_sample_record
from controlpanel.errors import PanelError

pytestmark = pytest.mark.django_db


def failed_operation(kind: str = Kind.POD_STOP, target_type: str = TargetType.POD, target_id: str = "alpha"):
    operation = operation_create(kind=kind, target_type=target_type, target_id=target_id, actor="tests")

    def refuse(op):
        raise PanelError("S3 refused")

    return operation_execute(operation_id=operation.pk, work=refuse)


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


def test_every_domain_registers_its_section_in_order(staff_client):
    providers = overview.overview_providers()
    assert [provider.app_label for provider in providers] == ["pods", "separations", "mixjobs", "volumes"]
    assert [provider.order for provider in providers] == [10, 20, 30, 40]
    sections = overview.overview_collect()
    assert all(isinstance(section, overview.OverviewSection) for section in sections)
    text = staff_client.get(reverse("dashboard:overview")).text
    headings = [
        f'<a href="{escape(section.url)}">{escape(section.title)}</a></h2>'
        if section.url
        else f"<h2>{escape(section.title)}</h2>"
        for section in sections
    ]
    positions = [text.index(heading) for heading in headings]
    assert len(positions) == 4 and positions == sorted(positions)


def test_work_in_flight_shows_running_work_and_recent_results_in_words(staff_client):
    running = operation_create(kind=Kind.POD_STOP, target_type=TargetType.POD, target_id="alpha", actor="tests")
    done = operation_create(kind=Kind.MIXJOBS_CLEANUP, target_type=TargetType.MIXJOBS, target_id="all", actor="tests")
    operation_execute(operation_id=done.pk, work=lambda op: {"jobs": 3}, describe=lambda result: "3 jobs expired.")
    response = staff_client.get(reverse("dashboard:in-flight"))
    assert f"#{running.pk} {escape(kind_get(Kind.POD_STOP).label)}" in response.text
    assert f"#{done.pk} {escape(kind_get(Kind.MIXJOBS_CLEANUP).label)}" in response.text
    assert "3 jobs expired." in response.text
    assert 'hx-trigger="every 2s"' in response.text


def test_tasks_page_and_detail_say_the_kind_and_result_in_words(staff_client):
    done = operation_create(kind=Kind.MIXJOBS_CLEANUP, target_type=TargetType.MIXJOBS, target_id="all", actor="tests")
    operation_execute(
        operation_id=done.pk, work=lambda op: {"deleted": 3, "bytes": 2048}, describe=lambda r: "3 jobs, 2.0 KiB freed."
    )
    label = escape(kind_get(Kind.MIXJOBS_CLEANUP).label)
    for url in [reverse("dashboard:operations"), reverse("dashboard:operation", args=[done.pk])]:
        text = staff_client.get(url).text
        assert label in text
        assert "3 jobs, 2.0 KiB freed." in text
        assert "&#x27;deleted&#x27;" not in text and "'deleted'" not in text  # no raw result dict


def test_an_old_row_of_a_kind_no_longer_declared_keeps_its_name_and_offers_no_retry(staff_client):
    old = failed_operation(kind="pods.resize-legacy")
    for url in [reverse("dashboard:operations"), reverse("dashboard:operation", args=[old.pk])]:
        text = staff_client.get(url).text
        assert "pods.resize-legacy" in text and "S3 refused" in text
        assert reverse("dashboard:operation-retry", args=[old.pk]) not in text


def test_failed_operations_offer_retry_only_to_those_allowed(staff_user, viewer_user):
    operation = failed_operation()
    retry_url = reverse("dashboard:operation-retry", args=[operation.pk])
    staff, viewer = Client(), Client()
    staff.force_login(staff_user)
    viewer.force_login(viewer_user)
    for url in [reverse("dashboard:operations"), reverse("dashboard:operation", args=[operation.pk])]:
        assert retry_url in staff.get(url).text
        assert retry_url not in viewer.get(url).text


def test_retry_from_the_page_queues_the_same_work_again(staff_client, django_capture_on_commit_callbacks):
    sync = kind_get(Kind.MIXJOBS_SYNC)
    operation = failed_operation(kind=sync.name, target_type=sync.target_type, target_id=sync.target(None))
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(reverse("dashboard:operation-retry", args=[operation.pk]))
    again = Operation.objects.exclude(pk=operation.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:operation", args=[again.pk])
    assert (again.kind, again.target_id, again.status, again.params["retry_of"]) == (
        Kind.MIXJOBS_SYNC,
        operation.target_id,
        "pending",
        operation.pk,
    )
    assert len(callbacks) == 1
    operation.refresh_from_db()
    assert operation.status == "failed"


def test_a_domain_that_cannot_be_reached_is_shown_not_raised(staff_client, monkeypatch):
    def unreachable():
        raise PanelError("Docker host 'local' unreachable: connection refused")

    # The pods part is down: its provider raises instead of returning a section.
    provider = overview.OverviewProvider(app_label="pods", title="Pods", section=unreachable, order=10)
    monkeypatch.setitem(overview._PROVIDERS, "pods", provider)
    for url in [reverse("dashboard:overview"), reverse("dashboard:leaks")]:
        response = staff_client.get(url)
        assert response.status_code == 200
        assert "Docker host &#x27;local&#x27; unreachable: connection refused" in response.text


def test_the_overview_shows_what_is_on_hold(staff_client):
    from apps.audit.holds import hold_set
    from apps.audit.names import TargetType

    hold_set(target_type=TargetType.POD, target_id="keep-me", reason="legal hold", actor="t")
    page = staff_client.get("/").content.decode()
    assert 'class="big holds">1<' in page
    assert "pod keep-me" in page

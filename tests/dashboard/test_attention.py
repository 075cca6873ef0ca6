"""The overview opens with what needs a person: recent work that failed and has not
succeeded since, parts out of reach, what each domain flags, and the leaks."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from apps.audit import overview
from apps.audit.names import Kind
from apps.audit.overview import Attention, OverviewProvider, OverviewSection
from apps.dashboard.selectors import ATTENTION_HOURS, failed_work
from tests.dashboard.test_tasks_page import finished

pytestmark = pytest.mark.django_db


def strip(client) -> str:
    text = client.get(reverse("dashboard:overview")).text
    return text.split('id="attention"', 1)[1].split("</section>", 1)[0]


def test_a_fresh_panel_says_nothing_needs_a_person(staff_client):
    assert "Nothing needs you" in strip(staff_client)


def test_failed_work_shows_once_per_kind_and_target_with_its_count_and_a_link(staff_client):
    first = finished(Kind.VOLUME_INSPECT, "brain", actor="cli", error="bucket refused")
    last = finished(Kind.VOLUME_INSPECT, "brain", actor="cli", error="bucket still refused")
    text = strip(staff_client)
    assert "Inspect volume on volume brain failed (2 times): bucket still refused" in text
    assert reverse("dashboard:operation", args=[last.pk]) in text
    assert reverse("dashboard:operation", args=[first.pk]) not in text


def test_work_that_succeeded_since_it_failed_leaves_the_strip(staff_client):
    finished(Kind.VOLUME_INSPECT, "brain", actor="cli", error="bucket refused")
    finished(Kind.VOLUME_INSPECT, "other", actor="cli", error="other refused")
    finished(Kind.VOLUME_INSPECT, "brain", actor="cli")
    labels = [item.label for item in failed_work()]
    assert len(labels) == 1 and "volume other failed" in labels[0]


def test_failed_work_older_than_a_day_leaves_the_strip():
    with time_machine.travel(timezone.now() - timedelta(hours=ATTENTION_HOURS + 1), tick=False):
        finished(Kind.VOLUME_INSPECT, "brain", actor="cli", error="bucket refused")
    assert failed_work() == []


def test_what_domains_flag_and_parts_out_of_reach_show_in_the_strip(staff_client, monkeypatch):
    flagged = OverviewSection(
        title="Flagged",
        url="/flagged/",
        bytes=0,
        attention=[Attention("2 mix jobs stalled for 7 h", "/mixjobs/?state=stalled", "warning")],
    )
    unreachable = OverviewSection(title="Far away", url="/far/", bytes=None, error="Docker host local unreachable")
    providers = {**overview._PROVIDERS}
    providers["flagged"] = OverviewProvider("flagged", "Flagged", lambda: flagged, order=1)
    providers["far"] = OverviewProvider("far", "Far away", lambda: unreachable, order=2)
    monkeypatch.setattr(overview, "_PROVIDERS", providers)
    text = strip(staff_client)
    assert '<a href="/mixjobs/?state=stalled">2 mix jobs stalled for 7 h</a>' in text
    assert '<a href="/far/">Far away: Docker host local unreachable</a>' in text
    # The part out of reach, an error, comes before the domain's warning.
    assert text.index("Far away") < text.index("stalled")


def test_leaks_show_in_the_strip_with_their_total(staff_client):
    from datetime import UTC, datetime

    from apps.audit.operations import run_now
    from tests.mixjobs.helpers import write_job

    write_job("s1", "j1", state="complete", updated_at=datetime.now(UTC) - timedelta(hours=60))
    run_now(Kind.MIXJOBS_SYNC, actor="test")
    text = strip(staff_client)
    assert "1 leak hold" in text and reverse("dashboard:leaks") in text

"""The overview's figures are cached until a change is committed, and say when they were added up."""

from datetime import datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.audit.names import AuditAction, TargetType
from apps.audit.services import audit_record, storage_sample_record
from apps.dashboard.selectors import newest_change_ids, overview_figures
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import mixjobs_totals_forget

pytestmark = pytest.mark.django_db


def job(job_id: str, size: int) -> MixJob:
    return MixJob.objects.create(session_id="s1", job_id=job_id, state="complete", job_bytes=size)


def overview_text(client) -> str:
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    return response.content.decode()


def added_up_at(moment: datetime) -> datetime:
    """When the figures the overview would show now were added up, with the clock at `moment`."""
    with time_machine.travel(moment, tick=False):
        return overview_figures()[1]


def test_a_recorded_change_refreshes_the_figures_on_the_next_view(staff_client):
    job("a", 5 * 1024**3)
    first = overview_text(staff_client)
    assert "5.0 GiB" in first and "Figures added up at" in first

    job("b", 5 * 1024**3)  # written behind the panel's back: no event recorded
    mixjobs_totals_forget()  # (the mix jobs list keeps its own totals; not what this test is about)
    assert "10.0 GiB" not in overview_text(staff_client)

    audit_record(actor="test", action=AuditAction.MIXJOBS_SYNC, target_type=TargetType.MIXJOBS, target_id="all")
    assert "10.0 GiB" in overview_text(staff_client)


@pytest.mark.django_db(transaction=True)
def test_figures_are_refreshed_when_a_change_commits_not_when_it_rolls_back():
    start = timezone.now()
    first = added_up_at(start)
    assert added_up_at(start + timedelta(seconds=1)) == first  # nothing changed: from the cache

    with pytest.raises(RuntimeError), transaction.atomic():
        storage_sample_record(domain="mixjobs", subject="all", total_bytes=1)
        raise RuntimeError("the change fails")
    assert added_up_at(start + timedelta(seconds=2)) == first

    storage_sample_record(domain="mixjobs", subject="all", total_bytes=1)
    assert added_up_at(start + timedelta(seconds=3)) == start + timedelta(seconds=3)
    audit_record(actor="test", action=AuditAction.MIXJOBS_SYNC, target_type=TargetType.MIXJOBS, target_id="all")
    assert added_up_at(start + timedelta(seconds=4)) == start + timedelta(seconds=4)


def test_the_setting_bounds_how_long_figures_are_reused(settings):
    # The cache expires on the real clock, not the travelling one: a zero bound shows that
    # the setting, not only a new change, decides when the figures are added up again.
    settings.OVERVIEW_CACHE_SECONDS = 0
    start = timezone.now()
    assert added_up_at(start) == start
    assert added_up_at(start + timedelta(seconds=1)) == start + timedelta(seconds=1)


def test_a_cached_view_costs_one_query_for_the_newest_change(django_assert_num_queries):
    event = audit_record(actor="test", action=AuditAction.MIXJOBS_SYNC, target_type=TargetType.MIXJOBS, target_id="all")
    sample = storage_sample_record(domain="mixjobs", subject="all", total_bytes=1)
    assert newest_change_ids() == (event.pk, sample.pk)
    overview_figures()
    # 1. the newest audit event id and the newest storage sample id, read together.
    with django_assert_num_queries(1):
        overview_figures()


def test_the_cached_overview_and_leak_report_cost_a_fixed_few_queries(staff_client, django_assert_num_queries):
    storage_sample_record(domain="mixjobs", subject="all", total_bytes=1)
    staff_client.get(reverse("dashboard:overview"))  # adds the figures up and keeps them
    # 1. session, 2. user, 3. newest audit event and storage sample ids, 4. recent failed
    # work for the attention strip (none: no second query for what succeeded since), 5. the
    # recently measured subjects, 6. the samples of the one chart, 7. work in flight, 8. work
    # just finished, 9. recent audit events, 10. what is on hold. No domain's section: they
    # come from the cache.
    with django_assert_num_queries(10):
        staff_client.get(reverse("dashboard:overview"))
    # 1. session, 2. user, 3. newest change ids.
    with django_assert_num_queries(3):
        staff_client.get(reverse("dashboard:leaks"))

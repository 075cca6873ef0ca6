"""The overview's figures are cached until a change is recorded, and say when they were added up."""

import pytest
from django.core.cache import cache
from django.db import transaction
from django.urls import reverse

from apps.audit.services import audit_record
from apps.dashboard.services import OVERVIEW_CACHE_KEY, storage_sample_record
from apps.mixjobs.models import MixJob
from apps.mixjobs.selectors import mixjobs_totals_forget

pytestmark = pytest.mark.django_db


def job(job_id: str, size: int) -> MixJob:
    return MixJob.objects.create(session_id="s1", job_id=job_id, state="complete", job_bytes=size)


def overview_text(client) -> str:
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    return response.content.decode()


def test_a_recorded_change_refreshes_the_figures_on_the_next_view(staff_client, django_capture_on_commit_callbacks):
    job("a", 5 * 1024**3)
    first = overview_text(staff_client)
    assert "5.0 GiB" in first and "Figures added up at" in first

    job("b", 5 * 1024**3)  # written behind the panel's back: no event recorded
    mixjobs_totals_forget()  # (the mix jobs list keeps its own totals; not what this test is about)
    assert "10.0 GiB" not in overview_text(staff_client)

    with django_capture_on_commit_callbacks(execute=True):
        audit_record(actor="test", action="mixjobs.sync", target_type="mixjobs", target_id="all")
    assert "10.0 GiB" in overview_text(staff_client)


@pytest.mark.django_db(transaction=True)
def test_figures_are_dropped_when_a_change_commits_not_when_it_rolls_back(staff_client):
    staff_client.get(reverse("dashboard:leaks"))
    assert cache.get(OVERVIEW_CACHE_KEY) is not None

    with pytest.raises(RuntimeError), transaction.atomic():
        storage_sample_record(domain="mixjobs", subject="all", total_bytes=1)
        raise RuntimeError("the change fails")
    assert cache.get(OVERVIEW_CACHE_KEY) is not None

    storage_sample_record(domain="mixjobs", subject="all", total_bytes=1)
    assert cache.get(OVERVIEW_CACHE_KEY) is None

"""Every list page costs a fixed number of queries whatever the row count."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests import scale

pytestmark = pytest.mark.django_db

# (url name, most queries allowed). The panel's own fixed cost on every page: session,
# user, and the permission lookups the templates make. Measured cold (the figures cache
# cleared); tests/dashboard/test_overview_cache.py counts the cached pages exactly.
LIST_PAGES = [
    # session, user, newest audit event + storage sample ids, every domain's section (about
    # a dozen, their own aggregates), the charts' subjects and one per chart (at most 6),
    # work in flight, work just finished, recent audit events.
    ("dashboard:overview", 30),
    # session, user, newest change ids, every domain's section.
    ("dashboard:leaks", 25),
    # session, user, count, a page of operations, schedules, failed queue tasks.
    ("dashboard:operations", 15),
    # session, user, count, a page of events (with their users, joined).
    ("dashboard:audit", 10),
    ("pods:list", 15),
    ("separations:list", 15),
    ("mixjobs:list", 12),
    ("volumes:list", 15),
]


def queries_for(client, url: str) -> int:
    cache.clear()  # measure the cold page: summaries kept in the cache would hide a growing query
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured)


def seed_everything(factor: int) -> None:
    for seeder in scale.SEEDERS.values():
        seeder(factor)


@pytest.mark.parametrize(("name", "limit"), LIST_PAGES, ids=[name for name, _ in LIST_PAGES])
def test_list_page_query_count_does_not_grow_with_rows(staff_client, name, limit, django_assert_max_num_queries):
    url = reverse(name)
    seed_everything(3)
    small = queries_for(staff_client, url)
    seed_everything(300)
    large = queries_for(staff_client, url)
    assert large == small, f"{url}: {small} queries with a few rows, {large} with hundreds"
    with django_assert_max_num_queries(limit):
        staff_client.get(url)

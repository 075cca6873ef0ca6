"""A sync that finds the sessions volume over SESSIONS_VOLUME_MAX_BYTES tells people, once,
at a real HTTP receiver on 127.0.0.1 (Apprise `json://`)."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.names import AuditAction
from tests.separations.helpers import put_session, session_bytes, sync_now

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(receiver, settings):
    settings.NOTIFY_REPEAT_MINUTES = 60
    return receiver


def test_a_sync_over_budget_notifies_once_and_not_while_under(receiver, settings):
    settings.SESSIONS_VOLUME_MAX_BYTES = 2 * session_bytes()
    put_session("s1", mtime=timezone.now())
    put_session("s2", mtime=timezone.now())
    sync_now()
    assert receiver.bodies == []  # at the budget is not over it

    put_session("s3", mtime=timezone.now())
    sync_now()
    sync_now()  # still over: the same event is not sent again within NOTIFY_REPEAT_MINUTES
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["title"] == "Sessions volume music-split-jobs-data over budget: 4.1 KiB"
    assert "over its budget of 2.7 KiB (SESSIONS_VOLUME_MAX_BYTES)" in body["message"]
    assert "in 15 files" in body["message"]
    event = AuditEvent.objects.get(action=AuditAction.NOTIFY_SENT)
    assert event.target_id == "sessions.over-budget:music-split-jobs-data"

    # Still over after the repeat window: people are reminded.
    with time_machine.travel(timezone.now() + timedelta(minutes=61), tick=False):
        sync_now()
    assert len(receiver.bodies) == 2


def test_a_budget_of_zero_never_notifies(receiver, settings):
    settings.SESSIONS_VOLUME_MAX_BYTES = 0
    put_session("s1", mtime=timezone.now())
    sync_now()
    assert receiver.bodies == []

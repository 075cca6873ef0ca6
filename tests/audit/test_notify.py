"""Notifications through Apprise to a real HTTP receiver on 127.0.0.1."""

import socket
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind
from apps.audit.notify import notify
from apps.audit.operations import run_now
from apps.audit.overview import _PROVIDERS, Leak, OverviewProvider, OverviewSection, register_overview

pytestmark = pytest.mark.django_db


def test_a_notification_reaches_the_receiver_and_is_audited(receiver):
    assert notify(event="test", subject="one", title="Disk nearly full", body="92% of 1.0 TiB") is True
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert (body["title"], body["message"]) == ("Disk nearly full", "92% of 1.0 TiB")
    event = AuditEvent.objects.get(action=AuditAction.NOTIFY_SENT)
    assert event.target_id == "test:one" and event.outcome == "succeeded"
    assert receiver.apprise_url() not in str(event.details) + event.message  # URLs can hold tokens


def test_the_same_event_is_not_sent_twice_within_the_repeat_window(receiver, settings):
    settings.NOTIFY_REPEAT_MINUTES = 60
    assert notify(event="test", subject="one", title="t", body="b") is True
    assert notify(event="test", subject="one", title="t", body="b") is None
    assert notify(event="test", subject="two", title="t", body="b") is True  # another subject
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        assert notify(event="test", subject="one", title="t", body="b") is True
    assert len(receiver.bodies) == 3


def test_a_failing_receiver_never_fails_the_caller_and_is_audited_as_failed(receiver):
    receiver.status = 500
    assert notify(event="test", subject="down", title="t", body="b") is False
    event = AuditEvent.objects.get(action=AuditAction.NOTIFY_FAILED)
    assert event.outcome == "failed"
    assert event.message == "t: the receiver answered HTTP 500"
    receiver.status = 200
    # A failure does not count as sent: the next attempt goes out.
    assert notify(event="test", subject="down", title="t", body="b") is True


@pytest.mark.parametrize("timeout", [1, 6])
def test_a_receiver_that_hangs_is_given_up_on_after_the_configured_time(receiver, settings, timeout):
    receiver.delay = 9
    settings.NOTIFY_TIMEOUT_SECONDS = timeout
    started = time.monotonic()
    assert notify(event="test", subject="slow", title="t", body="b") is False
    # The setting decides, not Apprise's own 4 s: given up on after it, and not long after.
    assert timeout <= time.monotonic() - started < timeout + 1.5
    assert f"t: no answer within {timeout} s" == AuditEvent.objects.get(action=AuditAction.NOTIFY_FAILED).message
    # Nothing of Apprise is left waiting on the socket once notify() returns.
    assert not [thread for thread in threading.enumerate() if thread.name == "notify"]


def test_a_receiver_that_is_not_there_is_said_to_be_unreachable(settings):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings.NOTIFY_URLS = [f"json://127.0.0.1:{port}/notify"]
    assert notify(event="test", subject="gone", title="t", body="b") is False
    message = AuditEvent.objects.get(action=AuditAction.NOTIFY_FAILED).message
    assert message == "t: the receiver could not be reached (connection refused or unknown host)"


def test_nothing_is_sent_when_notifications_are_off(settings):
    settings.NOTIFY_URLS = []
    assert notify(event="test", subject="x", title="t", body="b") is None
    assert not AuditEvent.objects.filter(action__startswith="notify.").exists()


@pytest.fixture
def leaking(monkeypatch):
    """A provider whose leak total the test sets (restored afterwards)."""
    state = {"bytes": 0}
    saved = dict(_PROVIDERS)
    _PROVIDERS.clear()
    register_overview(
        OverviewProvider(
            app_label="tests",
            title="Tests",
            section=lambda: OverviewSection(
                title="Tests", url="/", bytes=state["bytes"], leaks=[Leak("stray", "tests", state["bytes"], "/", "x")]
            ),
        )
    )
    yield state
    _PROVIDERS.clear()
    _PROVIDERS.update(saved)


def test_the_leak_watch_notifies_once_when_the_total_crosses_the_limit(receiver, settings, leaking):
    settings.NOTIFY_LEAK_BYTES = 1000
    settings.NOTIFY_REPEAT_MINUTES = 0
    leaking["bytes"] = 10
    run_now(Kind.PANEL_WATCH, actor="tests")
    leaking["bytes"] = 5000
    crossed = run_now(Kind.PANEL_WATCH, actor="tests")
    run_now(Kind.PANEL_WATCH, actor="tests")  # still over: no second message
    assert crossed.result["crossed"] is True
    assert "over the limit" in crossed.result["summary"]
    assert [body["title"] for body in receiver.bodies] == ["Leaks hold 4.9 KiB"]


def test_the_daily_digest_says_held_leaked_reclaimed_and_failures(receiver, leaking):
    leaking["bytes"] = 3 * 1024**2
    AuditEvent.objects.create(actor_name="t", action="pod.stop", target_type="pod", target_id="a", outcome="succeeded",
                              bytes_reclaimed=2 * 1024**2)  # fmt: skip
    Operation.objects.create(kind=Kind.POD_STOP, target_type="pod", target_id="b", actor_name="t",
                             status=Operation.Status.FAILED, finished_at=timezone.now(), exclusive=False)  # fmt: skip
    digest = run_now(Kind.PANEL_DIGEST, actor="tests")
    message = receiver.bodies[-1]["message"]
    assert "Leaked: 3.0 MiB" in message
    assert "Reclaimed in the last 24 h: 2.0 MiB" in message
    assert "Failed operations: 1" in message
    assert digest.result["sent"] is True


def test_an_operation_that_fails_notifies(receiver, leaking, settings, monkeypatch):
    from apps.audit import watch

    def refuse(operation):
        from controlpanel.errors import PanelError

        raise PanelError("the leak report could not be read")

    monkeypatch.setattr(watch, "overview_collect", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(Exception, match="errored"):
        run_now(Kind.PANEL_WATCH, actor="tests")
    body = receiver.bodies[-1]
    assert body["title"] == "Watch the leak total leaks errored"
    assert "RuntimeError: boom" in body["message"]

"""Holds are set and released through audited services, from the admin and the CLI alike."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audit.holds import Held, held_ids, hold_for, hold_refuse, hold_release, hold_set
from apps.audit.models import AuditEvent, Hold
from apps.audit.names import AuditAction, TargetType
from controlpanel.errors import InvalidInput, NotFound, PanelError

pytestmark = pytest.mark.django_db


def test_a_hold_is_audited_and_refuses_manual_deletion_until_released(staff_user):
    hold_set(target_type=TargetType.POD, target_id="abc", reason="legal hold", actor=staff_user)
    with pytest.raises(Held, match="pod abc is on hold by root \\(legal hold\\); release the hold first"):
        hold_refuse(target_type=TargetType.POD, target_id="abc", what="pod abc")
    hold_release(target_type=TargetType.POD, target_id="abc", actor=staff_user)
    hold_refuse(target_type=TargetType.POD, target_id="abc", what="pod abc")  # no longer refused
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "target_id", "actor_name"))
    assert actions == [(AuditAction.HOLD_SET, "abc", "root"), (AuditAction.HOLD_RELEASE, "abc", "root")]


def test_held_ids_answers_for_many_items_in_one_query(django_assert_num_queries):
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="s1", reason="r", actor="t")
    hold_set(target_type=TargetType.SEPARATION_SESSION, target_id="s3", reason="r", actor="t")
    hold_set(target_type=TargetType.POD, target_id="s2", reason="another type", actor="t")
    with django_assert_num_queries(1):  # the active holds of that type among the ids
        held = held_ids(target_type=TargetType.SEPARATION_SESSION, target_ids=["s1", "s2", "s3", "s4"])
    assert held == {"s1", "s3"}


def test_a_hold_with_an_end_stops_holding_then():
    until = timezone.now() + timedelta(hours=2)
    hold_set(target_type=TargetType.SNAPSHOT, target_id="7", reason="audit", actor="t", until=until)
    assert hold_for(target_type=TargetType.SNAPSHOT, target_id="7") is not None
    with time_machine.travel(until + timedelta(seconds=1)):
        assert hold_for(target_type=TargetType.SNAPSHOT, target_id="7") is None
        assert held_ids(target_type=TargetType.SNAPSHOT) == set()


@pytest.mark.parametrize(
    ("target_type", "target_id", "reason", "until", "message"),
    [
        ("operation", "1", "r", None, "cannot be held"),
        (TargetType.POD, "", "r", None, "needs the id"),
        (TargetType.POD, "a\x00b", "r", None, "needs the id"),
        (TargetType.POD, "abc", "  ", None, "needs a reason"),
        (TargetType.POD, "abc", "r", "past", "must be in the future"),
    ],
)
def test_bad_holds_are_refused_with_one_line_and_write_nothing(target_type, target_id, reason, until, message):
    if until == "past":
        until = timezone.now() - timedelta(minutes=1)
    with pytest.raises(InvalidInput, match=message):
        hold_set(target_type=target_type, target_id=target_id, reason=reason, actor="t", until=until)
    assert not Hold.objects.exists() and not AuditEvent.objects.exists()


def test_holding_twice_and_releasing_nothing_are_refused():
    hold_set(target_type=TargetType.POD, target_id="abc", reason="first", actor="t")
    with pytest.raises(PanelError, match="already on hold by t \\(first\\)"):
        hold_set(target_type=TargetType.POD, target_id="abc", reason="second", actor="t")
    with pytest.raises(NotFound, match="not on hold"):
        hold_release(target_type=TargetType.POD, target_id="other", actor="t")


def test_the_cli_sets_lists_and_releases(capsys):
    call_command("holds", "set", "mixjob-session", "sess-1", "--reason", "customer dispute", "--until", "2099-01-01")
    call_command("holds", "list", "--json")
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert listed == [
        {
            "target_type": "mixjob-session",
            "target_id": "sess-1",
            "reason": "customer dispute",
            "held_by": "cli",
            "until": "2099-01-01T00:00:00+00:00",
        }
    ]
    call_command("holds", "release", "mixjob-session", "sess-1")
    with pytest.raises(CommandError, match="not on hold"):
        call_command("holds", "release", "mixjob-session", "sess-1")
    with pytest.raises(CommandError, match="not an ISO time"):
        call_command("holds", "set", "pod", "p", "--reason", "r", "--until", "soon")


def test_the_admin_sets_through_the_service_and_releases_with_an_action(staff_client):
    response = staff_client.post(
        "/admin/audit/hold/add/",
        {"target_type": "pod", "target_id": "abc", "reason": "investigating", "until": ""},
    )
    assert response.status_code == 302
    hold = Hold.objects.get()
    assert (hold.held_by, hold.reason) == ("root", "investigating")
    assert AuditEvent.objects.filter(action=AuditAction.HOLD_SET, target_id="abc").exists()
    staff_client.post("/admin/audit/hold/", {"action": "release", "_selected_action": [hold.pk]})
    hold.refresh_from_db()
    assert hold.released_by == "root"
    assert AuditEvent.objects.filter(action=AuditAction.HOLD_RELEASE, target_id="abc").exists()


def test_a_viewer_cannot_set_a_hold_in_the_admin(viewer_client):
    response = viewer_client.post(
        "/admin/audit/hold/add/", {"target_type": "pod", "target_id": "abc", "reason": "mine now"}
    )
    assert response.status_code == 403
    assert not Hold.objects.exists()

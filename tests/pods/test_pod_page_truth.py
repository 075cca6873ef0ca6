"""A pod's page tells the truth (issue #23): what a hold refuses is shown disabled with the
reason, its confirmation says so instead of listing volumes to delete, and an attempt anyway
is refused, audited and logged; proofs are offered only when there is something to prove and
no work runs, and the card reloads itself when work ends."""

import logging

import pytest
from django.urls import reverse

from apps.audit.holds import hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import request
from apps.pods.models import Pod, Snapshot
from tests.pods.test_verify import pod_row

pytestmark = pytest.mark.django_db

HOLD_SENTENCE = "pod kept is on hold by t (investigation); release the hold first"


@pytest.fixture
def held_pod():
    pod = pod_row("kept", Pod.Status.RUNNING)
    hold_set(target_type=TargetType.POD, target_id=pod.pod_id, reason="investigation", actor="t")
    return pod


def test_a_held_pods_page_disables_what_the_hold_refuses_and_says_why(staff_client, held_pod):
    body = staff_client.get(reverse("pods:detail", args=["kept"])).text
    for name in ("stop", "deprovision", "delete"):
        assert reverse("pods:confirm", args=["kept", name]) not in body
        assert f'disabled title="On hold: release the hold first">{name.capitalize()}</button>' in body
    assert "On hold by t (investigation): nothing stops, deprovisions or deletes this pod" in body


@pytest.mark.parametrize("action", ["stop", "deprovision", "delete"])
def test_a_held_pods_confirmation_says_it_is_held_and_offers_no_button(staff_client, held_pod, action):
    response = staff_client.get(reverse("pods:confirm", args=["kept", action]))
    assert response.status_code == 409
    assert HOLD_SENTENCE in response.text
    assert "deleted after a verified snapshot" not in response.text  # no list of volumes to delete
    assert reverse(f"pods:{action}", args=["kept"]) not in response.text


def test_an_attempt_on_a_held_pod_is_refused_audited_and_logged(staff_client, held_pod, caplog):
    with caplog.at_level(logging.WARNING):
        response = staff_client.post(reverse("pods:deprovision", args=["kept"]), {"confirm": "yes"}, follow=True)
    assert HOLD_SENTENCE in response.text
    assert not Operation.objects.exists()
    event = AuditEvent.objects.get(action=AuditAction.POD_DEPROVISION)
    assert (event.outcome, event.target_id, event.actor_name) == ("failed", "kept", "root")
    assert event.message == f"refused: {HOLD_SENTENCE}"
    assert any("refused pod.deprovision of kept for root" in record.getMessage() for record in caplog.records)


def test_verify_and_drill_are_offered_only_with_a_complete_snapshot_and_wait_while_work_runs(staff_client):
    pod = pod_row("proofs", Pod.Status.RUNNING)
    page = reverse("pods:detail", args=["proofs"])
    verify = reverse("pods:verify", args=["proofs"])
    body = staff_client.get(page).text
    assert verify not in body and "No complete snapshot yet: there is nothing to verify or drill" in body
    Snapshot.objects.create(pod=pod, store_url="file:///s", status=Snapshot.Status.COMPLETE, total_bytes=10)
    assert verify in staff_client.get(page).text
    # A verification asked for from this page is this pod's work: listed, and the buttons wait.
    asked = request(Kind.PODS_VERIFY, None, actor="t", pod_id="proofs")
    body = staff_client.get(page).text
    assert f'id="operation-{asked.pk}"' in body
    assert verify not in body and "Work on this pod is under way; these come back when it ends." in body
    # The card reloads itself when an operation ends (no page reload needed).
    part = staff_client.get(page, {"part": "proven"}).text
    assert part.lstrip().startswith('<section class="card" id="proven"') and "operation-finished from:body" in part

"""Holds on pods: a person's stop, deprovision or delete of a held pod is refused before any
row is written; reconcile leaves a held interrupted pod alone; the orphan sweep keeps the
volumes of a held pod id and says so; holds are set and released from the pod's page."""

from datetime import timedelta

import docker.errors
import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from apps.audit.holds import Held, hold_release, hold_set
from apps.audit.models import AuditEvent, Hold, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import request
from apps.pods import services
from apps.pods.models import Pod
from tests import parts
from tests.pods.test_verify import pod_row, stored_snapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", [Kind.POD_STOP, Kind.POD_DEPROVISION, Kind.POD_DELETE])
def test_a_persons_stop_deprovision_or_delete_of_a_held_pod_is_refused(kind, staff_user):
    pod = pod_row("kept", Pod.Status.RUNNING)
    hold_set(target_type=TargetType.POD, target_id=pod.pod_id, reason="investigation", actor="t")
    with pytest.raises(Held, match="pod kept is on hold by t \\(investigation\\); release the hold first"):
        request(kind, pod.pod_id, actor=staff_user)
    assert not Operation.objects.exists()
    hold_release(target_type=TargetType.POD, target_id=pod.pod_id, actor="t")
    assert request(kind, pod.pod_id, actor=staff_user).status == Operation.Status.PENDING


def test_deleting_a_pod_with_a_held_snapshot_is_refused(staff_user):
    pod = pod_row("snapheld", Pod.Status.STOPPED)
    snapshot = stored_snapshot(pod)
    hold_set(target_type=TargetType.SNAPSHOT, target_id=str(snapshot.pk), reason="evidence", actor="t")
    with pytest.raises(Held, match=f"snapshot #{snapshot.pk} of pod snapheld is on hold"):
        request(Kind.POD_DELETE, pod.pod_id, actor=staff_user)
    assert request(Kind.POD_DEPROVISION, pod.pod_id, actor=staff_user)  # deprovision keeps snapshots


def test_reconcile_leaves_a_held_interrupted_pod_alone():
    pod = pod_row("halfway", Pod.Status.STOPPING)
    pod.host.reachable = True
    pod.host.save()
    hold_set(target_type=TargetType.POD, target_id=pod.pod_id, reason="do not finish", actor="t")
    assert services.pods_resume_interrupted(actor="test") == {"halfway": "left alone: on hold"}
    assert not Operation.objects.exists()
    assert Pod.objects.get(pk=pod.pk).status == Pod.Status.STOPPING


@pytest.mark.docker
def test_the_orphan_sweep_keeps_volumes_of_a_held_pod_id(docker_client, pods_settings):
    pods_settings.POD_ORPHAN_GRACE_MINUTES = 60
    held_id, free_id = parts.pod_id("h"), parts.pod_id("f")
    names = [f"pinacle-vol-{pod_id}-workspace" for pod_id in (held_id, free_id)]
    for name, pod_id in zip(names, (held_id, free_id), strict=True):
        docker_client.volumes.create(name=name, labels={"pinacle.pod": pod_id})
    hold_set(target_type=TargetType.POD, target_id=held_id, reason="forensics", actor="t")
    prefix = "pinacle-vol-"
    try:
        with time_machine.travel(timezone.now() + timedelta(minutes=61), tick=False):
            preview = services.orphans_preview(name_prefix=f"{prefix}{held_id}")
            result = services.orphans_sweep(actor="test", name_prefix=f"{prefix}{held_id}")
            freed = services.orphans_sweep(actor="test", name_prefix=f"{prefix}{free_id}")
        assert [item.why for item in preview.keep] == ["on hold"] and preview.delete == []
        assert result["removed"] == [] and result["on_hold"] == [names[0]]
        assert freed["removed"] == [names[1]]
        docker_client.volumes.get(names[0])
    finally:
        for name in names:
            try:
                docker_client.api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass


def _hold_form(pod_id: str, **fields) -> dict:
    return {"target_type": TargetType.POD, "target_id": pod_id, "next": f"/pods/{pod_id}/", **fields}


def test_a_hold_is_set_and_released_from_the_pod_page(staff_client):
    pod = pod_row("paged", Pod.Status.RUNNING)
    page = staff_client.get(f"/pods/{pod.pod_id}/").content.decode()
    assert "Put on hold" in page and "Not on hold" in page
    response = staff_client.post(
        reverse("dashboard:hold-set"), _hold_form(pod.pod_id, reason="customer dispute", until="2999-01-01")
    )
    assert response.status_code == 302 and response["Location"] == f"/pods/{pod.pod_id}/"
    hold = Hold.objects.get(target_type=TargetType.POD, target_id=pod.pod_id)
    assert hold.reason == "customer dispute" and hold.until.year == 2999
    page = staff_client.get(f"/pods/{pod.pod_id}/").content.decode()
    assert "customer dispute" in page and "Release the hold" in page
    staff_client.post(reverse("dashboard:hold-release"), _hold_form(pod.pod_id))
    assert AuditEvent.objects.filter(action=AuditAction.HOLD_RELEASE, target_id=pod.pod_id).exists()


def test_a_viewer_sees_hold_controls_disabled_and_cannot_post_them(viewer_client):
    pod = pod_row("watched", Pod.Status.RUNNING)
    page = viewer_client.get(f"/pods/{pod.pod_id}/").content.decode()
    assert "Run a restore drill" not in page
    assert 'disabled title="Your role may look, not change' in page and reverse("dashboard:hold-set") not in page
    assert viewer_client.post(reverse("dashboard:hold-set"), _hold_form(pod.pod_id, reason="x")).status_code == 403
    assert not Hold.objects.exists()


def test_a_hold_without_a_reason_is_refused_on_the_page(staff_client):
    pod = pod_row("noreason", Pod.Status.RUNNING)
    response = staff_client.post(reverse("dashboard:hold-set"), _hold_form(pod.pod_id, reason=" "), follow=True)
    assert "a hold needs a reason" in response.content.decode()
    assert not Hold.objects.exists()

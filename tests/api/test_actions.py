"""Actions through the API are the panel's own: same kinds, same checks, same sentences."""

import pytest

from apps.audit.models import AuditEvent, Hold, Operation
from apps.pods import services
from apps.pods.models import Pod
from tests.api.conftest import bearer, pod_row
from tests.pods.conftest import container_exists, pod_volumes

pytestmark = pytest.mark.django_db


def test_an_operator_token_stops_a_real_pod_and_follows_its_operation_to_the_end(
    client, operator_token, q_sync, docker_client, new_pod_id, django_capture_on_commit_callbacks
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    assert client.get(f"/api/pods/{pod_id}", **bearer(operator_token)).json()["actions"] == [
        "stop",
        "deprovision",
        "delete",
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/pods/{pod_id}/stop", **bearer(operator_token))
    assert response.status_code == 202
    operation_id = response.json()["operation"]
    assert response.json() == {"operation": operation_id}

    shown = client.get(f"/api/operations/{operation_id}", **bearer(operator_token)).json()
    assert shown["status"] == "succeeded"
    assert shown["kind"] == "pod.stop" and shown["target_id"] == pod_id
    assert shown["sentence"].startswith(f"Pod {pod_id} stopped: snapshot #")
    assert shown["progress"]["unit"] == "bytes" and shown["progress"]["done"] > 0
    assert shown["actor"] == "api:ci-deploy"

    # The world changed, not only the rows: no container, no volume.
    assert Pod.objects.get(pod_id=pod_id).status == Pod.Status.STOPPED
    assert not container_exists(docker_client, pod_id)
    assert pod_volumes(docker_client, pod_id) == []
    event = AuditEvent.objects.get(action="pod.stop", target_id=pod_id)
    assert event.actor_name == "api:ci-deploy"
    assert event.operation_id == operation_id


def test_a_viewer_token_may_read_but_its_stop_is_refused_with_the_panels_sentence(client, viewer_token):
    pod_row("readonly1")
    assert client.get("/api/pods", **bearer(viewer_token)).json()[0]["pod_id"] == "readonly1"
    assert client.get("/api/pods/readonly1", **bearer(viewer_token)).json()["actions"] == []

    response = client.post("/api/pods/readonly1/stop", **bearer(viewer_token))
    assert response.status_code == 403
    assert response.json() == {"error": "api:dash-reader may not stop pod (needs pods.stop_pod)"}
    assert not Operation.objects.exists()
    assert Pod.objects.get(pod_id="readonly1").status == Pod.Status.RUNNING


def test_an_unknown_pod_is_a_404_with_a_sentence(client, operator_token):
    for response in (
        client.get("/api/pods/nosuchpod", **bearer(operator_token)),
        client.post("/api/pods/nosuchpod/stop", **bearer(operator_token)),
    ):
        assert response.status_code == 404
        assert response.json() == {"error": "pod 'nosuchpod' does not exist"}
    assert client.get("/api/operations/987654", **bearer(operator_token)).json() == {
        "error": "operation #987654 does not exist"
    }
    assert client.post("/api/pods/nosuchpod/explode", **bearer(operator_token)).status_code == 400


def test_a_refused_action_answers_the_status_and_sentence_the_page_shows(client, operator_token):
    pod_row("stopped1", status=Pod.Status.STOPPED)
    response = client.post("/api/pods/stopped1/stop", **bearer(operator_token))
    assert response.status_code == 409
    assert response.json() == {"error": "pod 'stopped1' is stopped; it cannot be stopped now"}


def test_backup_of_a_running_pod_is_queued_and_refusals_are_sentences(client, operator_token, viewer_token):
    pod_row("backme")
    response = client.post("/api/pods/backme/backup", **bearer(operator_token))
    assert response.status_code == 202
    operation = Operation.objects.get(pk=response.json()["operation"])
    assert (operation.kind, operation.target_id, operation.actor_name) == ("pod.backup", "backme", "api:ci-deploy")
    # One backup of a pod at a time.
    again = client.post("/api/pods/backme/backup", **bearer(operator_token))
    assert again.status_code == 409
    assert again.json()["error"].startswith("pod 'backme' already has pod.backup in progress")

    # One backup at a time on the host (POD_BACKUP_CONCURRENCY=1), whoever asks.
    pod_row("neighbour")
    full = client.post("/api/pods/neighbour/backup", **bearer(operator_token))
    assert full.status_code == 409
    assert full.json() == {
        "error": "host local already runs 1 backup (POD_BACKUP_CONCURRENCY=1): try again when it ends"
    }

    pod_row("stoppedpod", status=Pod.Status.STOPPED)
    refused = client.post("/api/pods/stoppedpod/backup", **bearer(operator_token))
    assert refused.status_code == 409
    assert refused.json() == {"error": "pod 'stoppedpod' is stopped; only a running pod can be backed up"}
    forbidden = client.post("/api/pods/backme/backup", **bearer(viewer_token))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "api:dash-reader may not back up pod (needs pods.backup_pod)"}
    assert Operation.objects.count() == 1


def test_holds_set_refuse_a_stop_and_release(client, operator_token, viewer_token):
    pod_row("heldpod")
    hold = {"target_type": "pod", "target_id": "heldpod", "reason": "legal asked"}
    refused = client.post("/api/holds", hold, content_type="application/json", **bearer(viewer_token))
    assert refused.status_code == 403
    response = client.post("/api/holds", hold, content_type="application/json", **bearer(operator_token))
    assert response.status_code == 201
    assert response.json()["held_by"] == "api:ci-deploy"
    assert [h["target_id"] for h in client.get("/api/holds", **bearer(viewer_token)).json()] == ["heldpod"]
    assert AuditEvent.objects.get(action="hold.set").actor_name == "api:ci-deploy"

    stop = client.post("/api/pods/heldpod/stop", **bearer(operator_token))
    assert stop.status_code == 409
    assert stop.json()["error"].startswith("pod heldpod is on hold by api:ci-deploy")

    ref = {"target_type": "pod", "target_id": "heldpod"}
    released = client.post("/api/holds/release", ref, content_type="application/json", **bearer(operator_token))
    assert released.status_code == 200 and released.json()["released_by"] == "api:ci-deploy"
    assert not Hold.objects.filter(released_at__isnull=True).exists()
    bad = client.post(
        "/api/holds", {**hold, "target_type": "database"}, content_type="application/json", **bearer(operator_token)
    )
    assert bad.status_code == 400 and bad.json()["error"].startswith("target_type:")


def test_mixjob_cleanup_and_volume_inspection_are_queued_operations(
    client, operator_token, q_sync, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/mixjobs/cleanup", **bearer(operator_token))
    assert response.status_code == 202
    operation = Operation.objects.get(pk=response.json()["operation"])
    assert operation.kind == "mixjobs.cleanup" and operation.status == Operation.Status.SUCCEEDED
    assert operation.actor_name == "api:ci-deploy"

    missing = client.post("/api/volumes/nosuchvol/inspect", **bearer(operator_token))
    assert missing.status_code == 404 and "is not registered" in missing.json()["error"]
    bad_id = client.post("/api/mixjobs/sessions/../cleanup", **bearer(operator_token))
    assert bad_id.status_code == 400, bad_id.content

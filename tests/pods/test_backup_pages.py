"""The pod page's backup controls and `manage.py pods backup`: the same kind, the same
refusals; the button needs the permission and the CSRF token, and the page shows the copy."""

import json

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind
from apps.pods import services
from apps.pods.models import Pod, Snapshot
from tests.pods.test_verify import pod_row

pytestmark = pytest.mark.django_db


@pytest.mark.docker
def test_back_up_now_copies_the_running_pod_and_the_page_shows_it_not_yet_proven(
    staff_client, docker_client, new_pod_id, q_sync, django_capture_on_commit_callbacks
):
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    page = staff_client.get(f"/pods/{pod_id}/").content.decode()
    assert "Back up now" in page and "crash-consistent: what a power cut would leave" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/pods/{pod_id}/backup/")
    assert response.status_code == 302
    operation = Operation.objects.get(kind=Kind.POD_BACKUP)
    assert operation.status == "succeeded", operation.error
    snapshot = Snapshot.objects.get(pk=operation.result["snapshot"])
    assert snapshot.kind == Snapshot.Kind.BACKUP and Pod.objects.get(pod_id=pod_id).status == Pod.Status.RUNNING
    # The parts the operation's end reloads (no page reload): the copy, and its proof to come.
    backups = staff_client.get(f"/pods/{pod_id}/?part=backup").content.decode()
    assert f"snapshot #{snapshot.pk} (backup)" in backups
    snapshots = staff_client.get(f"/pods/{pod_id}/?part=snapshots").content.decode()
    assert "not yet proven" in snapshots

    # CLI: the same kind, JSON with the snapshot, its stored bytes and the seconds it took.
    out = []
    call_command("pods", "backup", pod_id, "--json", stdout=_Lines(out))
    answer = json.loads("".join(out))
    assert set(answer) == {"snapshot", "stored_bytes", "seconds"}
    assert Snapshot.objects.get(pk=answer["snapshot"]).status == Snapshot.Status.COMPLETE
    shown = []
    call_command("pods", "show", pod_id, "--json", stdout=_Lines(shown))
    last = json.loads("".join(shown))["last_snapshot"]
    assert (last["id"], last["kind"], last["status"]) == (answer["snapshot"], "backup", "complete")
    said = []
    call_command("pods", "backup", pod_id, stdout=_Lines(said))
    assert "".join(said).startswith(f"Pod {pod_id} backed up while running: snapshot #")


class _Lines:
    def __init__(self, into: list):
        self.into = into

    def write(self, text: str) -> None:
        self.into.append(text)

    def flush(self) -> None:
        pass


def test_the_cli_refuses_a_stopped_pod_with_one_line():
    pod_row("cli-stopped")
    with pytest.raises(CommandError, match="^pod 'cli-stopped' is stopped; only a running pod can be backed up$"):
        call_command("pods", "backup", "cli-stopped", "--json")


def test_a_viewer_has_no_button_and_may_not_back_up_or_set_the_interval(viewer_client):
    pod = pod_row("viewed", status=Pod.Status.RUNNING)
    page = viewer_client.get(f"/pods/{pod.pod_id}/").content.decode()
    assert "Back up now" not in page and "Hours between backups" not in page
    assert viewer_client.post(f"/pods/{pod.pod_id}/backup/").status_code == 403
    assert viewer_client.post(f"/pods/{pod.pod_id}/backup-interval/", {"hours": "1"}).status_code == 403
    assert not Operation.objects.exists() and Pod.objects.get(pk=pod.pk).backup_every_hours is None


def test_the_button_needs_the_csrf_token(client, staff_user):
    pod = pod_row("csrf", status=Pod.Status.RUNNING)
    client.force_login(staff_user)
    client.handler.enforce_csrf_checks = True
    assert client.post(f"/pods/{pod.pod_id}/backup/").status_code == 403
    assert client.post(f"/pods/{pod.pod_id}/backup-interval/", {"hours": "1"}).status_code == 403
    assert not Operation.objects.exists()


def test_the_interval_is_set_on_the_page_and_audited(staff_client):
    pod = pod_row("interval", status=Pod.Status.RUNNING)
    staff_client.post(f"/pods/{pod.pod_id}/backup-interval/", {"hours": "6"})
    assert Pod.objects.get(pk=pod.pk).backup_every_hours == 6
    assert "every 6 h" in staff_client.get(f"/pods/{pod.pod_id}/?part=backup").content.decode()
    staff_client.post(f"/pods/{pod.pod_id}/backup-interval/", {"hours": ""})
    assert Pod.objects.get(pk=pod.pk).backup_every_hours is None
    messages = list(AuditEvent.objects.filter(action="pod.backup-interval").values_list("message", flat=True))
    assert sorted(messages) == sorted(
        ["backups of the running pod: every 6 h", "backups of the running pod: the default (POD_BACKUP_EVERY_HOURS)"]
    )


def test_the_admin_sets_the_interval_through_the_same_service(staff_user, rf):
    from django.contrib import admin

    pod = pod_row("admin-interval", status=Pod.Status.RUNNING)
    model_admin = admin.site._registry[Pod]
    request = rf.post("/")
    request.user = staff_user
    form_class = model_admin.get_form(request, pod, change=True)
    shown = form_class(instance=pod)
    data = {name: shown[name].value() for name in shown.fields}
    data = {name: "" if value is None else value for name, value in data.items()}
    form = form_class(data={**data, "backup_every_hours": "12"}, instance=pod)
    assert form.is_valid(), form.errors
    model_admin.save_model(request, form.save(commit=False), form, change=True)
    assert Pod.objects.get(pk=pod.pk).backup_every_hours == 12
    event = AuditEvent.objects.get(action="pod.backup-interval")
    assert event.message == "backups of the running pod: every 12 h" and event.actor_user == staff_user

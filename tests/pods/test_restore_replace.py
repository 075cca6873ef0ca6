"""`pods restore-path --replace` (issue #22 part 3): the running pod backed up first, then PATH
replaced by its copy from snapshot N, read back from its place; the one replaced is kept in the
backup. A held pod gets neither; a failed backup replaces nothing; a failure after the move
aside puts the original back."""

import hashlib
import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError
from django.test import Client
from django.urls import reverse

from apps.audit.holds import Held, hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import run_now
from apps.audit.roles import OPERATOR_GROUP, roles_sync
from apps.pods.models import Snapshot
from apps.pods.services import restore_replace
from apps.pods.services.restore_path import pod_restore_path
from apps.pods.services.snapshot_files import file_read, snapshot_select
from controlpanel.errors import Forbidden, PanelError
from tests.pods.conftest import run_in
from tests.pods.test_restore_path import files_in, pods, running_pod_with_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.docker]

CHANGED = hashlib.sha256(b"changed since").hexdigest()


def backups_of(pod_id: str):
    return Snapshot.objects.filter(pod__pod_id=pod_id, kind=Snapshot.Kind.BACKUP)


def from_backup(pod_id: str, number: int, path: str) -> bytes:
    """One file read out of a snapshot with the panel's own reader (checked against its sha256)."""
    return b"".join(file_read(snapshot_select(pod_id=pod_id, number=number, path=path)))


def leftovers(docker_client, pod_id: str, folder: str) -> list[str]:
    listed = run_in(docker_client, pod_id, f"ls -a {folder}").split()
    return [name for name in listed if "snapshot-" in name]


def test_a_file_and_a_folder_are_replaced_after_a_backup_that_keeps_the_current_ones(docker_client, new_pod_id):
    pod_id, number, before = running_pod_with_snapshot(docker_client, new_pod_id)

    said = pods("restore-path", pod_id, str(number), "/workspace/proj/src/a.txt", "--replace")
    backup = backups_of(pod_id).get()
    assert backup.status == Snapshot.Status.COMPLETE
    assert "/workspace/proj/src/a.txt in pod" in said and f"is replaced by its copy from snapshot #{number}" in said
    assert f"read back from its place and matching; the one it replaced is kept in backup snapshot #{backup.pk}" in said
    assert files_in(docker_client, pod_id, "/workspace/proj/src/a.txt") == {"a.txt": before["proj/src/a.txt"]}
    assert leftovers(docker_client, pod_id, "/workspace/proj/src") == []
    assert from_backup(pod_id, backup.pk, "/workspace/proj/src/a.txt") == b"changed since"

    # A folder: the pod changed one file and added one since; afterwards it holds exactly the snapshot's.
    run_in(docker_client, pod_id, "printf 'newer' > /workspace/proj/src/b.txt && printf x > /workspace/proj/new.txt")
    operation = run_now(
        Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj", replace=True
    )
    second = backups_of(pod_id).latest("pk")
    assert operation.result["replaced"] and operation.result["backup"] == second.pk != backup.pk
    assert files_in(docker_client, pod_id, "/workspace/proj") == before
    assert leftovers(docker_client, pod_id, "/workspace") == []
    assert from_backup(pod_id, second.pk, "/workspace/proj/src/b.txt") == b"newer"
    assert from_backup(pod_id, second.pk, "/workspace/proj/new.txt") == b"x"
    operation.refresh_from_db()
    assert f"backup snapshot #{second.pk} keeps the current /workspace/proj" in operation.log
    assert re.search(
        rf"read back \d+ files \([^)]*\) of /workspace/proj from backup snapshot #{second.pk}", operation.log
    )

    event = AuditEvent.objects.filter(action=AuditAction.POD_RESTORE_PATH, target_id=pod_id).latest("pk")
    assert event.message == (
        f"/workspace/proj replaced by its copy from snapshot #{number}; "
        f"the one it replaced is kept in backup snapshot #{second.pk}"
    )
    assert event.details["backup"] == second.pk and event.details["replaced"] is True


def test_a_held_pod_is_refused_with_nothing_written_and_no_backup_taken(docker_client, new_pod_id):
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    hold_set(target_type=TargetType.POD, target_id=pod_id, reason="legal", actor="test")

    with pytest.raises(CommandError, match=f"pod {pod_id} is on hold"):
        pods("restore-path", pod_id, str(number), "/workspace/proj", "--replace")
    # The service itself, for a hold the request's check did not see.
    with pytest.raises(Held, match=f"pod {pod_id} is on hold"):
        pod_restore_path(pod_id=pod_id, number=number, path="/workspace/proj", actor="test", replace=True)
    assert not backups_of(pod_id).exists()
    assert leftovers(docker_client, pod_id, "/workspace") == []
    assert files_in(docker_client, pod_id, "/workspace/proj/src/a.txt") == {"a.txt": CHANGED}


def test_a_failed_backup_replaces_nothing(docker_client, new_pod_id, settings, tmp_path):
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    # The store the backup would go to cannot be made: its parent is a file (root or not).
    (tmp_path / "not-a-folder").write_bytes(b"")
    settings.SNAPSHOT_STORE_URL = f"file://{tmp_path / 'not-a-folder' / 'snapshots'}"

    with pytest.raises(PanelError) as failed:
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj", replace=True)
    said = str(failed.value)
    assert f"the backup of pod {pod_id} taken before replacing /workspace/proj failed, so nothing was replaced" in said
    assert "\n" not in said
    assert files_in(docker_client, pod_id, "/workspace/proj/src/a.txt") == {"a.txt": CHANGED}
    assert leftovers(docker_client, pod_id, "/workspace") == []
    assert not AuditEvent.objects.filter(
        action=AuditAction.POD_RESTORE_PATH, target_id=pod_id, outcome="succeeded"
    ).exists()


def test_a_backup_whose_copy_does_not_read_back_replaces_nothing(docker_client, new_pod_id, monkeypatch, panel_paths):
    """No copy trusted unread: the current PATH is removed only after the backup's copy of it
    was read back in this operation."""
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    backup = restore_replace.pod_backup

    def decayed(**kwargs):
        # The fault: the backup's copy of a.txt decays in the store right after it was written.
        result = backup(**kwargs)
        kept = Snapshot.objects.get(pk=result["snapshot"])
        row = snapshot_select(pod_id=pod_id, number=kept.pk, path="/workspace/proj/src/a.txt").rows[0]
        stored = panel_paths / "snapshots" / kept.prefix / "workspace.tar"
        raw = bytearray(stored.read_bytes())
        raw[row.offset] ^= 0xFF
        stored.write_bytes(bytes(raw))
        return result

    monkeypatch.setattr(restore_replace, "pod_backup", decayed)
    with pytest.raises(PanelError) as failed:
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj", replace=True)
    said = str(failed.value)
    kept = backups_of(pod_id).get()
    assert f"backup snapshot #{kept.pk} of pod {pod_id} does not read back its copy of /workspace/proj" in said
    assert "so nothing was replaced" in said and "\n" not in said
    assert files_in(docker_client, pod_id, "/workspace/proj/src/a.txt") == {"a.txt": CHANGED}
    assert leftovers(docker_client, pod_id, "/workspace") == []


def test_a_failure_after_the_move_aside_puts_the_original_back(docker_client, new_pod_id, monkeypatch):
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    read_back = restore_replace._read_back

    def damaged_in_place(plan, engine, at=""):
        # The fault: the copy in PATH's place changes before it is read back there.
        if at == plan.selection.path:
            run_in(docker_client, pod_id, "printf 'spoilt' >> /workspace/proj/src/b.txt")
        return read_back(plan, engine, at=at)

    monkeypatch.setattr(restore_replace, "_read_back", damaged_in_place)
    with pytest.raises(PanelError) as failed:
        run_now(Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj", replace=True)
    said = str(failed.value)
    assert "/workspace/proj does not read back from its place" in said and "/workspace/proj/src/b.txt differ" in said
    assert "the original /workspace/proj was put back; the part written was removed" in said
    assert files_in(docker_client, pod_id, "/workspace/proj/src/a.txt") == {"a.txt": CHANGED}
    assert leftovers(docker_client, pod_id, "/workspace") == []
    assert backups_of(pod_id).count() == 1


def test_the_confirmation_offers_replace_only_with_the_backup_permission_and_its_post_needs_csrf(
    docker_client, new_pod_id, django_user_model
):
    pod_id, number, _ = running_pod_with_snapshot(docker_client, new_pod_id)
    roles_sync()
    page_url = reverse("pods:snapshot-restore", args=[pod_id, number])
    run_url = reverse("pods:snapshot-restore-run", args=[pod_id, number])
    restorer = django_user_model.objects.create_user(username="restorer", password="pw-restorer-123!", is_staff=True)
    restorer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_pod", "restore_files_pod"], content_type__app_label="pods")
    )
    operator = django_user_model.objects.create_user(username="operator", password="pw-operator-123!", is_staff=True)
    operator.groups.add(Group.objects.get(name=OPERATOR_GROUP))

    # Restore files but not back up pods: the beside-restore only, and a replace POST is forbidden.
    client = Client(enforce_csrf_checks=True)
    client.force_login(restorer)
    page = client.get(page_url, {"path": "/workspace/proj"}).content.decode()
    assert "Restore as proj.from-snapshot" in page and "Replace the current one" not in page
    token = csrf_token(page)
    replace = {"path": "/workspace/proj", "confirm": "yes", "replace": "yes", "csrfmiddlewaretoken": token}
    assert client.post(run_url, replace).status_code == 403
    # The service says so too, for any caller that asks in such a person's name.
    with pytest.raises(Forbidden, match="restorer may not back up pods"):
        pod_restore_path(pod_id=pod_id, number=number, path="/workspace/proj", actor=restorer, replace=True)
    assert not backups_of(pod_id).exists()

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    page = client.get(page_url, {"path": "/workspace/proj"}).content.decode()
    assert "Replace the current one (backs it up first)" in page and 'class="danger"' in page
    assert "is backed up first" in page and "which keeps the current /workspace/proj" in page
    # Without the CSRF token the POST is refused and nothing is asked for.
    assert client.post(run_url, {**replace, "csrfmiddlewaretoken": ""}).status_code == 403
    assert not Operation.objects.filter(kind=Kind.POD_RESTORE_PATH).exists()
    answer = client.post(run_url, {**replace, "csrfmiddlewaretoken": csrf_token(page)})
    assert answer.status_code == 302
    operation = Operation.objects.get(kind=Kind.POD_RESTORE_PATH)
    assert operation.params["replace"] is True and operation.params["path"] == "/workspace/proj"


def csrf_token(page: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def test_a_write_after_the_backup_read_the_path_keeps_the_one_replaced(docker_client, new_pod_id, monkeypatch):
    """The pod runs on while the copy is written: what it writes into PATH after the backup read
    it is in no snapshot, so the one moved aside stays, and the sentence says where and why."""
    pod_id, number, before = running_pod_with_snapshot(docker_client, new_pod_id)
    read_back = restore_replace._backup_read_back

    def then_written(plan, **kwargs):
        read_back(plan, **kwargs)
        run_in(docker_client, pod_id, "printf 'late' > /workspace/proj/src/b.txt")

    monkeypatch.setattr(restore_replace, "_backup_read_back", then_written)
    operation = run_now(
        Kind.POD_RESTORE_PATH, pod_id, actor="test", snapshot=number, path="/workspace/proj", replace=True
    )
    backup = backups_of(pod_id).get()
    aside = f"/workspace/proj.replaced-by-snapshot-{number}"
    assert files_in(docker_client, pod_id, "/workspace/proj") == before  # replaced all the same
    assert operation.result["left"] == (
        f"The one it replaced is left as {aside} in the pod: /workspace/proj/src/b.txt changed since backup "
        f"snapshot #{backup.pk} read it, so it is in no snapshot; look at it, then remove it."
    )
    assert run_in(docker_client, pod_id, f"cat {aside}/src/b.txt") == "late"

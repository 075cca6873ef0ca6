"""Issue #17 item 9: every leak has a fix. A folder a layout rule forbids is removed from the
volume (local and Modal), previewed with every file and its bytes, refused for the root, a
path outside the volume, a folder no rule forbids and anything on hold, audited, and the
volume is inspected again so the finding and the leak go at once."""

import re

import pytest

from apps.audit.holds import Held, hold_set
from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import request, run_now
from apps.volumes import selectors
from apps.volumes.models import Inspection, LayoutRule
from apps.volumes.services.removal import folder_target, volume_folder_preview
from controlpanel.errors import InvalidInput, NotFound, PanelError
from tests.volumes.helpers import inspect_now, lay_out_results

pytestmark = pytest.mark.django_db

STRAY = {"results/train/a.bin": 700, "results/train/b.bin": 300, "results/smoke/c.json": 45}
STRAY_BYTES = sum(STRAY.values())


def forbidden_world(world, *, rule_path: str = "results"):
    """The training outputs plus a stray `results/` a folder_absent rule forbids, inspected."""
    kept = lay_out_results(world)
    for path, size in STRAY.items():
        world.put(path, size)
    volume = world.volume()
    LayoutRule.objects.create(
        volume=volume, kind=LayoutRule.Kind.FOLDER_ABSENT, path=rule_path, description="a stray copy"
    )
    inspect_now(volume)
    return volume, kept


def paths_on(world) -> set[str]:
    if world.kind == "local":
        return {str(p.relative_to(world.root)) for p in world.root.rglob("*")}
    return set(world.server.paths(world.modal_name))


def test_the_preview_lists_every_file_with_its_bytes_and_writes_nothing(world):
    volume, _ = forbidden_world(world)
    events, operations = AuditEvent.objects.count(), Operation.objects.count()
    preview = volume_folder_preview(volume=volume, path="results")
    assert sorted((item.name, item.bytes) for item in preview.delete) == sorted(STRAY.items())
    assert preview.total_bytes == STRAY_BYTES and preview.destructive and preview.has_work
    assert {item.why for item in preview.delete} == {"a stray copy"}
    assert "3 files" in preview.summary and "1.0 KiB" in preview.summary
    assert AuditEvent.objects.count() == events and Operation.objects.count() == operations
    assert {path for path in STRAY} <= paths_on(world)


def test_a_long_preview_lists_the_first_files_and_counts_the_rest(local_world, monkeypatch):
    monkeypatch.setattr("apps.volumes.services.removal.PREVIEW_FILES", 2)
    volume, _ = forbidden_world(local_world)
    preview = volume_folder_preview(volume=volume, path="results/")
    assert len(preview.delete) == 3 and preview.delete[-1].name == "1 more file in results/"
    assert preview.total_bytes == STRAY_BYTES


def test_removing_the_folder_frees_it_audits_and_clears_the_finding_and_the_leak(world):
    volume, kept = forbidden_world(world)
    assert any("results/ should not exist" in leak.label for leak in selectors.overview_section().leaks)
    operation = run_now(Kind.VOLUME_REMOVE_FOLDER, folder_target(volume.name, "results"), actor="test")
    assert operation.status == "succeeded", operation.error
    assert operation.result["files"] == 3 and operation.result["bytes"] == STRAY_BYTES
    assert operation.result["summary"] == (
        f"Removed results/ from {volume.name}: 3 files, 1.0 KiB; the volume was inspected again."
    )
    # The bar's total was measured when the work started, and the work never passed it.
    assert operation.progress_total == 3 and operation.progress_done == 3
    left = paths_on(world)
    assert not any(path == "results" or path.startswith("results/") for path in left)
    assert "checkpoints/run-1/model.pt" in left  # nothing else went
    event = AuditEvent.objects.get(action="volume.remove-folder")
    assert event.target_type == TargetType.VOLUME_FOLDER and event.target_id == f"{volume.name}:results"
    assert event.bytes_reclaimed == STRAY_BYTES and event.outcome == "succeeded"
    latest = Inspection.objects.filter(volume=volume).first()
    assert latest.total_bytes == kept and not latest.findings.exists()
    section = selectors.overview_section()
    assert section.bytes == kept and not section.leaks
    if world.kind == "modal":
        # From outside a container Modal persists the recursive remove at once: no commit.
        assert world.server.removals(world.modal_name) == ["results"]
        assert world.server.commits() == 0


def test_inside_a_container_the_removal_goes_through_the_mount_and_commits_once(modal_server, monkeypatch, tmp_path):
    from apps.volumes.models import Volume
    from tests.fakes.modal_fixtures import modal_client_reset

    mount = tmp_path / "data"
    for path, size in STRAY.items():
        (mount / path).parent.mkdir(parents=True, exist_ok=True)
        (mount / path).write_bytes(b"x" * size)
    (mount / "train").mkdir()
    modal_server.create_volume("in-container")
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    modal_client_reset()
    volume = Volume.objects.create(name="mounted", url=f"modal://in-container?mount={mount}")
    LayoutRule.objects.create(volume=volume, kind=LayoutRule.Kind.FOLDER_ABSENT, path="results")
    assert "mounted here" in volume_folder_preview(volume=volume, path="results").summary
    operation = run_now(Kind.VOLUME_REMOVE_FOLDER, "mounted:results", actor="test")
    assert operation.status == "succeeded", operation.error
    assert operation.result["commits"] == 1 and modal_server.commits("in-container") == 1
    assert modal_server.removals() == []  # through the mount, not the API
    assert sorted(p.name for p in mount.iterdir()) == ["train"]
    assert AuditEvent.objects.get(action="volume.remove-folder").details["commits"] == 1


@pytest.mark.parametrize(
    ("path", "refusal"),
    [
        ("", "refusing to remove the root"),
        ("/", "refusing to remove the root"),
        ("../outside", "not valid"),
        ("results/../../etc", "not valid"),
        ("train", "no enabled layout rule says it must not exist"),
        ("results/train", "no enabled layout rule says it must not exist"),
    ],
)
def test_the_root_a_path_leaving_the_volume_and_a_folder_no_rule_forbids_are_refused(local_world, path, refusal):
    volume, _ = forbidden_world(local_world)
    with pytest.raises(InvalidInput, match=refusal):
        request(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:{path}", actor="test")
    assert not Operation.objects.filter(kind=Kind.VOLUME_REMOVE_FOLDER).exists()
    assert (local_world.root / "results/train/a.bin").exists()


def test_a_disabled_rule_removes_nothing(local_world):
    volume, _ = forbidden_world(local_world)
    LayoutRule.objects.filter(volume=volume).update(enabled=False)
    with pytest.raises(InvalidInput, match="no enabled layout rule"):
        volume_folder_preview(volume=volume, path="results")


@pytest.mark.parametrize(
    ("held", "words"),
    [
        ("results", "folder results/ on volume brain-go-brr-results is on hold by test (legal)"),
        ("results/train", "contains results/train/, which is on hold by test (legal)"),
    ],
)
def test_a_held_folder_or_one_holding_a_held_folder_is_refused(local_world, held, words):
    volume, _ = forbidden_world(local_world)
    hold_set(target_type=TargetType.VOLUME_FOLDER, target_id=f"{volume.name}:{held}", reason="legal", actor="test")
    with pytest.raises(Held, match=re.escape(words)):
        request(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test")
    with pytest.raises(Held):
        volume_folder_preview(volume=volume, path="results")
    assert not Operation.objects.filter(kind=Kind.VOLUME_REMOVE_FOLDER).exists()
    assert (local_world.root / "results/train/a.bin").exists()


def test_a_folder_inside_a_held_folder_is_refused(local_world):
    volume, _ = forbidden_world(local_world, rule_path="results/train")
    hold_set(target_type=TargetType.VOLUME_FOLDER, target_id=f"{volume.name}:results", reason="audit", actor="test")
    with pytest.raises(Held, match="is inside results/, which is on hold"):
        request(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results/train", actor="test")


def test_another_volumes_hold_does_not_refuse(local_world):
    volume, _ = forbidden_world(local_world)
    hold_set(target_type=TargetType.VOLUME_FOLDER, target_id="other-volume:results", reason="x", actor="test")
    assert run_now(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test").status == "succeeded"


def test_a_symlink_or_a_file_at_the_forbidden_path_is_not_followed_or_removed(local_world, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.bin").write_bytes(b"p" * 10)
    lay_out_results(local_world)
    (local_world.root / "results").symlink_to(outside)
    volume = local_world.volume()
    LayoutRule.objects.create(volume=volume, kind=LayoutRule.Kind.FOLDER_ABSENT, path="results")
    with pytest.raises(InvalidInput, match="is a symlink, not a folder"):
        volume_folder_preview(volume=volume, path="results")
    with pytest.raises(InvalidInput, match="is a symlink, not a folder; nothing was removed"):
        run_now(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test")
    assert (outside / "precious.bin").exists() and (local_world.root / "results").is_symlink()


def test_a_folder_gone_already_fails_with_one_line(local_world):
    volume, _ = forbidden_world(local_world)
    import shutil

    shutil.rmtree(local_world.root / "results")
    with pytest.raises(NotFound, match="results/ is not on volume brain-go-brr-results"):
        run_now(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test")
    assert Operation.objects.get(kind=Kind.VOLUME_REMOVE_FOLDER).status == "failed"


def test_a_removal_that_fails_midway_is_audited_as_failed(local_world, monkeypatch):
    volume, _ = forbidden_world(local_world)

    def refuse(self, path, *, recursive=False):
        raise PanelError(f"{path} could not be removed: Permission denied")

    monkeypatch.setattr("apps.volumes.backends.local.LocalBackend.remove", refuse)
    with pytest.raises(PanelError, match="Permission denied"):
        run_now(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test")
    event = AuditEvent.objects.get(action="volume.remove-folder")
    assert event.outcome == "failed" and "Permission denied" in event.message and event.bytes_reclaimed == 0


def test_a_second_removal_of_the_same_folder_waits_for_the_first(local_world):
    from controlpanel.errors import Busy

    volume, _ = forbidden_world(local_world)
    request(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test")
    with pytest.raises(Busy, match="already has volume.remove-folder in progress"):
        request(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test")
    # Another spelling of the same folder is refused too: it would slip past the one-at-a-time rule.
    with pytest.raises(InvalidInput, match="write the folder as 'brain-go-brr-results:results'"):
        request(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:/results/", actor="test")
    assert Operation.objects.filter(kind=Kind.VOLUME_REMOVE_FOLDER).count() == 1


def test_modal_cli_lists_no_folder_after_the_removal(modal_server):
    """The SDK's own `modal volume ls` sees what the panel did (the fake serves it)."""
    import subprocess
    import sys

    from tests.volumes.helpers import ModalWorld

    world = ModalWorld(modal_server)
    volume, _ = forbidden_world(world)

    def ls() -> str:
        command = [sys.executable, "-m", "modal", "volume", "ls", world.modal_name, "/"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "results" in ls()
    assert run_now(Kind.VOLUME_REMOVE_FOLDER, f"{volume.name}:results", actor="test").status == "succeeded"
    assert "results" not in ls() and "checkpoints" in ls()

"""Issue #21 item 3: the panel's own data is never in reach of a volume. A volume at, above or
inside VAR_DIR, a snapshot store, the mix-job folders or the database file is refused when it
is added (after `..`, `.`, `//` and symlinks are resolved), again whenever it is used (settings
change), and remove-folder refuses, at the moment of deletion, a folder that holds panel data."""

import os
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.volumes.models import Inspection, LayoutRule, Volume
from apps.volumes.services import volume_add
from controlpanel.errors import InvalidInput
from tests.faults import panel_files_changed, panel_files_snapshot
from tests.volumes.helpers import inspect_now

pytestmark = pytest.mark.django_db


def _one_line_refusal(message: str) -> None:
    assert "refused" in message and "\n" not in message and len(message) < 600, message


def _refused(url: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        volume_add(name="own", url=url, actor="test")
    _one_line_refusal(str(caught.value))
    assert not Volume.objects.exists()
    return str(caught.value)


def _store_with_a_snapshot(folder) -> set[str]:
    """A file:// store with one snapshot's files in it; the relative paths written."""
    written = {"pods/abc/1/manifest.json", "pods/abc/1/workspace.tar"}
    for path in written:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(b"kept")
    return written


def _files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_parent_of_var_dir_is_refused_however_it_is_written(settings, panel_paths, harm):
    parent = panel_paths  # VAR_DIR, the snapshot store and the mix folders all live in it
    assert settings.VAR_DIR.parent == parent
    (settings.VAR_DIR / "secret-key").write_text("kept")
    panel = panel_files_snapshot()
    for written in [
        f"local://{parent}",
        f"local://{parent}/",
        f"local://{settings.VAR_DIR}/..",
        f"local://{settings.VAR_DIR}/./../",
        f"local://{parent}//volumes/..//",
        f"local://{parent / 'volumes' / '..'}",
    ]:
        assert "holds the panel's" in _refused(written), written
    harm("panel data", "a volume added at VAR_DIR's parent, six spellings", panel_touched=panel_files_changed(panel))


def test_the_cli_refuses_the_parent_of_var_dir_with_one_line(settings):
    with pytest.raises(CommandError) as caught:
        call_command("volumes", "add", "x", f"local://{settings.VAR_DIR.parent}")
    _one_line_refusal(str(caught.value))
    assert "holds the panel's" in str(caught.value) and not Volume.objects.exists()


def test_a_symlink_to_a_parent_of_var_dir_is_refused(settings, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    link = elsewhere / "looks-harmless"
    os.symlink(settings.VAR_DIR.parent, link)
    message = _refused(f"local://{link}")
    assert "through a symlink" in message and "holds the panel's" in message
    # `..` after a symlink is read as the kernel reads it: the parent of where the link leads.
    os.symlink(settings.VAR_DIR, elsewhere / "to-var")
    assert "holds the panel's" in _refused(f"local://{elsewhere / 'to-var'}/..")


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    "setting", ["SNAPSHOT_STORE_URL", "DEDUP_STORE_URL", "MIX_MEDIA_DIR", "MIX_OUTPUTS_DIR", "DATABASE"]
)
def test_a_folder_above_inside_or_at_each_kind_of_panel_data_is_refused(settings, tmp_path_factory, setting, harm):
    """Each kind configured outside VAR_DIR, so only its own rule can refuse it."""
    top = tmp_path_factory.mktemp("panel-data")
    data = top / "kept" / "data"
    data.mkdir(parents=True)
    if setting == "DEDUP_STORE_URL":
        settings.SNAPSHOT_STORE_URL = f"dedup+file://{data}"
    elif setting == "SNAPSHOT_STORE_URL":
        settings.SNAPSHOT_STORE_URL = f"file://{data}"
    elif setting == "DATABASE":
        data = data / "panel.sqlite3"
        data.write_bytes(b"")
        settings.DATABASES = {**settings.DATABASES, "default": {**settings.DATABASES["default"], "NAME": str(data)}}
    else:
        setattr(settings, setting, data)
    if data.is_dir():
        (data / "kept.bin").write_bytes(b"panel data")
    panel = panel_files_snapshot()
    _refused(f"local://{top / 'kept'}")
    _refused(f"local://{top}")
    _refused(f"local://{data}")
    if data.is_dir():
        _refused(f"local://{data / 'inside'}")
    harm("panel data", f"volumes added above, at and inside {setting}", panel_touched=panel_files_changed(panel))
    # A folder beside it holds none of it.
    assert volume_add(name="beside", url=f"local://{top / 'beside'}", actor="test").url == f"local://{top / 'beside'}"


def test_var_dir_volumes_itself_is_refused_a_folder_inside_it_is_not(settings):
    assert "is inside the panel's own data folder" in _refused(f"local://{settings.VAR_DIR / 'volumes'}")
    assert "is inside the panel's own data folder" in _refused(f"local://{settings.VAR_DIR / 'volumes' / 'x' / '..'}")
    sessions = f"local://{settings.VAR_DIR / 'volumes' / 'music-split-jobs-data'}"
    assert volume_add(name="sessions", url=sessions, actor="test").url == sessions


def _moved_store_world(settings, tmp_path_factory):
    """A volume added while the snapshot store lived elsewhere, with a rule against `snapshots/`;
    then the store is configured inside it (settings changed after the volume was added)."""
    root = tmp_path_factory.mktemp("shared") / "data"
    (root / "snapshots").mkdir(parents=True)
    volume = volume_add(name="data", url=f"local://{root}", actor="test")
    LayoutRule.objects.create(volume=volume, kind=LayoutRule.Kind.FOLDER_ABSENT, path="snapshots")
    written = _store_with_a_snapshot(root / "snapshots")
    settings.SNAPSHOT_STORE_URL = f"file://{root / 'snapshots'}"
    return volume, root, written


def test_a_volume_that_now_holds_the_snapshot_store_is_refused_when_used(settings, tmp_path_factory, harm):
    volume, root, written = _moved_store_world(settings, tmp_path_factory)
    panel = panel_files_snapshot()
    point = "inspect and remove-folder on a volume now holding the store"
    with harm.around("panel data", point, panel_touched=lambda: panel_files_changed(panel)):
        with pytest.raises(InvalidInput) as caught:
            inspect_now(volume)
        _one_line_refusal(str(caught.value))
        assert "holds the panel's snapshot store" in str(caught.value)
        with pytest.raises(InvalidInput) as caught:
            run_now(Kind.VOLUME_REMOVE_FOLDER, "data:snapshots", actor="test")
    _one_line_refusal(str(caught.value))
    assert _files_under(root / "snapshots") == written
    assert not Inspection.objects.exists()
    assert {op.status for op in Operation.objects.all()} == {Operation.Status.FAILED}
    assert not AuditEvent.objects.filter(action="volume.remove-folder").exists()


def test_a_sessions_volume_that_now_holds_panel_data_is_refused_and_nothing_is_removed(
    settings, tmp_path_factory, harm
):
    from tests.separations.helpers import cleanup_now, put_session

    root = tmp_path_factory.mktemp("shared") / "sessions-volume"
    settings.SESSIONS_VOLUME_URL = f"local://{root}"
    put_session("old", mtime=timezone.now() - timedelta(days=3), root=root)
    settings.MIX_OUTPUTS_DIR = root / "sessions" / "old" / "output"
    before = _files_under(root)
    panel = panel_files_snapshot()
    point = "a session cleanup on a volume now holding mix outputs"
    with (
        harm.around("panel data", point, panel_touched=lambda: panel_files_changed(panel)),
        pytest.raises(InvalidInput) as caught,
    ):
        cleanup_now(policy="exit")
    _one_line_refusal(str(caught.value))
    assert "holds the panel's mix-job outputs" in str(caught.value)
    assert _files_under(root) == before


def test_remove_folder_refuses_panel_data_found_there_at_the_moment_of_deletion(
    settings, tmp_path_factory, monkeypatch, harm
):
    """The volume is fine when opened; while its folder is measured, the store is configured
    inside it. The last check, right before deletion, reads settings as they are then."""
    from apps.volumes.services import removal

    root = tmp_path_factory.mktemp("shared") / "data"
    (root / "snapshots").mkdir(parents=True)
    volume = volume_add(name="data", url=f"local://{root}", actor="test")
    LayoutRule.objects.create(volume=volume, kind=LayoutRule.Kind.FOLDER_ABSENT, path="snapshots")
    written = _store_with_a_snapshot(root / "snapshots" / "store")
    measure = removal._measure

    def measured_then_settings_change(*args, **kwargs):
        contents = measure(*args, **kwargs)
        settings.SNAPSHOT_STORE_URL = f"file://{root / 'snapshots' / 'store'}"
        return contents

    monkeypatch.setattr(removal, "_measure", measured_then_settings_change)
    # The store is panel data from the moment settings name it: watched from before the run.
    panel = panel_files_snapshot(root / "snapshots" / "store")
    point = "remove-folder as the store is configured inside it"
    with (
        harm.around("panel data", point, panel_touched=lambda: panel_files_changed(panel)),
        pytest.raises(InvalidInput) as caught,
    ):
        run_now(Kind.VOLUME_REMOVE_FOLDER, "data:snapshots", actor="test")
    _one_line_refusal(str(caught.value))
    assert "removing snapshots/ from volume data refused" in str(caught.value)
    assert "holds the panel's snapshot store" in str(caught.value) and "nothing was removed" in str(caught.value)
    assert _files_under(root / "snapshots" / "store") == written
    assert Operation.objects.get(kind="volume.remove-folder").status == Operation.Status.FAILED

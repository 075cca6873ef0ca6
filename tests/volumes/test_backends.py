"""One contract, two backends: every case runs on a local folder and on a Modal Volume
served by the local servicer through the real `modal` SDK."""

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apps.volumes.backends import LocalBackend, backend_for_url
from apps.volumes.backends.modal import ModalBackend
from controlpanel.errors import InvalidInput, NotFound, Unreachable

VOLUME = "contract-volume"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class LocalWorld:
    commit_is_meaningful = False

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True)
        self.backend = backend_for_url(f"local://{root}")

    def put(self, path: str, size: int, mtime: datetime = T0) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x" * size)
        os.utime(target, (mtime.timestamp(), mtime.timestamp()))

    def symlink(self, path: str, target: str) -> None:
        link = self.root / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.root / path)


class ModalWorld:
    def __init__(self, server):
        self.server = server
        server.create_volume(VOLUME)
        self.backend = backend_for_url(f"modal://{VOLUME}?environment=main")

    def put(self, path: str, size: int, mtime: datetime = T0) -> None:
        self.server.put_file(VOLUME, path, size=size, mtime=mtime)

    def symlink(self, path: str, target: str) -> None:
        self.server.put_symlink(VOLUME, path, target)

    def exists(self, path: str) -> bool:
        return path in self.server.paths(VOLUME)


@pytest.fixture(params=["local", "modal"])
def world(request, tmp_path):
    if request.param == "local":
        return LocalWorld(tmp_path / "contract")
    return ModalWorld(request.getfixturevalue("modal_server"))


def test_backend_for_url_picks_the_implementation(tmp_path):
    assert isinstance(backend_for_url(f"local://{tmp_path / 'volume'}"), LocalBackend)
    modal = backend_for_url("modal://music-split-jobs-data?environment=main&mount=/data")
    assert isinstance(modal, ModalBackend)
    assert (modal.name, modal.environment, str(modal.mount_path)) == ("music-split-jobs-data", "main", "/data")
    with pytest.raises(InvalidInput):
        backend_for_url("ftp://x")


def test_lists_recursively_with_size_and_mtime(world):
    world.put("sessions/a/input.wav", 100)
    world.put("sessions/a/output/drums.flac", 30)
    world.put("other/keep.txt", 5)
    entries = {e.path: e for e in world.backend.iter_entries("sessions")}
    assert set(entries) == {"sessions/a", "sessions/a/input.wav", "sessions/a/output", "sessions/a/output/drums.flac"}
    assert entries["sessions/a"].is_dir and entries["sessions/a"].size == 0
    assert entries["sessions/a/input.wav"].size == 100
    assert entries["sessions/a/output/drums.flac"].mtime == T0
    assert entries["sessions/a/output/drums.flac"].name == "drums.flac"


def test_lists_one_level_without_recursion(world):
    world.put("sessions/a/input.wav", 1)
    world.put("sessions/b/input.wav", 1)
    assert sorted(e.path for e in world.backend.iter_entries("sessions", recursive=False)) == [
        "sessions/a",
        "sessions/b",
    ]


def test_listing_a_missing_folder_or_a_file_yields_nothing(world):
    world.put("sessions/a/input.wav", 1)
    assert list(world.backend.iter_entries("sessions/nope")) == []
    assert list(world.backend.iter_entries("sessions/a/input.wav")) == []


def test_stat(world):
    world.put("sessions/a/input.wav", 7)
    assert world.backend.stat("sessions/a/input.wav").size == 7
    assert world.backend.stat("sessions/a").is_dir
    assert world.backend.stat("sessions/zzz") is None


def test_remove_a_folder_recursively(world):
    world.put("sessions/a/input.wav", 1)
    world.put("sessions/a/output/bass.flac", 1)
    world.put("sessions/b/input.wav", 1)
    world.backend.remove("sessions/a", recursive=True)
    assert not world.exists("sessions/a")
    assert not world.exists("sessions/a/output/bass.flac")
    assert world.exists("sessions/b/input.wav")


def test_remove_a_folder_without_recursive_is_refused(world):
    world.put("sessions/a/input.wav", 1)
    with pytest.raises(InvalidInput):
        world.backend.remove("sessions/a")
    assert world.exists("sessions/a/input.wav")


def test_remove_missing_is_not_found(world):
    with pytest.raises(NotFound):
        world.backend.remove("sessions/never", recursive=True)


@pytest.mark.parametrize("bad", ["../x", "sessions/../../etc", "/", "", "a/./b", "a\x00b"])
def test_paths_leaving_the_root_are_refused_before_any_call(world, bad):
    world.put("sessions/a/input.wav", 1)
    with pytest.raises(InvalidInput):
        world.backend.remove(bad, recursive=True)
    assert world.exists("sessions/a/input.wav")


def test_a_symlink_is_reported_and_removed_never_followed(world, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    world.put("sessions/a/input.wav", 1)
    world.symlink("sessions/a/escape", str(outside))
    entries = {e.path: e for e in world.backend.iter_entries("sessions")}
    assert entries["sessions/a/escape"].is_symlink
    assert not any(path.startswith("sessions/a/escape/") for path in entries)
    world.backend.remove("sessions/a", recursive=True)
    assert not world.exists("sessions/a")
    assert (outside / "precious.txt").read_text() == "keep me"


def test_commit_from_outside_a_container_makes_no_call(world):
    world.put("sessions/a/input.wav", 1)
    world.backend.remove("sessions/a", recursive=True)
    assert world.backend.commit_is_meaningful is False
    assert world.backend.commit() is False
    if isinstance(world, ModalWorld):
        assert world.server.commits() == 0
        # From outside, remove_file persisted by itself.
        assert world.server.removals(VOLUME) == ["sessions/a"]


# -- Modal only: failures become one line -------------------------------------------------


def test_unknown_modal_volume_is_not_found(modal_server):
    backend = backend_for_url("modal://no-such-volume?environment=main")
    with pytest.raises(NotFound, match="no-such-volume"):
        backend.check()


def test_modal_down_is_unreachable(modal_server):
    modal_server.create_volume(VOLUME)
    backend = backend_for_url(f"modal://{VOLUME}")
    backend.check()
    modal_server.stop()
    with pytest.raises(Unreachable) as caught:
        list(backend.iter_entries("sessions"))
    assert "\n" not in str(caught.value)


def test_missing_modal_credentials_are_unreachable(modal_server, monkeypatch):
    from tests.fakes.modal_fixtures import modal_client_reset

    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    modal_client_reset()
    with pytest.raises(Unreachable, match="MODAL_TOKEN_ID"):
        backend_for_url(f"modal://{VOLUME}").check()


def test_v1_volumes_use_the_v1_calls(modal_server):
    modal_server.create_volume("old", version=1)
    modal_server.put_file("old", "sessions/a/input.wav", size=3)
    backend = backend_for_url("modal://old")
    assert [e.path for e in backend.iter_entries("sessions")] == ["sessions/a", "sessions/a/input.wav"]
    backend.remove("sessions/a", recursive=True)
    assert modal_server.calls("VolumeListFiles") and modal_server.calls("VolumeRemoveFile")
    assert not modal_server.calls("VolumeListFiles2")


def test_inside_a_container_deletions_go_through_the_mount_and_commit_once(modal_server, monkeypatch, tmp_path):
    mount = tmp_path / "data"
    (mount / "sessions" / "a").mkdir(parents=True)
    (mount / "sessions" / "a" / "input.wav").write_bytes(b"x" * 10)
    (mount / "sessions" / "b").mkdir(parents=True)
    modal_server.create_volume(VOLUME)
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")
    # Containers authenticate by their task identity; tokens there are ignored (and warned about).
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    from tests.fakes.modal_fixtures import modal_client_reset

    modal_client_reset()
    backend = backend_for_url(f"modal://{VOLUME}?mount={mount}")
    assert backend.commit_is_meaningful
    backend.remove("sessions/a", recursive=True)
    backend.remove("sessions/b", recursive=True)
    assert not (mount / "sessions" / "a").exists()
    assert backend.commit() is True
    assert modal_server.commits(VOLUME) == 1
    assert modal_server.removals() == []  # deletions went through the mount, not the API


def test_read_file_through_the_sdk(modal_server):
    """The servicer also serves read_file (block downloads), for the inspection pages."""
    import modal

    modal_server.put_file(VOLUME, "manifest.json", content=b'{"ok": true}')
    modal_server.put_file(VOLUME, "big.bin", size=9 * 1024 * 1024)
    volume = modal.Volume.from_name(VOLUME)
    assert b"".join(volume.read_file("manifest.json")) == b'{"ok": true}'
    assert len(b"".join(volume.read_file("big.bin"))) == 9 * 1024 * 1024
    with pytest.raises(FileNotFoundError):
        b"".join(volume.read_file("missing.json"))


def test_modal_down_before_the_first_call_fails_fast(modal_server):
    """The SDK would retry a first connection for a minute; the backend answers at once."""
    import time

    modal_server.create_volume(VOLUME)
    modal_server.stop()
    started = time.monotonic()
    with pytest.raises(Unreachable, match="cannot connect"):
        backend_for_url(f"modal://{VOLUME}").check()
    assert time.monotonic() - started < 5


def test_the_servicer_lists_volumes_per_environment_with_pagination(modal_server):
    import modal

    for i in range(105):
        modal_server.create_volume(f"vol-{i:03d}")
    modal_server.create_volume("elsewhere", environment="dev")
    names = [v.name for v in modal.Volume.objects.list(environment_name="main")]
    assert len(names) == 105 and len(set(names)) == 105 and names[0] == "vol-104"
    assert [v.name for v in modal.Volume.objects.list(environment_name="dev")] == ["elsewhere"]
    assert len(modal_server.calls("VolumeList")) == 3  # two pages for main, one for dev


def test_the_servicer_answers_unimplemented_for_calls_it_does_not_fake(modal_server):
    import modal

    modal_server.create_volume(VOLUME)
    with pytest.raises(modal.exception.UnimplementedError):
        modal.Volume.from_name(VOLUME).copy_files(["a"], "b")

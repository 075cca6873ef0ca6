"""Hostile trees under an inspected volume (issue #15, items 1-3): special files never block
and are reported, unreadable folders are a finding and not a crash, and a root that moves
during the walk fails the inspection and stores nothing. Each run is bounded by a deadline."""

import os
import shutil

import pytest

from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.volumes.backends import Unreadable
from apps.volumes.models import CrossCheck, Inspection, Severity
from controlpanel.errors import PanelError
from tests.faults import tree_sizes
from tests.volumes.helpers import (
    after_entries,
    crosscheck_now,
    deadline,
    inspect_now,
    locked_folder,
    make_special_files,
    permissions_bind_root,
)

pytestmark = pytest.mark.django_db

DEADLINE = 30  # seconds: a few files take well under one; a blocked open() would take forever


def _finding(inspection: Inspection, text: str):
    matches = [f for f in inspection.findings.all() if text in f.message]
    assert len(matches) == 1, [f.message for f in inspection.findings.all()]
    return matches[0]


# -- item 1: special files --------------------------------------------------------------------


def test_fifos_sockets_and_devices_never_block_an_inspection_and_are_a_finding(local_world):
    local_world.put("cache/tusz/manifest.json", 10)
    names = make_special_files(local_world.root / "cache" / "tusz")
    volume = local_world.volume()

    with deadline(DEADLINE):
        inspection = inspect_now(volume)

    assert Operation.objects.get(kind="volume.inspect").status == Operation.Status.SUCCEEDED
    # Only the real file is counted; the special ones are counted apart and named.
    assert (inspection.total_files, inspection.total_bytes) == (1, 10)
    assert inspection.special_files == len(names)
    finding = _finding(inspection, "special file")
    assert finding.severity == Severity.WARNING
    assert "cache/tusz/stuck.json (FIFO)" in finding.message and "cache/tusz/agent.sock (socket)" in finding.message
    assert inspection.unreadable_folders == 0 and not inspection.totals_are_lower_bound


def test_a_fifo_on_a_modal_volume_is_reported_not_counted(modal_server):
    from modal_proto import api_pb2

    from tests.fakes.modal_servicer import FakeNode
    from tests.volumes.helpers import ModalWorld

    world = ModalWorld(modal_server)
    world.put("jobs/a.json", 7)
    world.put("jobs/pipe.json", 0)
    # The servicer has no helper for special files: retype the node the listing will send.
    modal_server.volume(world.modal_name).nodes["jobs/pipe.json"] = FakeNode(
        type=api_pb2.FileEntry.FileType.FIFO, mtime=0
    )

    with deadline(DEADLINE):
        inspection = inspect_now(world.volume())

    assert (inspection.total_files, inspection.total_bytes, inspection.special_files) == (1, 7, 1)
    assert "jobs/pipe.json (FIFO)" in _finding(inspection, "special file").message


# -- item 2: unreadable folders ----------------------------------------------------------------


def test_an_unreadable_folder_is_a_finding_and_the_totals_a_lower_bound(local_world):
    """`chmod 000` folders, read with root's override capabilities dropped (see
    `permissions_bind_root`): the kernel refuses the listing, as it would for any user."""
    local_world.put("train/a.npz", 100)
    local_world.put("secret/inside.bin", 5000)
    local_world.put("deep/er/hidden.bin", 7000)
    volume = local_world.volume(folder_depth=2)

    secret, deeper = local_world.root / "secret", local_world.root / "deep" / "er"
    with locked_folder(secret), locked_folder(deeper), permissions_bind_root(), deadline(DEADLINE):
        inspection = inspect_now(volume)

    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.SUCCEEDED
    assert (inspection.total_files, inspection.total_bytes) == (1, 100)  # what could be read
    assert inspection.unreadable_folders == 2 and inspection.totals_are_lower_bound
    finding = _finding(inspection, "could not be read")
    assert finding.severity == Severity.ERROR
    assert "2 folders could not be read" in finding.message and "lower bound" in finding.message
    assert "secret (Permission denied)" in finding.message and "deep/er (Permission denied)" in finding.message
    assert operation.result["summary"].startswith("At least ")
    assert StorageSample.objects.filter(domain="volumes", subject=volume.name).exists()


def test_the_cli_says_at_least_when_folders_could_not_be_read(local_world, capsys):
    from django.core.management import call_command

    local_world.put("train/a.npz", 100)
    local_world.volume()
    with locked_folder(local_world.root / "secret"), permissions_bind_root(), deadline(DEADLINE):
        call_command("volumes", "inspect", local_world.name)
    out = capsys.readouterr().out
    assert f"{local_world.name}: at least 100 bytes in 1 files" in out
    assert "1 folder could not be read" in out


def test_a_crosscheck_refuses_a_folder_it_cannot_read(local_world, s3_server, s3_bucket):
    local_world.put("cache/a.npz", 3)
    volume = local_world.volume()
    refused = pytest.raises(Unreadable, match="cache/locked on volume .* could not be read")
    with locked_folder(local_world.root / "cache" / "locked"), permissions_bind_root(), deadline(DEADLINE), refused:
        crosscheck_now(volume, folder="cache", s3_url=f"s3://{s3_bucket}/cache")
    assert not CrossCheck.objects.exists()
    assert Operation.objects.get(kind="volume.crosscheck").status == Operation.Status.FAILED


# -- item 3: a root that moves during the walk -----------------------------------------------


def _tree(world) -> None:
    for folder in range(6):
        for name in range(5):
            world.put(f"f{folder}/sub/{name}.bin", 10)


def _moved_away(root):
    root.rename(root.with_name(root.name + "-moved"))


def _replaced_by_an_empty_folder(root):
    root.rename(root.with_name(root.name + "-old"))
    root.mkdir()


def _replaced_by_a_copy(root):
    # Every path still resolves: only the folder's identity (device, inode) tells.
    old = root.with_name(root.name + "-old")
    root.rename(old)
    shutil.copytree(old, root)


@pytest.mark.parametrize(
    ("action", "said"),
    [
        (_moved_away, "disappeared during the walk"),
        (_replaced_by_an_empty_folder, "was replaced during the walk"),
        (_replaced_by_a_copy, "was replaced during the walk"),
    ],
)
def test_a_root_that_moves_during_the_walk_fails_and_stores_nothing(local_world, monkeypatch, action, said):
    _tree(local_world)
    volume = local_world.volume()
    after_entries(monkeypatch, 3, action)

    with deadline(DEADLINE), pytest.raises(PanelError, match=said):
        inspect_now(volume)

    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.FAILED
    assert said in operation.error and "stored nothing" in operation.error and "\n" not in operation.error
    assert not Inspection.objects.exists()
    assert not StorageSample.objects.filter(domain="volumes").exists()
    assert not AuditEvent.objects.filter(action="volume.inspect", outcome=AuditEvent.Outcome.SUCCEEDED).exists()


def test_a_subfolder_removed_during_the_walk_is_not_a_moved_root(local_world, monkeypatch):
    _tree(local_world)
    volume = local_world.volume()
    after_entries(monkeypatch, 1, lambda root: [shutil.rmtree(root / f"f{i}") for i in range(6) if i != 0])
    with deadline(DEADLINE):
        inspection = inspect_now(volume)
    assert Operation.objects.get(kind="volume.inspect").status == Operation.Status.SUCCEEDED
    assert inspection.total_files <= 5


# -- issue #21 item 7: a root renamed away and back while one entry is read --------------------


def _root_away_while_one_entry_is_read(monkeypatch, root, *, replaced: bool) -> None:
    """The race of a 200k-file walk, made certain: between listing the root's first entry and
    reading it, the root is renamed away (and, if `replaced`, an empty folder takes its name);
    the entry's lstat fails as it would, and the root is back the moment the walk reads on.
    Only `os.scandir` is wrapped, to time the renames; every stat and rename is real."""
    real_scandir = os.scandir
    away = root.with_name(root.name + "-away")
    state = {"fired": False, "moved": False}

    def back() -> None:
        if state["moved"]:
            if replaced:
                root.rmdir()
            away.rename(root)
            state["moved"] = False

    class Item:
        def __init__(self, entry, fire: bool):
            self._entry, self._fire = entry, fire
            self.name, self.path = entry.name, entry.path

        def stat(self, *, follow_symlinks=True):
            if self._fire:
                root.rename(away)
                if replaced:
                    root.mkdir()
                state["moved"] = True
            return self._entry.stat(follow_symlinks=follow_symlinks)

    class Listing:
        def __init__(self, folder):
            self._it = real_scandir(folder)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._it.close()
            back()

        def __iter__(self):
            for entry in self._it:
                back()  # within 2 ms: the root is back before the next entry is read
                fire = not state["fired"]
                state["fired"] = True
                yield Item(entry, fire)

    def scandir(folder="."):
        watched = os.fspath(folder) == str(root) and not state["fired"]
        return Listing(folder) if watched else real_scandir(folder)

    monkeypatch.setattr(os, "scandir", scandir)


def _record_vanishing_root(fault_point, harm, root, before: dict[str, int], point: str) -> None:
    """An inspection stored from a walk of a root that moved is a wrong answer (not survived);
    bytes lost are the volume's files that are not back where they were, with their size."""
    after = tree_sizes(root)
    lost = sum(size for path, size in before.items() if after.get(path) != size)
    fault_point("vanishing root", point, survived=not Inspection.objects.exists(), lost_bytes=lost)
    harm("vanishing root", point, lost_bytes=lost)


@pytest.mark.parametrize(
    ("replaced", "said"), [(False, "disappeared during the walk"), (True, "was replaced during the walk")]
)
def test_a_root_renamed_away_and_back_while_an_entry_vanishes_fails_and_stores_nothing(
    local_world, monkeypatch, replaced, said, fault_point, harm
):
    _tree(local_world)
    volume = local_world.volume()
    before = tree_sizes(local_world.root)
    _root_away_while_one_entry_is_read(monkeypatch, local_world.root, replaced=replaced)

    with deadline(DEADLINE), pytest.raises(PanelError, match=said):
        inspect_now(volume)
    point = f"a root {'replaced' if replaced else 'renamed away'} and back while an entry vanishes"
    _record_vanishing_root(fault_point, harm, local_world.root, before, point)

    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.FAILED and "stored nothing" in operation.error
    assert not Inspection.objects.exists()
    assert not StorageSample.objects.filter(domain="volumes").exists()
    # The root is back where it was, with every file: nothing of the volume was touched.
    assert len([p for p in local_world.root.rglob("*") if p.is_file()]) == 30


def test_a_root_gone_as_the_walk_starts_is_no_empty_volume(local_world, monkeypatch, fault_point, harm):
    from apps.volumes.backends import LocalBackend

    _tree(local_world)
    volume = local_world.volume()
    root = local_world.root
    before = {
        path.replace(str(root), str(root.with_name(root.name + "-moved")), 1): size
        for path, size in tree_sizes(root).items()
    }
    start = LocalBackend._local

    def moved_first(self, path):
        _moved_away(self.root)  # after the walk noted the root's identity, before it lists it
        return start(self, path)

    monkeypatch.setattr(LocalBackend, "_local", moved_first)
    with deadline(DEADLINE), pytest.raises(PanelError, match="disappeared during the walk"):
        inspect_now(volume)
    # Where the files are now: in the folder the root was moved to, every byte.
    _record_vanishing_root(
        fault_point, harm, root.with_name(root.name + "-moved"), before, "a root gone as the walk starts"
    )
    assert not Inspection.objects.exists()
    assert not StorageSample.objects.filter(domain="volumes").exists()

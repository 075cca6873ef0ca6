"""One streaming walk per inspection: totals, folders, extensions, largest files, growth,
progress, history samples, and clear failures when the volume cannot be read."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent, Operation, StorageSample
from apps.volumes.models import Inspection, LayoutRule
from apps.volumes.services import (
    glob_regex,
    inspection_as_dict,
    volume_inspect,
    volume_monthly_cost,
)
from controlpanel.errors import NotFound, Unreachable
from tests.volumes.helpers import inspect_now

pytestmark = pytest.mark.django_db


def test_inspection_sums_folders_extensions_and_largest_files(world):
    world.put("train/run-1/metrics.json", 100)
    world.put("train/run-1/deep/er/events.out", 40)
    world.put("checkpoints/run-1/model.pt", 5000)
    world.put("checkpoints/run-1/optimizer.PT", 3000)
    world.put("README", 7)
    world.mkdir("wandb")
    volume = world.volume(folder_depth=2)

    inspection = volume_inspect(volume=volume, actor="test")

    assert (inspection.total_bytes, inspection.total_files) == (8147, 5)
    assert inspection.folders == {
        "train": [140, 2],
        "train/run-1": [140, 2],
        "checkpoints": [8000, 2],
        "checkpoints/run-1": [8000, 2],
        "wandb": [0, 0],
    }
    assert inspection.extensions == {".json": [1, 100], ".out": [1, 40], ".pt": [2, 8000], "(none)": [1, 7]}
    assert inspection.largest[:3] == [
        ["checkpoints/run-1/model.pt", 5000],
        ["checkpoints/run-1/optimizer.PT", 3000],
        ["train/run-1/metrics.json", 100],
    ]
    assert inspection.bytes_delta is None  # nothing to compare with yet
    sample = StorageSample.objects.get(domain="volumes", subject=volume.name)
    assert (sample.total_bytes, sample.total_files) == (8147, 5)
    assert AuditEvent.objects.filter(action="volume.inspect", target_id=volume.name).count() == 1


def test_second_inspection_reports_what_grew_and_shrank(local_world):
    local_world.put("train/a.npz", 1000)
    local_world.put("smoke/b.log", 500)
    volume = local_world.volume(folder_depth=1)
    volume_inspect(volume=volume, actor="test")

    local_world.put("train/c.npz", 4000)
    (local_world.root / "smoke" / "b.log").unlink()
    local_world.put("wandb/run.log", 10)
    second = volume_inspect(volume=volume, actor="test")

    assert (second.bytes_delta, second.files_delta) == (4000 - 500 + 10, 1)
    by_folder = {row["folder"]: row for row in second.growth}
    assert by_folder["train"]["delta"] == 4000 and by_folder["train"]["files_delta"] == 1
    assert by_folder["smoke"] == {"folder": "smoke", "before": 500, "after": 0, "delta": -500, "files_delta": -1}
    assert by_folder["wandb"]["before"] == 0
    assert second.growth[0]["folder"] == "train"  # biggest change first


def test_queries_do_not_grow_with_the_number_of_files(local_world):
    volume = local_world.volume()
    LayoutRule.objects.create(volume=volume, kind="file_count", path="many/*.npz", count=1, severity="error")

    def queries_for(files: int) -> int:
        for i in range(files):
            local_world.put(f"many/{i:05d}.npz", 1)
        with CaptureQueriesContext(connection) as captured:
            volume_inspect(volume=volume, actor="test")
        return len(captured)

    few = queries_for(3)
    many = queries_for(3000)
    # rules, previous inspection, insert inspection, findings in one bulk insert, sample,
    # audit (plus savepoints): the same handful for 3 files and for 3,000.
    assert many == few
    assert many <= 12
    latest = Inspection.objects.first()
    assert latest.total_files == 3000
    assert latest.findings.get().message.startswith("many/*.npz: 3000 files, expected exactly 1")


def test_progress_counts_the_entries_seen(local_world):
    for i in range(2500):
        local_world.put(f"f{i % 5}/{i}.bin", 1)
    volume = local_world.volume()

    inspection = inspect_now(volume)

    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.SUCCEEDED
    assert (operation.progress_done, operation.progress_unit) == (2505, "entries")  # 2,500 files and 5 folders
    assert operation.result["inspection_id"] == inspection.pk
    assert inspection.operation_id == operation.pk
    assert operation.result["summary"] == "2.4 KiB in 2,500 files; 0 findings."


def test_largest_files_are_a_bounded_heap(local_world, monkeypatch):
    for size in [5, 90, 1, 70, 30, 60]:
        local_world.put(f"d/{size}.bin", size)
    monkeypatch.setattr("apps.volumes.services.inspection.LARGEST_FILES", 3)
    from apps.volumes import services

    totals = services.volume_walk(backend=services.volume_backend(volume=local_world.volume()), depth=1, largest=3)
    assert sorted(totals.largest, reverse=True) == [(90, "d/90.bin"), (70, "d/70.bin"), (60, "d/60.bin")]


def test_glob_stars_stay_inside_a_folder_and_double_stars_cross():
    assert glob_regex("cache/tusz/train/*.npz").fullmatch("cache/tusz/train/00001.npz")
    assert not glob_regex("cache/tusz/train/*.npz").fullmatch("cache/tusz/train/old/00001.npz")
    assert glob_regex("cache/**/*.npz").fullmatch("cache/tusz/train/old/00001.npz")
    assert glob_regex("cache/**/*.npz").fullmatch("cache/00001.npz")
    assert not glob_regex("cache/tusz/train/?.npz").fullmatch("cache/tusz/train/12.npz")


def test_cost_uses_the_price_of_the_backend(settings):
    settings.PRICE_MODAL_VOLUME_GB_MONTH = 0.15
    settings.PRICE_LOCAL_GB_MONTH = 0.0
    assert volume_monthly_cost(url="modal://brain-go-brr-results", total_bytes=450 * 1000**3) == 67.5
    assert volume_monthly_cost(url="local:///srv/x", total_bytes=450 * 1000**3) == 0.0


def test_inspection_json_has_totals_and_findings(local_world):
    local_world.put("results/run/metrics.json", 12)
    volume = local_world.volume()
    LayoutRule.objects.create(volume=volume, kind="folder_absent", path="results", severity="error")

    report = inspection_as_dict(volume_inspect(volume=volume, actor="test"))

    assert report["total_bytes"] == 12 and report["total_files"] == 1
    assert report["findings"] == [
        {
            "severity": "error",
            "message": "results/ should not exist: 1 file in it",
            "bytes": 12,
            "rule_id": report["findings"][0]["rule_id"],
        }
    ]


def test_a_missing_local_folder_fails_the_operation_with_one_line(tmp_path):
    from apps.volumes.models import Volume

    volume = Volume.objects.create(name="gone", url=f"local://{tmp_path / 'nowhere'}")
    with pytest.raises(NotFound, match="does not exist"):
        inspect_now(volume)
    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.FAILED
    assert "nowhere" in operation.error and "\n" not in operation.error
    assert not Inspection.objects.exists()
    assert not StorageSample.objects.filter(domain="volumes").exists()


def test_modal_down_fails_the_operation_as_unreachable(modal_server):
    from tests.volumes.helpers import ModalWorld

    world = ModalWorld(modal_server)
    world.put("train/a.json", 3)
    volume = world.volume()
    modal_server.stop()
    with pytest.raises(Unreachable):
        inspect_now(volume)
    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.FAILED and "unreachable" in operation.error
    assert not Inspection.objects.exists()


def test_an_unknown_modal_volume_is_not_found(modal_server):
    from apps.volumes.models import Volume

    volume = Volume.objects.create(name="nope", url="modal://no-such-volume?environment=main")
    with pytest.raises(NotFound):
        inspect_now(volume)

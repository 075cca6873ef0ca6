"""Layout rules as data, and the two plans' presets against trees laid out each way, on a
local folder and on a Modal Volume through the SDK and the local servicer."""

import pytest

from apps.audit.models import AuditEvent
from apps.volumes.models import LayoutRule
from apps.volumes.services import PRESETS, layout_preset_import, volume_inspect
from controlpanel.errors import InvalidInput
from tests.volumes.helpers import DEV, TRAIN, lay_out_s3_mount_plan, lay_out_volume_cache_plan

pytestmark = pytest.mark.django_db

CACHE_BYTES = TRAIN * 3 + DEV * 2 + 10 + 20


def messages(inspection) -> list[tuple[str, str, int | None]]:
    return sorted((f.severity, f.message, f.bytes) for f in inspection.findings.all())


def test_volume_cache_plan_holds_on_a_volume_laid_out_that_way(world):
    lay_out_volume_cache_plan(world)
    volume = world.volume()
    layout_preset_import(volume=volume, preset="volume-cache", actor="test")

    inspection = volume_inspect(volume=volume, actor="test")

    assert messages(inspection) == []
    assert inspection.rules_passed == inspection.rules_checked == len(PRESETS["volume-cache"]["rules"])
    assert inspection.folders["cache/tusz/train"] == [TRAIN * 3, TRAIN]


def test_volume_cache_plan_on_an_s3_mount_volume_lists_everything_missing(world):
    lay_out_s3_mount_plan(world)
    volume = world.volume()
    layout_preset_import(volume=volume, preset="volume-cache", actor="test")

    inspection = volume_inspect(volume=volume, actor="test")

    assert [m for _, m, _ in messages(inspection)] == sorted(
        [
            "cache/tusz/train/ is missing",
            "cache/tusz/dev/ is missing",
            "cache/tusz/train/*.npz: 0 files, expected exactly 4667 (the train split is incomplete or has extra files)",
            "cache/tusz/dev/*.npz: 0 files, expected exactly 1832 (the dev split is incomplete or has extra files)",
            "cache/tusz/manifest.json is missing",
            "cache/tusz/_dataset_index.json is missing",
        ]
    )
    assert {severity for severity, _, _ in messages(inspection)} == {"error"}
    assert inspection.rules_passed == 1  # only "no results/" holds


def test_s3_mount_plan_holds_on_a_volume_laid_out_that_way(world):
    lay_out_s3_mount_plan(world)
    volume = world.volume()
    layout_preset_import(volume=volume, preset="s3-mount", actor="test")

    inspection = volume_inspect(volume=volume, actor="test")

    assert messages(inspection) == []
    assert inspection.rules_passed == 2


def test_s3_mount_plan_on_a_volume_cache_volume_flags_the_copy_with_its_bytes(world):
    lay_out_volume_cache_plan(world)
    volume = world.volume()
    layout_preset_import(volume=volume, preset="s3-mount", actor="test")

    inspection = volume_inspect(volume=volume, actor="test")

    files = TRAIN + DEV + 2
    assert messages(inspection) == [
        (
            "error",
            f"cache/tusz/ should not exist: {files} files in it "
            "(the S3-mount plan reads the cache from S3; a copy here is paid twice)",
            CACHE_BYTES,
        )
    ]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_both_plans_forbid_a_stray_results_folder(local_world, preset):
    lay_out_volume_cache_plan(local_world) if preset == "volume-cache" else lay_out_s3_mount_plan(local_world)
    local_world.put("results/results/train/metrics.json", 250)
    volume = local_world.volume()
    layout_preset_import(volume=volume, preset=preset, actor="test")

    inspection = volume_inspect(volume=volume, actor="test")

    assert messages(inspection) == [
        ("error", "results/ should not exist: 1 file in it (a stray results/results/ duplicate)", 250)
    ]


def test_an_incomplete_split_is_counted_exactly(local_world):
    lay_out_volume_cache_plan(local_world, train=TRAIN - 67)
    local_world.put("cache/tusz/dev/extra.npz", 2)
    local_world.put("cache/tusz/dev/notes.txt", 2)  # not an .npz: not counted
    volume = local_world.volume()
    layout_preset_import(volume=volume, preset="volume-cache", actor="test")

    found = [m for _, m, _ in messages(volume_inspect(volume=volume, actor="test"))]

    assert found == [
        "cache/tusz/dev/*.npz: 1833 files, expected exactly 1832 (the dev split is incomplete or has extra files)",
        "cache/tusz/train/*.npz: 4600 files, expected exactly 4667 (the train split is incomplete or has extra files)",
    ]


def test_at_least_and_file_exists_rules_and_their_severity(local_world):
    local_world.put("checkpoints/a.pt", 1)
    local_world.put("checkpoints/b.pt", 1)
    volume = local_world.volume()
    LayoutRule.objects.create(volume=volume, kind="file_count", path="checkpoints/*.pt", count_mode="at_least", count=2)
    LayoutRule.objects.create(
        volume=volume, kind="file_count", path="**/*.pt", count_mode="at_least", count=3, severity="warning"
    )
    LayoutRule.objects.create(volume=volume, kind="file_exists", path="checkpoints/latest", severity="info")
    LayoutRule.objects.create(volume=volume, kind="folder_exists", path="checkpoints", enabled=False)
    LayoutRule.objects.create(volume=volume, kind="folder_exists", path="tensorboard", enabled=False)

    inspection = volume_inspect(volume=volume, actor="test")

    assert messages(inspection) == [
        ("info", "checkpoints/latest is missing", None),
        ("warning", "**/*.pt: 2 files, expected at least 3", None),
    ]
    assert (inspection.rules_checked, inspection.rules_passed) == (3, 1)  # disabled rules are not checked


def test_importing_a_preset_replaces_earlier_preset_rules_and_keeps_hand_written_ones(local_world):
    volume = local_world.volume()
    mine = LayoutRule.objects.create(volume=volume, kind="folder_exists", path="checkpoints")
    layout_preset_import(volume=volume, preset="volume-cache", actor="test")
    layout_preset_import(volume=volume, preset="s3-mount", actor="test")

    rules = LayoutRule.objects.filter(volume=volume)
    assert sorted(rules.values_list("preset", flat=True)) == ["", "s3-mount", "s3-mount"]
    assert rules.filter(pk=mine.pk).exists()
    assert AuditEvent.objects.filter(action="volume.preset").count() == 2


def test_an_unknown_preset_is_refused_and_changes_nothing(local_world):
    volume = local_world.volume()
    with pytest.raises(InvalidInput, match="unknown preset"):
        layout_preset_import(volume=volume, preset="../etc", actor="test")
    assert not LayoutRule.objects.exists()

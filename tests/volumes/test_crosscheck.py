"""A volume folder against an S3 prefix on moto's server over HTTP: only-on-one-side,
size mismatches, totals, pagination past one page, and outages said in one line."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from apps.audit.models import Operation
from apps.volumes.models import CrossCheck
from controlpanel.errors import InvalidInput, NotFound, Unreachable
from tests.volumes.helpers import crosscheck_now

pytestmark = pytest.mark.django_db


def put_objects(s3_server, bucket: str, objects: dict[str, int]) -> None:
    client = s3_server.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=b"s" * item[1]), objects.items()))


def test_crosscheck_reports_each_side_and_size_mismatches(world, s3_server, s3_bucket, settings):
    settings.PRICE_S3_GB_MONTH = 0.023
    for name, size in {"a.npz": 10, "b.npz": 20, "c.npz": 30, "local-only.npz": 7}.items():
        world.put(f"cache/tusz/train/{name}", size)
    world.put("cache/tusz/dev/elsewhere.npz", 99)  # another folder: not compared
    put_objects(
        s3_server,
        s3_bucket,
        {
            "cache/tusz/train/a.npz": 10,
            "cache/tusz/train/b.npz": 20,
            "cache/tusz/train/c.npz": 31,
            "cache/tusz/train/s3-only.npz": 5,
            "cache/tusz/train/": 0,  # a folder marker is not a file
            "cache/tusz/training-notes.txt": 3,  # shares the prefix text, not the folder
        },
    )
    volume = world.volume()

    check = crosscheck_now(volume, folder="cache/tusz/train", s3_url=f"s3://{s3_bucket}/cache/tusz/train", actor="test")

    assert (check.volume_files, check.volume_bytes) == (4, 67)
    assert (check.s3_files, check.s3_bytes) == (4, 66)
    assert check.matched_files == 2
    assert (check.only_on_volume, check.only_on_volume_bytes) == (1, 7)
    assert (check.only_on_s3, check.only_on_s3_bytes) == (1, 5)
    assert check.size_mismatches == 1
    assert check.samples == {
        "only_on_volume": [["local-only.npz", 7]],
        "only_on_s3": [["s3-only.npz", 5]],
        "size_mismatches": [["c.npz", 30, 31]],
    }
    assert not check.in_sync
    assert CrossCheck.objects.get().operation.status == Operation.Status.SUCCEEDED
    assert check.operation.result["summary"] == (
        "Out of sync: 2 files match, 1 file only on the volume (7 B), 1 file only on S3 (5 B), 1 size mismatch."
    )


def test_a_fully_populated_cache_is_in_sync_across_pages(local_world, s3_server, s3_bucket):
    # More than one list_objects_v2 page (1,000 keys) so pagination is exercised.
    objects = {f"cache/tusz/dev/{i:05d}.npz": 1 + i % 3 for i in range(1005)}
    for key, size in objects.items():
        local_world.put(key, size)
    put_objects(s3_server, s3_bucket, objects)
    volume = local_world.volume()

    check = crosscheck_now(volume, folder="cache/tusz/dev/", s3_url=f"s3://{s3_bucket}/cache/tusz/dev/", actor="test")

    assert check.in_sync
    assert check.matched_files == check.s3_files == check.volume_files == 1005
    assert check.s3_bytes == sum(objects.values())
    assert check.operation.result["summary"] == "In sync: 1,005 files match (2.0 KiB)."


def test_s3_down_is_one_line_and_stores_nothing(local_world, s3_server, s3_bucket):
    local_world.put("cache/a.npz", 1)
    volume = local_world.volume()
    s3_server.stop()
    try:
        with pytest.raises(Unreachable, match=rf"S3 bucket '{s3_bucket}' unreachable"):
            crosscheck_now(volume, folder="cache", s3_url=f"s3://{s3_bucket}/cache", actor="test")
    finally:
        s3_server.start()
    assert not CrossCheck.objects.exists()
    assert Operation.objects.get(kind="volume.crosscheck").status == Operation.Status.FAILED


def test_an_unknown_bucket_is_not_found(local_world, s3_bucket):
    local_world.put("cache/a.npz", 1)
    with pytest.raises(NotFound, match="S3 bucket 'no-such-bucket': the bucket does not exist"):
        crosscheck_now(local_world.volume(), folder="cache", s3_url="s3://no-such-bucket/x", actor="test")


def test_a_missing_volume_folder_is_not_found(local_world, s3_bucket):
    local_world.put("cache/a.npz", 1)
    with pytest.raises(NotFound, match="nothing/ does not exist"):
        crosscheck_now(local_world.volume(), folder="nothing", s3_url=f"s3://{s3_bucket}/x", actor="test")


@pytest.mark.parametrize(
    ("folder", "s3_url"),
    [("../etc", "s3://bucket/x"), ("cache", "http://bucket/x"), ("cache", "s3://"), ("cache", "s3://b/../x")],
)
def test_bad_input_is_refused_before_an_operation_is_written(local_world, folder, s3_url):
    with pytest.raises(InvalidInput):
        crosscheck_now(local_world.volume(), folder=folder, s3_url=s3_url, actor="test")
    assert not Operation.objects.exists()

"""S3 part sizes grow with the stream: one volume can reach S3's 5 TiB object limit within
its 10,000 parts, every part within S3's 5 MiB–5 GiB, memory bounded by parts in flight."""

import hashlib
import os

import pytest

from apps.pods import snapshots
from apps.pods.snapshots import (
    PARTS_IN_FLIGHT,
    S3_MAX_OBJECT_SIZE,
    S3_MAX_PART_SIZE,
    S3_MAX_PARTS,
    part_size,
    store_from_url,
)

MIB = 1024 * 1024


def test_the_schedule_starts_at_the_first_part_size_and_doubles_every_step():
    assert part_size(1) == snapshots.PART_SIZE == 8 * MIB
    assert part_size(snapshots.PARTS_PER_STEP) == 8 * MIB
    assert part_size(snapshots.PARTS_PER_STEP + 1) == 16 * MIB
    assert part_size(2 * snapshots.PARTS_PER_STEP + 1) == 32 * MIB
    sizes = [part_size(n) for n in range(1, S3_MAX_PARTS + 1)]
    assert sizes == sorted(sizes)


def test_ten_thousand_parts_reach_s3s_object_limit_and_no_part_passes_five_gib():
    sizes = [part_size(n) for n in range(1, S3_MAX_PARTS + 1)]
    assert sum(sizes) >= S3_MAX_OBJECT_SIZE
    assert max(sizes) <= S3_MAX_PART_SIZE
    assert min(sizes) >= 5 * MIB  # S3's smallest part (but the last)


def test_memory_stays_bounded_by_parts_in_flight_times_part_size_for_ordinary_volumes():
    # The first 1,000 parts (7.8 GiB of one volume) hold at most 4 × 8 MiB in memory.
    assert PARTS_IN_FLIGHT * max(part_size(n) for n in range(1, snapshots.PARTS_PER_STEP + 1)) == 32 * MIB


def test_a_fixed_part_size_would_cap_a_volume_far_below_s3s_limit():
    # What the schedule replaces: 10,000 parts of 8 MiB hold 78 GiB.
    assert S3_MAX_PARTS * snapshots.PART_SIZE < S3_MAX_OBJECT_SIZE / 60


@pytest.mark.s3
def test_a_real_upload_grows_its_parts_and_reads_back_byte_identical(s3_server, s3_bucket, settings, monkeypatch):
    """5 MiB first parts doubling every 2 parts: 5, 5, 10, 10, then 3 MiB left → 5 parts
    (a fixed 5 MiB would take 7). The server's own ETag counts the parts."""
    monkeypatch.setattr(snapshots, "PART_SIZE", 5 * MIB)
    monkeypatch.setattr(snapshots, "PARTS_PER_STEP", 2)
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    store = store_from_url()
    body = os.urandom(33 * MIB)
    writer = store.writer("pod/1/workspace.tar")
    for start in range(0, len(body), 1024 * 1024 - 17):  # chunks that do not line up with parts
        writer.write(body[start : start + 1024 * 1024 - 17])
    writer.close()

    head = s3_server.client().head_object(Bucket=s3_bucket, Key="snaps/pod/1/workspace.tar")
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"') == writer.expected_etag
    assert writer.expected_etag.endswith("-5")
    assert writer.stored_bytes == len(body)
    store.verify(
        "pod/1/workspace.tar",
        expected_bytes=len(body),
        expected_sha256=hashlib.sha256(body).hexdigest(),
        expected_etag=writer.expected_etag,
    )
    assert b"".join(store.read("pod/1/workspace.tar")) == body


@pytest.mark.s3
@pytest.mark.parametrize("size", [3 * MIB, 12 * MIB], ids=["single-put", "multipart"])
def test_a_body_changed_on_the_way_never_passes_for_the_bytes_we_hashed(
    s3_server, s3_bucket, settings, monkeypatch, size
):
    """Every part (and a small object's single PUT) carries the Content-MD5 of the bytes we
    hashed. A real server (SeaweedFS) refuses a body changed after that (BadDigest) and the
    writer's caller hears a StoreError naming the key; moto's emulator ignores the header and
    stores it, and then the ETag check of `verify` refuses it."""
    from apps.pods.stores.base import StoreError
    from tests.parts import SeaweedFSServer

    monkeypatch.setattr(snapshots, "PART_SIZE", 5 * MIB)
    settings.SNAPSHOT_STORE_URL = f"s3://{s3_bucket}/snaps"
    store = store_from_url()
    client = store.client
    for operation in ["upload_part", "put_object"]:
        sent = getattr(client, operation)

        def changed(*args, _sent=sent, **kwargs):
            body = bytearray(kwargs["Body"])
            body[len(body) // 2] ^= 0xFF
            return _sent(*args, **{**kwargs, "Body": bytes(body)})

        monkeypatch.setattr(client, operation, changed)
    body = os.urandom(size)
    writer = store.writer("pod/1/home.tar")
    try:
        writer.write(body)
        writer.close()
    except StoreError as exc:
        writer.abort()
        assert "home.tar" in str(exc) and "BadDigest" in str(exc)
        refused = True
        assert store.size("pod/1/home.tar") is None
    else:
        refused = False
        with pytest.raises(StoreError, match=r"home\.tar checksum .* differs"):
            store.verify(
                "pod/1/home.tar",
                expected_bytes=size,
                expected_sha256=hashlib.sha256(body).hexdigest(),
                expected_etag=writer.expected_etag,
            )
    assert refused == isinstance(s3_server, SeaweedFSServer)

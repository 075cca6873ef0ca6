"""Block digests of a volume's stream (`unchanged.Blocks`): what a dedup stop compares an
unchanged volume by, block by block, instead of writing it again."""

import hashlib
import os

import pytest

from apps.pods.services import unchanged
from apps.pods.services.unchanged import Blocks


@pytest.fixture
def small_blocks(monkeypatch):
    # 4 KiB blocks doubling every 3 blocks: 4, 4, 4, 8, 8, 8, 16, … KiB.
    monkeypatch.setattr(unchanged, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(unchanged, "BLOCKS_PER_STEP", 3)


def digests(data: bytes, piece: int) -> list[str]:
    blocks = Blocks()
    for at in range(0, len(data), piece):
        blocks.feed(data[at : at + piece])
    return blocks.finish()


def test_blocks_follow_the_doubling_schedule_whatever_the_chunking(small_blocks):
    data = os.urandom(60_000)
    sizes = [4096] * 3 + [8192] * 3 + [16384] * 3
    edges, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        edges.append((at, min(at + size, len(data))))
        at += size
    expected = [hashlib.sha256(data[a:b]).hexdigest()[: unchanged.DIGEST_CHARS] for a, b in edges]

    assert digests(data, 1000) == expected
    assert digests(data, 4096) == expected
    assert digests(data, 100_000) == expected


def test_one_changed_byte_changes_exactly_its_block(small_blocks):
    data = bytearray(os.urandom(40_000))
    before = digests(bytes(data), 3000)
    data[13_000] ^= 1  # in the fourth block (12,288–20,479)

    after = digests(bytes(data), 3000)

    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [3]


def test_an_empty_stream_has_no_block_and_an_exact_multiple_no_empty_last_one(small_blocks):
    assert digests(b"", 10) == []
    assert len(digests(os.urandom(4096 * 3), 512)) == 3

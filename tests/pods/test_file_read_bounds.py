"""A file read out of a snapshot never gives a byte past the size its list records: a store
that gives more (a damaged copy, or a folder where the list says file) fails the read before
the extra byte reaches a download's or a restore's tar, whose header says that size."""

import hashlib

import pytest

from apps.pods.models import Snapshot
from apps.pods.services.snapshot_files import FileRow, _verified
from apps.pods.stores.base import StoreError

BODY = b"x" * 3000


def row(size: int, body: bytes = BODY) -> FileRow:
    return FileRow(
        path="/workspace/a.bin",
        volume="workspace",
        size=size,
        sha256=hashlib.sha256(body).hexdigest(),
        mtime=0,
        offset=None,
    )


def chunks(body: bytes, size: int = 1000):
    return [body[at : at + size] for at in range(0, len(body), size)]


def test_the_bytes_come_whole_when_they_match_the_list():
    assert b"".join(_verified(chunks(BODY), row(len(BODY)), Snapshot(pk=7))) == BODY


@pytest.mark.parametrize("extra", [b"y", b"\0" * 2500 + b"more tar entries"])
def test_a_read_longer_than_listed_fails_before_any_byte_past_the_size(extra):
    given = []
    with pytest.raises(StoreError, match=r"reads back longer than the 2\.9 KiB the snapshot lists"):
        for chunk in _verified(chunks(BODY + extra), row(len(BODY)), Snapshot(pk=7)):
            given.append(chunk)
    assert sum(map(len, given)) <= len(BODY)


def test_a_read_shorter_or_different_fails_before_its_last_chunk():
    given = []
    with pytest.raises(StoreError, match="reads back as"):
        for chunk in _verified(chunks(BODY[:-1] + b"z"), row(len(BODY)), Snapshot(pk=7)):
            given.append(chunk)
    assert sum(map(len, given)) < len(BODY)

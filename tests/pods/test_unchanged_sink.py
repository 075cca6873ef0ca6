"""Where a volume's bytes go while it may equal the pod's last snapshot (`unchanged.Sink`):
a local spool, then nothing written when it matched, or the store's writer, spooled bytes
first, when it did not; on a real file store and the real local disk."""

import errno
import hashlib
import os

import pytest

from apps.pods.services.unchanged import Sink
from apps.pods.snapshots import store_from_url

MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path, settings):
    settings.VAR_DIR = tmp_path / "var"
    settings.SNAPSHOT_SPOOL_BYTES = 8 * MIB
    return store_from_url(f"file://{tmp_path / 'store'}")


class Taken:
    """The store's writers as the sink asks for them, counted."""

    def __init__(self, store):
        self.store, self.keys = store, []

    def __call__(self, key):
        self.keys.append(key)
        return self.store.writer(key)


def stream(data: bytes, sink: Sink, piece: int = 300_000) -> dict:
    for at in range(0, len(data), piece):
        sink.write(data[at : at + piece])
    return sink.close(count=len(data), sha256=hashlib.sha256(data).hexdigest())


def earlier_of(data: bytes) -> dict:
    return {"key": "pod/1/home.tar", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "store_id": "ab"}


def test_the_same_bytes_are_not_written_and_point_at_the_earlier_object(store):
    data = os.urandom(3 * MIB)
    taken = Taken(store)

    entry = stream(
        data, Sink(take_writer=taken, key="pod/2/home.tar", earlier=earlier_of(data), present=lambda key: True)
    )

    assert taken.keys == []
    assert entry == {"key": "pod/1/home.tar", "etag": None, "stored_bytes": 0, "reused": True, "store_id": "ab"}
    assert store.size("pod/2/home.tar") is None
    assert [path for path in store.root.rglob("*") if path.is_file()] == []


@pytest.mark.parametrize(
    "change",
    ["one byte differs", "it grew", "it shrank", "it outgrows the spool"],
)
def test_other_bytes_go_to_the_store_whole_and_in_order(store, settings, change):
    old = os.urandom(3 * MIB)
    new = {
        "one byte differs": old[:MIB] + bytes([old[MIB] ^ 1]) + old[MIB + 1 :],
        "it grew": old + os.urandom(MIB),
        "it shrank": old[:-1000],
        "it outgrows the spool": old,
    }[change]
    if change == "it outgrows the spool":
        settings.SNAPSHOT_SPOOL_BYTES = MIB
    taken = Taken(store)

    entry = stream(
        new, Sink(take_writer=taken, key="pod/2/home.tar", earlier=earlier_of(old), present=lambda key: True)
    )

    assert taken.keys == ["pod/2/home.tar"]
    assert entry["key"] == "pod/2/home.tar" and "reused" not in entry
    assert store.get_small("pod/2/home.tar") == new


def test_the_same_bytes_are_written_when_the_earlier_object_is_gone_from_the_store(store):
    data = os.urandom(MIB)
    taken, asked = Taken(store), []

    def present(key):
        asked.append(key)
        return False

    entry = stream(data, Sink(take_writer=taken, key="pod/2/home.tar", earlier=earlier_of(data), present=present))

    assert asked == ["pod/1/home.tar"] and taken.keys == ["pod/2/home.tar"]
    assert entry["key"] == "pod/2/home.tar" and store.get_small("pod/2/home.tar") == data


def test_a_full_local_disk_sends_the_volume_to_the_store_instead(store, monkeypatch):
    data = os.urandom(3 * MIB)
    taken = Taken(store)
    sink = Sink(take_writer=taken, key="pod/2/home.tar", earlier=earlier_of(data), present=lambda key: True)
    real_write, written = sink.spool.write, [0]

    def fills_up(chunk):
        if written[0] + len(chunk) > MIB:
            real_write(chunk[:1000])  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(chunk)
        return real_write(chunk)

    monkeypatch.setattr(sink.spool, "write", fills_up)
    entry = stream(data, sink)

    assert taken.keys == ["pod/2/home.tar"] and entry["key"] == "pod/2/home.tar"
    assert store.get_small("pod/2/home.tar") == data


def test_no_spool_folder_writes_straight_to_the_store(store, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "not-a-folder"
    settings.VAR_DIR.write_text("a file where the var folder should be")
    data = os.urandom(MIB)
    taken = Taken(store)

    sink = Sink(take_writer=taken, key="pod/2/home.tar", earlier=earlier_of(data), present=lambda key: True)
    assert sink.spool is None and taken.keys == ["pod/2/home.tar"]
    entry = stream(data, sink)
    # Written, though the bytes were the same: nothing could be spooled to find that out.
    assert entry["key"] == "pod/2/home.tar" and store.get_small("pod/2/home.tar") == data


def test_an_aborted_volume_leaves_neither_spool_nor_object(store, settings):
    data = os.urandom(2 * MIB)
    taken = Taken(store)
    sink = Sink(take_writer=taken, key="pod/2/home.tar", earlier=earlier_of(data), present=lambda key: True)
    spool = sink.spool
    sink.write(data[:MIB])
    sink.write(os.urandom(2 * MIB))  # past the old size: the store has it now
    assert spool.closed and taken.keys == ["pod/2/home.tar"]

    sink.abort()

    assert store.size("pod/2/home.tar") is None
    assert [path for path in store.root.rglob("*") if path.is_file()] == []

    # Aborted while still spooling: the spool is closed (and, unlinked at birth, gone).
    sink = Sink(take_writer=taken, key="pod/3/home.tar", earlier=earlier_of(data), present=lambda key: True)
    spool = sink.spool
    sink.write(data[:MIB])
    sink.abort()
    assert spool.closed and taken.keys == ["pod/2/home.tar"]

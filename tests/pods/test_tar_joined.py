"""Several volumes' tars sent as one stream for one unpacking: each but the last is cut where
its end-of-archive marker begins, whatever the padding after it and however the chunks fall."""

import io
import os
import random
import subprocess
import tarfile

import pytest

from apps.pods.stores.base import StoreError
from apps.pods.stores.tarlist import joined


def _tar(fmt: int, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    # Python pads the archive to a 10,240-byte record: more zero blocks than the marker.
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _chunks(raw: bytes, rng: random.Random):
    at = 0
    while at < len(raw):
        step = rng.choice([1, 7, 511, 512, 513, 1024, 4096, 70_000])
        yield raw[at : at + step]
        at += step


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("seed", range(4))
def test_every_member_of_every_tar_unpacks_from_the_joined_stream(fmt, seed, tmp_path):
    rng = random.Random(seed)
    wanted = {}
    tars = []
    for volume in ["workspace", "home", "etc"]:
        members = {
            f"{volume}/" + "d" * 90 + "/" + "f" * 60 + ".txt": os.urandom(rng.randint(0, 5000)),
            f"{volume}/empty": b"",
            # Last, data ending in whole zero blocks: the walk must not take it for the marker.
            f"{volume}/zeros.bin": os.urandom(100) + bytes(2048),
        }
        wanted.update(members)
        tars.append(_tar(fmt, members))
    stream = b"".join(joined([_chunks(raw, rng) for raw in tars], names=["workspace", "home", "etc"]))

    # GNU tar, like Docker's Go reader, stops at the first end-of-archive marker.
    (tmp_path / "out").mkdir()
    subprocess.run(["tar", "-C", str(tmp_path / "out"), "-xf", "-"], input=stream, check=True)
    found = {
        str(path.relative_to(tmp_path / "out")): path.read_bytes()
        for path in (tmp_path / "out").rglob("*")
        if path.is_file()
    }
    assert found == wanted
    assert stream.endswith(bytes(1024))


def test_one_tar_is_sent_as_it_is():
    raw = _tar(tarfile.PAX_FORMAT, {"a": b"x"})
    assert b"".join(joined([iter([raw])], names=["a"])) == raw


def test_a_tar_without_an_end_marker_before_another_is_an_error_before_its_tail_is_sent():
    whole = _tar(tarfile.USTAR_FORMAT, {"a/one": os.urandom(3000)})
    cut = whole[: 512 + 3072]  # header and data, no marker
    sent = []
    with pytest.raises(StoreError, match="archive of /workspace ends without an end-of-archive marker"):
        for chunk in joined([iter([cut]), iter([whole])], names=["/workspace", "/home"]):
            sent.append(chunk)
    assert b"".join(sent) == cut  # its members went; nothing of the next tar did

"""The per-file list a snapshot and a drill read from a tar stream, fed in odd-sized chunks."""

import hashlib
import io
import os
import random
import tarfile

import pytest

from apps.pods.stores.tarlist import TarFileList, file_differences


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_every_regular_file_is_listed_with_size_and_sha256_whatever_the_chunks(fmt):
    members = [("a/b.txt", 5), ("x" * 50 + "/" + "y" * 80 + ".bin", 70_000), ("é/ü.txt", 0), ("big", 1 << 20)]
    buffer, want = io.BytesIO(), []
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, size in members:
            data = os.urandom(size)
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(data))
            want.append([name, size, hashlib.sha256(data).hexdigest()])
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "a" * (20 if fmt == tarfile.USTAR_FORMAT else 200)
        tar.addfile(link)
    raw, listing, at = buffer.getvalue(), TarFileList(), 0
    chunks = random.Random(fmt)
    while at < len(raw):
        step = chunks.randint(1, 3000)
        listing.feed(raw[at : at + step])
        at += step
    assert listing.files == want
    assert listing.ended


def test_differences_are_told_one_line_each():
    expected = [["a", 1, "0" * 64], ["b", 2, "1" * 64], ["c", 3, "2" * 64]]
    found = [["a", 1, "0" * 64], ["b", 2, "f" * 64], ["d", 4, "3" * 64]]
    lines = file_differences(expected, found)
    assert lines[0] == "c missing" and lines[1] == "d not in the snapshot" and lines[2].startswith("b: 2 bytes")

"""The per-file list a snapshot and a drill read from a tar stream, fed in odd-sized chunks."""

import hashlib
import io
import os
import random
import tarfile

import pytest

from apps.pods.stores.tarlist import TarFileList, file_differences, file_entry


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_every_regular_file_is_listed_with_size_sha256_mtime_and_offset_whatever_the_chunks(fmt):
    # A long name (PAX `x` or GNU `L` record before the header), files over one block, an empty one.
    members = [("a/b.txt", 5), ("x" * 50 + "/" + "y" * 80 + ".bin", 70_000), ("é/ü.txt", 0), ("big", 1 << 20)]
    buffer, want, contents = io.BytesIO(), [], {}
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for number, (name, size) in enumerate(members):
            data = os.urandom(size)
            info = tarfile.TarInfo(name)
            info.size = size
            info.mtime = 1_700_000_000 + number * 3600
            tar.addfile(info, io.BytesIO(data))
            want.append([name, size, hashlib.sha256(data).hexdigest(), info.mtime])
            contents[name] = data
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
    assert [entry[:4] for entry in listing.files] == want
    # Each offset is where the file's own bytes begin in the stream.
    for name, size, _, _, offset in listing.files:
        assert raw[offset : offset + size] == contents[name]
    assert listing.ended


def test_old_three_element_entries_read_as_new_ones_and_compare_alike():
    old, new = ["a", 1, "0" * 64], ["a", 1, "0" * 64, 1_700_000_000, 512]
    assert file_entry(old) == ("a", 1, "0" * 64, None, None)
    assert file_entry(new) == ("a", 1, "0" * 64, 1_700_000_000, 512)
    assert file_differences([old], [new]) == []


def test_differences_are_told_one_line_each():
    expected = [["a", 1, "0" * 64], ["b", 2, "1" * 64], ["c", 3, "2" * 64]]
    found = [["a", 1, "0" * 64], ["b", 2, "f" * 64], ["d", 4, "3" * 64]]
    lines = file_differences(expected, found)
    assert lines[0] == "c missing" and lines[1] == "d not in the snapshot" and lines[2].startswith("b: 2 bytes")

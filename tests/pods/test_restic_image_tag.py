"""The restic helper image's tag (the digest of the files it holds) is kept in VAR_DIR beside
those files' metadata: a command's process finds it there instead of reading and hashing
20 MB, and any change to a file (its change time moves) or to what is kept makes the tag be
worked out from the files again. No Docker needed: only the tag is asked for."""

import json
import os
import shutil

import pytest

from apps.pods import restic_helper
from tests.parts import require_part


@pytest.fixture
def image_files(tmp_path, monkeypatch):
    """The helper image made of a copy of this machine's restic (so a test may touch it), and no
    tag known to this process yet (VAR_DIR is the test's own: tests/conftest.py)."""
    restic = shutil.which("restic")
    if restic is None:
        require_part("restic", "no restic binary", "Install Debian's restic: apt-get install restic")
    copy = tmp_path / "restic"
    shutil.copy2(restic, copy)
    monkeypatch.setattr(restic_helper, "_image_files", lambda: [("usr/bin/restic", str(copy))])
    monkeypatch.setattr(restic_helper, "_image_tags", {})
    built = []
    tar = restic_helper._image_tar

    def counted():
        built.append(1)
        return tar()

    monkeypatch.setattr(restic_helper, "_image_tar", counted)
    return copy, built


def test_the_tag_is_worked_out_once_and_then_found_in_var_dir(image_files, monkeypatch):
    copy, built = image_files
    tag = restic_helper._image_tag()
    assert restic_helper.TAG_FORMAT.fullmatch(tag) and len(built) == 1
    monkeypatch.setattr(restic_helper, "_image_tags", {})  # another process
    assert restic_helper._image_tag() == tag and len(built) == 1  # read from VAR_DIR, no tar made


def test_a_changed_file_or_a_tampered_record_works_the_tag_out_again(image_files, monkeypatch, settings):
    copy, built = image_files
    tag = restic_helper._image_tag()
    with open(copy, "ab") as body:
        body.write(b"\0")  # an upgraded binary, say: another digest
    monkeypatch.setattr(restic_helper, "_image_tags", {})
    assert restic_helper._image_tag() != tag and len(built) == 2
    os.chmod(copy, 0o700)  # the same bytes, but its change time moved: worked out again
    monkeypatch.setattr(restic_helper, "_image_tags", {})
    again = restic_helper._image_tag()
    assert len(built) == 3
    kept = os.path.join(settings.VAR_DIR, "restic-image.json")
    with open(kept) as found:
        stamp = json.load(found)["stamp"]
    # The files' own stamp, but not a tag of ours; not JSON; JSON of another shape.
    for body in [json.dumps({"stamp": stamp, "tag": "ubuntu:latest"}), "not json", "[]"]:
        with open(kept, "w") as out:
            out.write(body)
        monkeypatch.setattr(restic_helper, "_image_tags", {})
        assert restic_helper._image_tag() == again
    assert len(built) == 6

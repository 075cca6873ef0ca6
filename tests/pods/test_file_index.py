"""A snapshot's file index is read out of its manifest's text one entry at a time and kept as
arrays: the same rows as the whole manifest decoded at once gives, any JSON layout, and one
sentence (never a hang) for text that is not a manifest's."""

import hashlib
import json

import pytest

from apps.pods.services.file_index import FileIndex, FileRow, ManifestShape, NoFileLists, manifest_rows

SHA = hashlib.sha256(b"x").hexdigest()
MANIFEST = {
    "volumes": {"workspace": {"key": "p/1/workspace.tar", "bytes": 9}},
    "files": {
        "workspace": [
            ["workspace/z.txt", 3, SHA, 1_700_000_000, 512],
            ["workspace/a b/\u00e9t\u00e9 \n.txt", 4, SHA, None, None],
            ["workspace/old.txt", 5, SHA],  # a list from before times and offsets
            ["workspace/../escape.txt", 1, SHA, 0, 0],  # left out, counted
            ["etc/other-volume.txt", 1, SHA, 0, 0],  # left out, counted
        ],
        "usr-local": [["local/bin/tool", 6, SHA, 1, 1024]],
        "not-a-volume": [["x", 1, SHA, 0, 0]],
        "home": "not a list",
    },
    "after": [1, {"files": "not this one"}],
}


def _rows(index: FileIndex) -> list[FileRow]:
    return [index.row(at) for at in range(len(index))]


@pytest.mark.parametrize("indent", [None, 0, 4], ids=["compact", "newlines", "indented"])
def test_the_index_holds_every_plain_file_sorted_whatever_the_json_layout(indent):
    index = FileIndex(manifest_rows(json.dumps(MANIFEST, indent=indent, ensure_ascii=indent is None)))
    assert [row.path for row in _rows(index)] == [
        "/usr/local/bin/tool",
        "/workspace/a b/\u00e9t\u00e9 \n.txt",
        "/workspace/old.txt",
        "/workspace/z.txt",
    ]
    assert index.unsafe == 2
    assert index.file("/workspace/z.txt") == FileRow("/workspace/z.txt", "workspace", 3, SHA, 1_700_000_000, 512)
    assert index.file("/workspace/old.txt") == FileRow("/workspace/old.txt", "workspace", 5, SHA, None, None)
    assert index.file("/usr/local/bin/tool").tar_path == "local/bin/tool"
    assert index.file("/workspace") is None and index.file("/workspace/a b") is None
    assert [row.path for row in index.under("/workspace/a b")] == ["/workspace/a b/\u00e9t\u00e9 \n.txt"]
    assert [(e.path, e.type, e.size, e.files) for e in index.entries("/workspace")] == [
        ("/workspace/a b", "folder", 4, 1),
        ("/workspace/old.txt", "file", 5, 1),
        ("/workspace/z.txt", "file", 3, 1),
    ]
    assert [e.path for e in index.entries("/", "T")] == [
        "/usr/local/bin/tool",
        "/workspace/a b/\u00e9t\u00e9 \n.txt",
        "/workspace/old.txt",
        "/workspace/z.txt",
    ]


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("\xff not json", ValueError),
        ('{"files": {"workspace": [["workspace/a", 1, "' + SHA + '", 0, 0]', ValueError),  # cut short
        ('{"files": {"workspace": []}} and more', ValueError),
        ('{"files": {"workspace": [}}', ValueError),
        ("[1, 2]", NoFileLists),
        ('{"volumes": {}}', NoFileLists),
        ('{"files": {}}', NoFileLists),
        ('{"files": []}', NoFileLists),
        ('{"files": "every file"}', ManifestShape),
        ("", ValueError),
    ],
    ids=[
        "not json",
        "cut short",
        "text after",
        "broken list",
        "not an object",
        "no lists",
        "empty lists",
        "empty list",
        "lists not by volume",
        "empty",
    ],
)
def test_a_text_that_is_not_a_manifests_is_refused_at_once(text, refused):
    with pytest.raises(refused):
        FileIndex(manifest_rows(text))


def test_numbers_that_cannot_be_a_files_are_left_out_not_wrapped():
    text = json.dumps(
        {
            "files": {
                "workspace": [
                    ["workspace/huge-size", 2**63, SHA, 0, 0],
                    ["workspace/huge-time", 1, SHA, 2**64, 0],
                    ["workspace/short-sha", 1, "abc", 0, 0],
                    ["workspace/upper-sha", 1, SHA.upper(), 0, 0],
                    ["workspace/ok", 1, SHA, -5, 0],
                ]
            }
        }
    )
    index = FileIndex(manifest_rows(text))
    assert [row.path for row in _rows(index)] == ["/workspace/ok"] and index.unsafe == 4
    assert index.file("/workspace/ok").mtime == -5


@pytest.mark.parametrize(
    "text",
    [
        '{"files": {"workspace": [["workspace/a", 1, "' + SHA + '", 0, 0] ["workspace/b", 1, "' + SHA + '", 0, 0]]}}',
        '{"files": {"workspace": [["workspace/a", 1, "' + SHA + '", 0, 0],]}}',
        '{"volumes": {} "files": {"workspace": []}}',
        '{"files": {"workspace": [],}}',
        '{1: 2, "files": {"workspace": []}}',
        '{"files" {"workspace": []}}',
        '{"files": {"workspace": []}}}',
    ],
    ids=[
        "no comma",
        "trailing comma",
        "no comma between names",
        "trailing comma in files",
        "name not a string",
        "no colon",
        "one brace too many",
    ],
)
def test_what_json_loads_refuses_the_walk_refuses_too(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        FileIndex(manifest_rows(text))


def test_a_name_given_twice_is_refused_and_a_path_listed_twice_reads_as_the_tar_leaves_it():
    with pytest.raises(ManifestShape, match="twice"):
        FileIndex(manifest_rows('{"files": {"workspace": []}, "files": null}'))
    with pytest.raises(ManifestShape, match="twice"):
        FileIndex(manifest_rows('{"files": {"workspace": [], "workspace": []}}'))
    twice = [["workspace/a", 1, SHA, 0, 0], ["workspace/a", 2, SHA, 0, 512]]
    index = FileIndex(manifest_rows(json.dumps({"files": {"workspace": twice}})))
    assert index.file("/workspace/a").size == 2 and len(index.under("/workspace")) == 2
    # An offset no file has is left out, not a crash of the whole page.
    huge = json.dumps({"files": {"workspace": [["workspace/b", 1, SHA, 0, 2**63]]}})
    assert FileIndex(manifest_rows(huge)).unsafe == 1

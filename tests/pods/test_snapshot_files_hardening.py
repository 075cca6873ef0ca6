"""Any file back, hardened: names in a snapshot's file list are the pod's data (never a way out
of the path asked for), a name is read exactly as written, every download is audited, the
controls and their raw URLs need the right permission, an empty answer is a sentence, and bad
input on the page or the command line is one sentence with nothing touched."""

import io
import json
import tarfile
from collections import OrderedDict
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.audit.names import AuditAction
from apps.pods.models import Pod, Snapshot
from apps.pods.services import snapshot_files
from apps.pods.snapshots import store_from_url
from tests.pods import test_snapshot_files_pages as pages
from tests.pods.test_snapshot_files_pages import FILES, MTIME, snapshot_from_tar, stored_snapshot, volume_tar

operator_client = pages.operator_client  # the fixture: a client logged in as an operator

pytestmark = pytest.mark.django_db


def snapshot_with_members(pod_id: str, members: dict[str, bytes]) -> Snapshot:
    """A complete snapshot whose workspace tar (and so its file list) holds `members` as named."""
    return snapshot_from_tar(pod_id, volume_tar(members))


HOSTILE_MEMBERS = {
    "workspace/proj/ok.txt": b"fine",
    "workspace/proj/../../etc/passwd": b"root::0:0",
    "workspace/proj/../escaped.txt": b"up one",
    "workspace/./proj/dot.txt": b"dot",
    "workspace//proj/double.txt": b"double",
    "/workspace/proj/absolute.txt": b"absolute",
}


def test_names_that_leave_their_path_are_never_listed_downloaded_or_tarred(operator_client):
    snapshot = snapshot_with_members("files-forged", HOSTILE_MEMBERS)
    files = reverse("pods:snapshot-files", args=["files-forged", snapshot.pk])
    download = reverse("pods:snapshot-download", args=["files-forged", snapshot.pk])

    page = operator_client.get(files, {"path": "/workspace", "q": "t"})
    text = page.content.decode()
    assert page.status_code == 200 and "/workspace/proj/ok.txt" in text
    for word in ["passwd", "escaped", "dot.txt", "double", "absolute"]:
        assert word not in text, word
    assert "5 names in this snapshot's file list are not shown: not a plain path" in text

    # The whole volume as a tar: only the plain name, under the folder's own name.
    response = operator_client.get(download, {"path": "/workspace"})
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content))) as tar:
        assert tar.getnames() == ["workspace/proj/ok.txt"]
    for path in ["/workspace/proj/../escaped.txt", "/etc/passwd", "/workspace/escaped.txt"]:
        assert operator_client.get(download, {"path": path}).status_code in {400, 404}, path


def test_a_name_is_read_exactly_as_written_trailing_space_and_newline_included(operator_client):
    snapshot = stored_snapshot("files-exact", {"x ": b"with a space", "x": b"plain", "a\nb": b"newline"})
    download = reverse("pods:snapshot-download", args=["files-exact", snapshot.pk])

    assert b"".join(operator_client.get(download, {"path": "/workspace/x "}).streaming_content) == b"with a space"
    assert b"".join(operator_client.get(download, {"path": "/workspace/x"}).streaming_content) == b"plain"
    newline = operator_client.get(download, {"path": "/workspace/a\nb"})
    assert b"".join(newline.streaming_content) == b"newline"
    assert newline["Content-Disposition"] == "attachment; filename=\"a_b\"; filename*=UTF-8''a%0Ab"


def test_content_disposition_is_safe_for_quotes_and_non_ascii(operator_client):
    snapshot = stored_snapshot("files-names", {'say "hi";x.txt': b"q", "café ☕.txt": b"c"})
    download = reverse("pods:snapshot-download", args=["files-names", snapshot.pk])
    quoted = operator_client.get(download, {"path": '/workspace/say "hi";x.txt'})["Content-Disposition"]
    assert quoted == "attachment; filename=\"say _hi_;x.txt\"; filename*=UTF-8''say%20%22hi%22%3Bx.txt"
    accented = operator_client.get(download, {"path": "/workspace/café ☕.txt"})["Content-Disposition"]
    assert accented == "attachment; filename=\"caf_ _.txt\"; filename*=UTF-8''caf%C3%A9%20%E2%98%95.txt"


def test_every_download_is_audited_with_who_what_and_which_snapshot(operator_client, viewer_user):
    snapshot = stored_snapshot("files-audit", FILES)
    download = reverse("pods:snapshot-download", args=["files-audit", snapshot.pk])

    operator_client.get(download, {"path": "/workspace/proj/src/a.txt"})
    operator_client.get(download, {"path": "/workspace/proj"})
    operator_client.get(download, {"path": "/workspace/nope"})  # refused: not a download
    assert operator_client.head(download, {"path": "/workspace/proj/src/a.txt"}).status_code == 405  # sends nothing

    events = list(AuditEvent.objects.filter(action=AuditAction.POD_FILES_DOWNLOAD).order_by("pk"))
    assert [(e.actor_name, e.target_id, e.details["snapshot"], e.details["path"]) for e in events] == [
        ("operator", "files-audit", snapshot.pk, "/workspace/proj/src/a.txt"),
        ("operator", "files-audit", snapshot.pk, "/workspace/proj"),
    ]
    assert events[1].details["files"] == 3 and events[1].details["folder"] is True
    assert f"/workspace/proj (3 files, 2.1 KiB) downloaded from snapshot #{snapshot.pk}" == events[1].message
    viewer = Client()
    viewer.force_login(viewer_user)
    assert viewer.get(download, {"path": "/workspace/notes.txt"}).status_code == 403
    assert AuditEvent.objects.filter(action=AuditAction.POD_FILES_DOWNLOAD).count() == 2


def test_restore_and_download_urls_need_the_permission_and_the_list_needs_view(viewer_client, django_user_model):
    snapshot = stored_snapshot("files-perm", FILES, status=Pod.Status.RUNNING)
    args = ["files-perm", snapshot.pk]
    for name in ["pods:snapshot-download", "pods:snapshot-restore"]:
        response = viewer_client.get(reverse(name, args=args), {"path": "/workspace/proj/src/a.txt"})
        assert response.status_code == 403, name
    # Staff without any role may not even list names.
    bare = django_user_model.objects.create_user(username="bare", password="pw-bare-12345!", is_staff=True)
    client = Client()
    client.force_login(bare)
    assert client.get(reverse("pods:snapshot-files", args=args)).status_code == 403


def test_an_empty_answer_is_a_sentence_not_an_empty_table(operator_client):
    snapshot = stored_snapshot("files-empty", FILES)
    url = reverse("pods:snapshot-files", args=["files-empty", snapshot.pk])
    text = operator_client.get(url, {"path": "/workspace", "q": "no-such-name"}).content.decode()
    assert "<table" not in text and "No file or folder below /workspace has a name holding “no-such-name”" in text
    refused = operator_client.get(url, {"path": "/workspace/nope"}).content.decode()
    assert "<table" not in refused and "is not in snapshot" in refused


def test_bad_input_on_the_page_is_one_sentence_and_changes_nothing(operator_client):
    snapshot = stored_snapshot("files-hostile", FILES)
    other = stored_snapshot("files-hostile2", FILES)
    url = reverse("pods:snapshot-files", args=["files-hostile", snapshot.pk])
    before = AuditEvent.objects.count()
    cases = [
        ({"path": "//workspace//proj"}, 200, "src/"),
        ({"path": "/workspace/proj", "page": "99999999999999999999"}, 200, "src/"),
        ({"path": "/workspace/proj", "page": "-1"}, 200, "src/"),
        ({"path": "/workspace", "q": ".*[(?$^\\"}, 200, "has a name holding"),
        ({"path": "/workspace/" + "x" * 5000}, 400, "longer than 4,096 characters"),
        ({"path": "/workspace/../etc"}, 400, "may not contain"),
        ({"path": "/workspace/a\nb"}, 404, "/workspace/a\\nb is not in snapshot"),
        ({"path": "/workspace/a\x00b"}, 400, "NUL"),
    ]
    for params, status, words in cases:
        response = operator_client.get(url, params)
        text = response.content.decode()
        assert response.status_code == status and words in text, (params, response.status_code)
        assert "Traceback" not in text
    for path in [
        f"/pods/files-hostile/snapshots/{10**30}/files/",
        f"/pods/files-hostile/snapshots/{other.pk}/files/",
        f"/pods/no-such-pod/snapshots/{snapshot.pk}/files/",
        f"/pods/files-hostile/snapshots/{10**30}/files/download/?path=/workspace/notes.txt",
        f"/pods/files-hostile/snapshots/{other.pk}/files/restore/?path=/workspace/notes.txt",
    ]:
        response = operator_client.get(path)
        assert response.status_code in {400, 404} and "Traceback" not in response.content.decode(), path
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.DELETED)
    gone = operator_client.get(url)
    assert gone.status_code == 400 and "is deleted: only a complete snapshot" in gone.content.decode()
    assert AuditEvent.objects.count() == before


def pods(*args: str) -> str:
    out = StringIO()
    call_command("pods", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_bad_input_on_the_command_line_is_one_line_and_exits_non_zero():
    snapshot = stored_snapshot("files-cli", {**FILES, "odd\nname.txt": b"o"})
    other = stored_snapshot("files-cli2", FILES)
    number = str(snapshot.pk)
    cases = [
        (("files", "files-cli", "abc"), "is not a snapshot number"),
        (("files", "files-cli", "-1"), "is not a snapshot number"),
        (("files", "files-cli", "\u00b2"), "is not a snapshot number"),  # superscript two: isdigit(), not int()
        (("files", "files-cli", "\uff11"), "is not a snapshot number"),  # fullwidth one reads as 1
        (("files", "files-cli", str(10**30)), "is not a snapshot number"),
        (("files", "files-cli", str(other.pk)), "is not a snapshot of pod files-cli"),
        (("files", "no-such-pod", number), "no-such-pod"),
        (("files", "files-cli", number, "/workspace/../etc"), "may not contain"),
        (("files", "files-cli", number, "/workspace/a\x00b"), "NUL"),
        (("files", "files-cli", number, "/workspace/new\nline"), "/workspace/new\\nline is not in snapshot"),
        (("files", "files-cli", number, "/" + "x" * 5000), "longer than 4,096"),
        (("restore-path", "files-cli", number, "/workspace/proj"), "is stopped"),
        (("restore-path", "files-cli", "abc", "/workspace/proj"), "is not a snapshot number"),
        (("restore-path", "files-cli", number, "/workspace/../../etc/passwd"), "may not contain"),
    ]
    for args, words in cases:
        with pytest.raises(CommandError) as refused:
            pods(*args)
        message = str(refused.value)
        assert words in message and "\n" not in message and "Traceback" not in message, (args, message)
    # A name with a newline is one line of the listing.
    listing = pods("files", "files-cli", number, "/workspace").splitlines()
    assert any(line.endswith("/workspace/odd\\nname.txt") for line in listing)


def test_a_malformed_file_list_or_manifest_is_left_out_or_one_sentence(operator_client):
    snapshot = snapshot_with_members("files-malformed", {"workspace/proj/ok.txt": b"fine"})
    store = store_from_url(snapshot.store_url)
    key = f"{snapshot.prefix}/manifest.json"
    written = json.loads(store.get_small(key))
    good = written["files"]["workspace"][0]  # [path, size, sha256, mtime, offset]
    written["files"]["workspace"] += [
        ["workspace/proj/negative.txt", -1, good[2], MTIME, good[4]],
        ["workspace/proj/before-start.txt", 4, good[2], MTIME, -100],
        ["workspace/proj/text-size.txt", "4", good[2], MTIME, good[4]],
        "workspace/proj/not-a-list.txt",
        ["workspace/proj/short.txt"],
        ["etc/other-volume.txt", 4, good[2], MTIME, good[4]],
        # A time no calendar holds (a pod can set it): listed, its time shown as —.
        ["workspace/proj/far-future.txt", 4, good[2], 10**13, good[4]],
    ]
    store.put_small(key, json.dumps(written).encode())
    files = reverse("pods:snapshot-files", args=["files-malformed", snapshot.pk])

    page = operator_client.get(files, {"path": "/workspace/proj"})
    text = page.content.decode()
    assert page.status_code == 200 and "ok.txt" in text and "far-future.txt" in text
    for word in ["negative", "before-start", "text-size", "not-a-list", "short", "other-volume"]:
        assert word not in text, word
    assert "6 names in this snapshot's file list" in text
    listed = json.loads(pods("files", "files-malformed", str(snapshot.pk), "/workspace/proj", "--json"))
    assert [e["path"] for e in listed] == ["/workspace/proj/far-future.txt", "/workspace/proj/ok.txt"]
    assert "far-future.txt" in pods("files", "files-malformed", str(snapshot.pk), "/workspace/proj")

    other = snapshot_with_members("files-garbled", {"workspace/a.txt": b"a"})
    store.put_small(f"{other.prefix}/manifest.json", b"\xff not json")
    garbled = operator_client.get(reverse("pods:snapshot-files", args=["files-garbled", other.pk]))
    assert garbled.status_code == 409 and "manifest in the store cannot be read" in garbled.content.decode()


def test_a_process_keeps_file_indexes_within_their_rows_and_always_the_one_in_use(monkeypatch):
    # Each kept index holds every file of its snapshot: their number is bounded by files, not
    # only by snapshots, and the index just asked for is kept whatever its size.
    monkeypatch.setattr(snapshot_files, "_indexes", OrderedDict())
    monkeypatch.setattr(snapshot_files, "KEPT_ROWS", 3)
    first = snapshot_with_members("kept-a", {"workspace/a.txt": b"a", "workspace/b.txt": b"b"})
    second = snapshot_with_members("kept-b", {"workspace/c.txt": b"c", "workspace/d.txt": b"d"})
    big = snapshot_with_members("kept-c", {f"workspace/{n}.txt": b"x" for n in range(5)})
    assert len(snapshot_files.file_index(first)) == 2
    snapshot_files.file_index(second)
    assert [key[0] for key in snapshot_files._indexes] == [first.pk, second.pk]  # 2 beside 2: kept
    snapshot_files.file_index(big)
    assert [key[0] for key in snapshot_files._indexes] == [second.pk, big.pk]  # 4 beside it > 3: the oldest goes
    monkeypatch.setattr(snapshot_files, "KEPT_ROWS", 100)
    for snapshot in (first, second):
        snapshot_files.file_index(snapshot)
    assert [key[0] for key in snapshot_files._indexes] == [big.pk, first.pk, second.pk]
    # A row knows where its file is in its volume's tar, which holds the mount folder itself.
    row = snapshot_files.file_index(big).file("/workspace/3.txt")
    assert (
        row is not None and row.tar_path == "workspace/3.txt" and not snapshot_files.file_index(big).file("/workspace")
    )
    local = snapshot_files.FileRow("/usr/local/bin/tool", "usr-local", 1, "0" * 64, None, None)
    assert local.tar_path == "local/bin/tool"


def test_a_manifest_nested_past_what_json_reads_or_with_a_bom_is_one_sentence_or_read(operator_client):
    snapshot = snapshot_with_members("files-nested", {"workspace/a.txt": b"a"})
    store = store_from_url(snapshot.store_url)
    key = f"{snapshot.prefix}/manifest.json"
    written = store.get_small(key)
    store.put_small(key, b'{"files": {"workspace": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}}")
    nested = operator_client.get(reverse("pods:snapshot-files", args=["files-nested", snapshot.pk]))
    assert nested.status_code == 409 and "manifest in the store cannot be read" in nested.content.decode()
    # A byte-order mark before the JSON is read as json.loads reads bytes.
    other = snapshot_with_members("files-bom", {"workspace/b.txt": b"b"})
    store.put_small(f"{other.prefix}/manifest.json", b"\xef\xbb\xbf" + store.get_small(f"{other.prefix}/manifest.json"))
    page = operator_client.get(reverse("pods:snapshot-files", args=["files-bom", other.pk]), {"path": "/workspace"})
    assert page.status_code == 200 and "b.txt" in page.content.decode()
    assert written  # the first snapshot's own manifest read before it was replaced

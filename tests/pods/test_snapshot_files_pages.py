"""The snapshot files page: breadcrumb, search, paging, downloads streamed as attachments,
controls only for people who may restore files; the pod page links each complete snapshot.

The snapshot is written the way a stop writes one (a volume tar in a `file://` store, its
file list from `TarFileList`, the manifest last), without a Docker round trip."""

import io
import json
import tarfile

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from apps.audit.roles import OPERATOR_GROUP, roles_sync
from apps.pods.models import VOLUME_MOUNTS, DockerHost, Pod, Snapshot
from apps.pods.snapshots import store_from_url
from apps.pods.stores.tarlist import TarFileList

pytestmark = pytest.mark.django_db

MTIME = 1_767_225_600  # 2026-01-01 00:00 UTC


def volume_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def stored_snapshot(pod_id: str, files: dict[str, bytes], *, status: str = Pod.Status.STOPPED) -> Snapshot:
    """A complete snapshot of a new pod in the test's file store, with `files` in /workspace."""
    return snapshot_from_tar(pod_id, volume_tar({f"workspace/{name}": data for name, data in files.items()}), status)


def snapshot_from_tar(pod_id: str, workspace_tar: bytes, status: str = Pod.Status.STOPPED) -> Snapshot:
    """A complete snapshot of a new pod whose workspace volume is `workspace_tar` as it is
    (its file list worked out from it, as a stop does); the other volumes empty."""
    host, _ = DockerHost.objects.get_or_create(name="local", defaults={"base_url": "unix:///nowhere"})
    pod = Pod.objects.create(pod_id=pod_id, host=host, image="img", status=status)
    store = store_from_url()
    snapshot = Snapshot.objects.create(pod=pod, store_url=store.url, status=Snapshot.Status.UPLOADING)
    manifest, lists = {}, {}
    for volume in VOLUME_MOUNTS:
        raw = workspace_tar if volume == "workspace" else volume_tar({})
        listing = TarFileList()
        listing.feed(raw)
        key = f"{snapshot.prefix}/{volume}.tar"
        store.put_small(key, raw)
        manifest[volume] = {"key": key, "bytes": len(raw), "files": len(listing.files)}
        lists[volume] = listing.files
    store.put_small(f"{snapshot.prefix}/manifest.json", json.dumps({"volumes": manifest, "files": lists}).encode())
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.COMPLETE, manifest=manifest)
    snapshot.refresh_from_db()
    return snapshot


@pytest.fixture
def operator_client(client, django_user_model):
    roles_sync()
    user = django_user_model.objects.create_user(username="operator", password="pw-operator-123!", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    client.force_login(user)
    return client


FILES = {
    "proj/src/a.txt": b"hello pod\n",
    "proj/src/b.txt": b"second",
    "proj/docs/README.md": b"readme " * 300,
    "notes.txt": b"n",
}


def test_the_pod_page_links_each_complete_snapshot_to_its_files(operator_client):
    snapshot = stored_snapshot("files-link", FILES)
    Snapshot.objects.create(pod=snapshot.pod, store_url=snapshot.store_url, status=Snapshot.Status.FAILED)
    page = operator_client.get(reverse("pods:detail", args=["files-link"])).content.decode()
    url = reverse("pods:snapshot-files", args=["files-link", snapshot.pk])
    assert page.count("Browse files") == 1 and url in page


def test_the_page_lists_a_folder_with_a_breadcrumb_sizes_and_utc_times(operator_client):
    snapshot = stored_snapshot("files-page", FILES)
    url = reverse("pods:snapshot-files", args=["files-page", snapshot.pk])

    page = operator_client.get(url, {"path": "/workspace/proj"}).content.decode()

    assert '<a href="/pods/files-page/snapshots/' in page and "<strong>proj</strong>" in page  # breadcrumb
    assert ">docs/</a>" in page and ">src/</a>" in page and "2 files" in page
    assert "2.1 KiB" in page and "2026-01-01 00:00" in page
    assert "regular files only" in page.lower()
    assert "Restore beside the current one" in page and "Download (tar)" in page

    found = operator_client.get(url, {"path": "/workspace", "q": "readme"}).content.decode()
    assert "/workspace/proj/docs/README.md" in found and "a.txt" not in found


def test_a_long_folder_is_paged(operator_client):
    snapshot = stored_snapshot("files-paged", {f"many/f{n:03}.txt": b"x" for n in range(130)})
    url = reverse("pods:snapshot-files", args=["files-paged", snapshot.pk])
    first = operator_client.get(url, {"path": "/workspace/many"}).content.decode()
    second = operator_client.get(url, {"path": "/workspace/many", "page": 2}).content.decode()
    assert "f099.txt" in first and "f100.txt" not in first and "page 1 of 2" in first
    assert "next →" in first and "older →" not in first  # names, not times: no "newer"/"older"
    assert "f100.txt" in second and "f129.txt" in second and "f000.txt" not in second


def test_downloads_stream_the_file_as_itself_and_a_folder_as_a_tar(operator_client):
    snapshot = stored_snapshot("files-get", FILES)
    url = reverse("pods:snapshot-download", args=["files-get", snapshot.pk])

    one = operator_client.get(url, {"path": "/workspace/proj/docs/README.md"})
    assert one.streaming and b"".join(one.streaming_content) == FILES["proj/docs/README.md"]
    assert one["Content-Disposition"].startswith('attachment; filename="README.md"')

    folder = operator_client.get(url, {"path": "/workspace/proj/src"})
    assert folder["Content-Disposition"].startswith('attachment; filename="src.tar"')
    with tarfile.open(fileobj=io.BytesIO(b"".join(folder.streaming_content))) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == {
            "src/a.txt": b"hello pod\n",
            "src/b.txt": b"second",
        }
    assert operator_client.get(url, {"path": "/workspace/../etc"}).status_code == 400


def test_a_viewer_sees_names_and_sizes_but_no_download_or_restore(viewer_client):
    snapshot = stored_snapshot("files-viewer", FILES)
    page = viewer_client.get(reverse("pods:snapshot-files", args=["files-viewer", snapshot.pk]), {"path": "/workspace"})
    text = page.content.decode()
    assert page.status_code == 200 and "notes.txt" in text
    assert "Download" not in text and "Restore beside" not in text and "restore files" in text
    download = reverse("pods:snapshot-download", args=["files-viewer", snapshot.pk])
    assert viewer_client.get(download, {"path": "/workspace/notes.txt"}).status_code == 403
    run = reverse("pods:snapshot-restore-run", args=["files-viewer", snapshot.pk])
    assert viewer_client.post(run, {"path": "/workspace/notes.txt", "confirm": "yes"}).status_code == 403


def test_bad_paths_and_snapshots_are_one_sentence_on_the_page(operator_client):
    snapshot = stored_snapshot("files-bad", FILES)
    other = stored_snapshot("files-other", FILES)
    url = reverse("pods:snapshot-files", args=["files-bad", snapshot.pk])
    outside = operator_client.get(url, {"path": "/tmp"})
    assert outside.status_code == 400 and "outside the pod&#x27;s eight volumes" in outside.content.decode()
    missing = operator_client.get(url, {"path": "/workspace/nope"})
    assert missing.status_code == 404 and "is not in snapshot" in missing.content.decode()
    assert operator_client.get(reverse("pods:snapshot-files", args=["files-bad", other.pk])).status_code == 404


def test_the_restore_confirmation_refuses_a_pod_that_is_not_running(operator_client):
    snapshot = stored_snapshot("files-stopped", FILES)
    page = operator_client.get(
        reverse("pods:snapshot-restore", args=["files-stopped", snapshot.pk]), {"path": "/workspace/proj"}
    )
    text = page.content.decode()
    assert page.status_code == 400 and "is stopped: a path is restored only into a running pod" in text
    assert "Nothing was changed" in text and 'name="confirm"' not in text

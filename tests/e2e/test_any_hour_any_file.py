"""Issue #22's Done-when journey on the deduplicated stores, `dedup+file://` and `dedup+s3://`
on SeaweedFS, on the real dockerd and Debian's restic, in Chromium without a reload: a running
pod with a process writing inside is backed up twice from Back up now (the second adds little:
the unchanged volumes dedup), one of its files comes back beside the current one from the
second backup's files page, byte-identical to what the pod held then, and a stop and a start
bring every file back as it was (the growing log as it was at the stop). With restic beside the
volumes (SNAPSHOT_ENGINE=beside): the second backup names the first as its parent."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from apps.audit.models import Operation
from apps.pods import services
from apps.pods.models import Snapshot, container_name
from apps.pods.services.snapshot_files import snapshot_entries
from tests.e2e.test_journey import Watcher, assert_not_reloaded, mark
from tests.e2e.test_snapshot_files import file_in
from tests.pods.conftest import WRITE_SCRIPT, container_exists, listing, new_pod_id, pod_volumes, pods_settings, run_in  # noqa: F401
from tests.pods.test_snapshot_dedup import dedup_file, restic, restic_template  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

KIB = 1024
# WRITE_SCRIPT's pod (every kind of entry, a 200 KiB random blob in /home) and a journal.
SCRIPT = WRITE_SCRIPT + "mkdir -p /workspace/journal\nprintf 'first entry\\n' > /workspace/journal/journal-today.txt\n"
JOURNAL = "/workspace/journal/journal-today.txt"
LOG = "/workspace/log"
WRITER = "while true; do date >> /workspace/log; sleep 0.05; done"
# Debian's restic 0.14 retries loading a lock file another restic just removed for ~44 s
# (restic#1523, fixed in 0.16.3), which restic processes of one operation running side by side
# on S3 meet now and then: an operation may take that much longer without being wrong.
WAIT_SECONDS = 180


class Store:
    """The store under test: its url, and the bytes it holds as the store itself counts them."""

    def __init__(self, url: str, measure):
        self.url, self.bytes = url, measure


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture(params=["dedup+file", "dedup+s3"])
def store(request, settings, tmp_path, restic_template, restic, s3_server):  # noqa: F811 - imported fixtures
    if request.param == "dedup+file":
        repository = request.getfixturevalue("dedup_file")
        return Store(settings.SNAPSHOT_STORE_URL, lambda: _folder_bytes(repository))
    bucket = request.getfixturevalue("s3_bucket")
    client = s3_server.client()
    # The template repository (a fast key) uploaded under the prefix: restic's S3 layout is
    # its local one, and a key derived in microseconds saves ~0.5 s for each restic process.
    for path in restic_template[0].rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"repo/{path.relative_to(restic_template[0]).as_posix()}")
    settings.SNAPSHOT_STORE_URL = f"dedup+s3://{bucket}/repo"

    def measure() -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="repo/")
        return sum(obj["Size"] for page in pages for obj in page.get("Contents") or [])

    return Store(settings.SNAPSHOT_STORE_URL, measure)


def _without_log(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.endswith(f"  {LOG}")]


def _back_up_now(page, backups) -> Snapshot:
    backups.get_by_role("button", name="Back up now").click()
    page.wait_for_url(page.url)
    mark(page)
    operation = Watcher(page).run_queued(kind="pod.backup", wait=WAIT_SECONDS)
    number = operation.result["snapshot"]
    expect(backups).to_contain_text(f"snapshot #{number} (backup)")
    expect(page.locator("#pod-head .pod-status .badge")).to_have_text("running")
    return Snapshot.objects.get(pk=number)


def test_a_running_pod_backed_up_twice_gives_a_file_back_and_stops_and_starts_identical(
    logged_in_page,
    live_server,
    docker_client,
    new_pod_id,  # noqa: F811 - the pods tests' fixture, imported above
    store,
    settings,
):
    settings.SNAPSHOT_ENGINE = "beside"  # the engine this journey proves (issue #22's Done-when)
    page = logged_in_page
    page.set_viewport_size({"width": 1400, "height": 900})
    pod_id = new_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, SCRIPT)
    docker_client.containers.get(container_name(pod_id)).exec_run(["sh", "-c", WRITER], detach=True)
    empty = store.bytes()

    # Two backups from the pod page while the writer writes.
    pod_url = f"{live_server.url}/pods/{pod_id}/"
    page.goto(pod_url)
    backups = page.locator("#pod-backups")
    first = _back_up_now(page, backups)
    after_first = store.bytes()
    run_in(docker_client, pod_id, f"printf 'second entry\\n' > {JOURNAL}")
    at_backup = file_in(docker_client, pod_id, JOURNAL)
    second = _back_up_now(page, backups)
    after_second = store.bytes()
    assert first.store_url == second.store_url == store.url
    assert first.kind == second.kind == Snapshot.Kind.BACKUP
    assert first.status == second.status == Snapshot.Status.COMPLETE
    # The writer wrote between them: each snapshot's log is longer than the one before.
    first_log, second_log = (
        next(e for e in snapshot_entries(pod_id=pod_id, number=s.pk, path="/workspace") if e.path == LOG)
        for s in (first, second)
    )
    assert 0 < first_log.size < second_log.size
    # The first holds the blob (random: it does not compress); the second adds only what
    # changed, /workspace (the log, the journal) and restic's own records: the seven
    # unchanged volumes dedup, and the store grows by a fraction of what the first added.
    assert first.stored_bytes > 200 * KIB and after_first - empty > 200 * KIB
    # restic beside the volumes named the first backup as the second's parent: only the files
    # that changed were read again.
    second_log_lines = Operation.objects.get(pk=second.operation_id).log
    assert f"(parent {first.manifest['workspace']['store_id'][:8]})" in second_log_lines
    # What it adds: /workspace's changed files, restic's records of the eight folders (each a
    # tree) and the manifest with every file's sha256, a few KiB.
    assert second.stored_bytes <= second.manifest["workspace"]["bytes"] + 16 * KIB
    assert after_second - after_first < (after_first - empty) / 2
    assert second.total_bytes >= first.total_bytes

    # The second backup's files: search, open the folder, restore beside the current one.
    run_in(docker_client, pod_id, f"printf 'third entry\\n' > {JOURNAL}")
    page.locator(f"#pod-snapshots a.browse-files[href$='/snapshots/{second.pk}/files/']").click()
    expect(page.locator("h1")).to_have_text(f"Files of snapshot #{second.pk}")
    page.fill("#file-search", "journal")
    page.click("form[role=search] button")
    expect(page.locator(f"tr[data-path='{JOURNAL}']")).to_contain_text("13 B")
    page.locator("tr[data-path='/workspace/journal'] a", has_text="/workspace/journal/").click()
    row = page.locator(f"tr[data-path='{JOURNAL}']")
    expect(row).to_contain_text("journal-today.txt")
    row.locator("a", has_text="Restore beside the current one").click()
    target = f"{JOURNAL}.from-snapshot-{second.pk}"
    expect(page.locator("main")).to_contain_text(f"as {target}")
    page.click("button:has-text('Restore as journal-today.txt.from-snapshot')")
    expect(page.locator("#file-restores")).to_be_visible()
    mark(page)
    operation = Watcher(page).run_queued(kind="pod.restore-path", wait=WAIT_SECONDS)
    box = page.locator(f"#operation-{operation.pk}")
    expect(box).to_have_attribute("data-status", "succeeded")
    expect(box).to_contain_text(f"as {target}: 1 file (13 B), read back and matching")
    assert_not_reloaded(page)
    assert file_in(docker_client, pod_id, target) == at_backup == b"second entry\n"
    assert file_in(docker_client, pod_id, JOURNAL) == b"third entry\n"

    # Stop and start: every file as it was at the stop; the log as the writer left it then.
    before = listing(docker_client, pod_id)
    log_before = file_in(docker_client, pod_id, LOG)
    services.pod_stop(pod_id=pod_id, actor="test")
    assert pod_volumes(docker_client, pod_id) == [] and not container_exists(docker_client, pod_id)
    services.pod_start(pod_id=pod_id, actor="test")
    assert _without_log(listing(docker_client, pod_id)) == _without_log(before)
    log_after = file_in(docker_client, pod_id, LOG)
    assert log_after.startswith(log_before) and log_after.count(b"\n") >= log_before.count(b"\n") > 0
    assert file_in(docker_client, pod_id, target) == b"second entry\n"

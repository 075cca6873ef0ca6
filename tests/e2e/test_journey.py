"""Issue #17's Done-when journey, through pages only, in Chromium: every status, button,
table and total an operation changes refreshes without a reload, no progress text ever
says done > total, and the overview's bytes equal what is on disk afterwards.

Two tests: the volume leg (inspect a volume, remove the forbidden folder the leak report
names), and the pod (provision from the form, a file written with `docker exec`, stop,
start, deprovision on the real dockerd), mix-job (sync, clean up) and session-policy legs,
ending on the overview. Work is queued by the pages and run by a worker thread once the
page is polling, as a qcluster worker would. A mark set on each page proves no reload."""

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from playwright.sync_api import expect

from apps.audit.models import Operation, StorageSample
from apps.audit.operations import run_operation
from apps.pods.models import Snapshot, container_name
from apps.separations.selectors import volume_name as sessions_volume_name
from apps.volumes.services import layout_preset_import
from controlpanel.formatting import humanize_bytes
from tests.mixjobs.helpers import atomic_write, media, output_path, outputs, write_job
from tests.pods.conftest import container_exists, new_pod_id, pod_volumes, pods_settings  # noqa: F401
from tests.separations.helpers import put_session, volume_root
from tests.volumes.helpers import LocalWorld, lay_out_s3_mount_plan

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# "3 of 9 files", "1.0 KiB of 2.0 KiB": a progress text with a total.
OF_TOTAL = re.compile(r"([\d.,]+)\s*(\w*B)? of ([\d.,]+)\s*(\w*B)?")
UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def _amount(number: str, unit: str | None) -> float:
    return float(number.replace(",", "")) * UNITS.get(unit or "", 1)


def over_total(texts: set[str]) -> list[str]:
    bad = []
    for text in texts:
        for done, done_unit, total, total_unit in OF_TOTAL.findall(text):
            if _amount(done, done_unit) > _amount(total, total_unit or done_unit):
                bad.append(text)
    return bad


class Watcher:
    """Runs the newest queued operation like a worker, while the pages poll; keeps every
    progress text the pages showed on the way."""

    def __init__(self, page):
        self.page = page
        self.texts: set[str] = set()

    def run_queued(self, *, kind: str, delay: float = 1.0, also=(), wait: float = 60) -> Operation:
        """Run it once `self.page` (and the tabs in `also`) show its progress box; wait (up
        to `wait` seconds) until every page showing the box has seen it end."""
        operation = Operation.objects.filter(kind=kind, status="pending").latest("created_at")
        pages = [self.page, *also]

        def work():
            time.sleep(delay)
            try:
                run_operation(operation.pk)
            finally:
                connection.close()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            statuses = []
            for page in pages:
                for text in page.locator(".progress-text").all_inner_texts():
                    self.texts.add(text.strip())
                box = page.locator(f"#operation-{operation.pk}")
                statuses.append(box.get_attribute("data-status") if box.count() else None)
            assert any(statuses), f"no page shows operation #{operation.pk} ({kind})"
            if all(status in {None, "succeeded", "failed", "errored"} for status in statuses):
                break
            time.sleep(0.1)
        worker.join(timeout=30)
        operation.refresh_from_db()
        assert operation.status == "succeeded", operation.error
        return operation


@pytest.fixture
def local_world(tmp_path):
    return LocalWorld(tmp_path / "volumes" / "brain-go-brr-results")


def disk_bytes(root, pattern: str = "*") -> int:
    return sum(path.stat().st_size for path in root.rglob(pattern) if path.is_file() and not path.is_symlink())


def test_inspect_a_volume_and_remove_its_forbidden_folder_without_a_reload(
    logged_in_page, live_server, artifacts, local_world
):
    lay_out_s3_mount_plan(local_world)
    for index in range(40):
        local_world.put(f"results/results/train/{index:03d}.bin", 1000 + index)
    volume = local_world.volume()
    layout_preset_import(volume=volume, preset="s3-mount", actor="test")
    page, watcher = logged_in_page, Watcher(logged_in_page)
    volume_url = f"{live_server.url}/volumes/{volume.name}/"

    # Inspect from the button; the body (size, findings, the fix) arrives without a reload.
    page.goto(volume_url)
    assert page.locator("text=Not inspected yet.").is_visible()
    page.click("button:has-text('Inspect now')")
    page.wait_for_url(volume_url)
    watcher.run_queued(kind="volume.inspect")
    finding = page.locator("#volume-body td", has_text="results/ should not exist")
    finding.wait_for(timeout=10000)
    assert page.locator("text=Not inspected yet.").count() == 0
    total = page.locator("#volume-body .total").inner_text()
    assert total == humanize_bytes(disk_bytes(local_world.root))
    assert page.locator("#volume-body a.remove-folder", has_text="Remove this folder").is_visible()

    # The leak report names the folder and offers its removal; the preview lists every file.
    page.goto(f"{live_server.url}/leaks/")
    row = page.locator("tr", has_text="results/ should not exist").first
    row.locator("a.button", has_text="Remove this folder").click()
    page.wait_for_selector("form.actions button.danger")
    assert page.locator("td", has_text="results/results/train/000.bin").count() == 1
    stray = disk_bytes(local_world.root / "results")
    assert page.locator("tfoot th.num").inner_text() == humanize_bytes(stray)
    assert (local_world.root / "results").exists()
    page.screenshot(path=str(artifacts / "journey-remove-folder-preview.png"), full_page=True)

    # Confirm: back on the volume page, the removal runs; findings, size and button refresh.
    page.click("form.actions button.danger")
    page.wait_for_url(volume_url)
    operation = watcher.run_queued(kind="volume.remove-folder")
    page.locator("#volume-body td", has_text="Every layout rule holds.").wait_for(timeout=10000)
    assert not (local_world.root / "results").exists()
    assert operation.result["bytes"] == stray and operation.progress_done <= operation.progress_total
    assert page.locator("#volume-body td", has_text="should not exist").count() == 0
    assert page.locator("#volume-body a.remove-folder").count() == 0
    on_disk = disk_bytes(local_world.root)
    assert page.locator("#volume-body .total").inner_text() == humanize_bytes(on_disk)
    result = page.locator(f"#operation-{operation.pk} .result").inner_text()
    assert result.startswith(f"Removed results/ from {volume.name}: 40 files")
    page.screenshot(path=str(artifacts / "journey-volume-after-removal.png"), full_page=True)

    # No progress text ever said more done than its total.
    assert watcher.texts and not over_total(watcher.texts), watcher.texts

    # The overview's bytes for volumes are what is on disk now, and the leak is gone.
    page.goto(f"{live_server.url}/")
    card = page.locator("article.domain", has=page.locator("h2", has_text="Volumes"))
    assert card.locator("p.big").inner_text() == humanize_bytes(on_disk)
    assert page.locator("text=results/ should not exist").count() == 0
    assert not [error for error in page.console_errors if "Content Security Policy" in error]


# A mark set on a loaded page: a reload (or a navigation) wipes it, so a part that
# refreshed with it still set refreshed without one.
MARK_JS = "() => { window.journeyMark = 'not reloaded'; }"
MARKED_JS = "() => window.journeyMark === 'not reloaded'"


def mark(page) -> None:
    page.evaluate(MARK_JS)


def assert_not_reloaded(page) -> None:
    assert page.evaluate(MARKED_JS), f"{page.url} was reloaded"


class StaleParts:
    """The parts issue #17 names that must refresh without a reload, each checked once the
    parts around it have settled. A failure says which part stayed stale; `after_reload`
    then tells whether a reload would have shown it right (a refresh missing) or not (wrong
    anyway), so the message points at the fix."""

    def __init__(self):
        self.found: list[str] = []

    def check(self, what: str, assertion) -> None:
        try:
            assertion()
        except AssertionError as exc:
            self.found.append(f"{what}: {str(exc).splitlines()[0]}")

    def after_reload(self, page) -> None:
        assert not self.found, "stale without a reload: " + " | ".join(self.found)

    def report(self) -> None:
        assert not self.found, "stale without a reload: " + " | ".join(self.found)


SETTLE = 3000  # ms a part that should refresh is given, once its neighbours have


def confirm_and_run(page, pod_url: str, watcher, *, kind: str) -> Operation:
    """Confirm a pod action, back on the pod page (marked: a reload would show), and run it."""
    confirm(page)
    page.wait_for_url(pod_url)
    mark(page)
    return watcher.run_queued(kind=kind)


def confirm(page) -> None:
    """Press the confirmation page's button (a red one for what deletes)."""
    page.wait_for_selector("form.actions button[type=submit]")
    page.click("form.actions button[type=submit]")


def exact_bytes(locator) -> int:
    """The exact count a humanised size gives on hover (`{% size %}`: "1,234 bytes")."""
    return int(locator.get_attribute("title").removesuffix(" bytes").replace(",", ""))


def pod_leg(page, watcher: Watcher, stale: StaleParts, live_server, docker_client, pod_id: str, snapshots_root):
    """Provision from the pods page's form, write a file in the pod, stop, start, deprovision."""
    pods_url = f"{live_server.url}/pods/"
    pod_url = f"{pods_url}{pod_id}/"
    page.goto(pods_url)
    expect(page.locator("#pods-table")).to_contain_text("No pods yet.")
    page.fill("#id_pod_id", pod_id)
    page.click("form.provision button[type=submit]")
    page.wait_for_url(pods_url)
    mark(page)
    watcher.run_queued(kind="pod.provision")
    # The list shows the provisioned pod, running with its eight volumes, without a reload.
    row = page.locator(f"#pods-table tr[data-pod='{pod_id}']")
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator("td.num").first).to_have_text("8/8")
    expect(page.locator("#pods-table")).not_to_contain_text("No pods yet.")
    assert_not_reloaded(page)

    # A file written inside the pod, as its user would.
    container = docker_client.containers.get(container_name(pod_id))
    script = "head -c 3000000 /dev/urandom > /workspace/journey.bin && md5sum /workspace/journey.bin"
    written = container.exec_run(["sh", "-c", script])
    assert written.exit_code == 0, written.output.decode()
    checksum = written.output.decode().split()[0]

    row.locator("a", has_text=pod_id).click()
    page.wait_for_url(pod_url)
    head, volumes, snapshots = page.locator("#pod-head"), page.locator("#pod-volumes"), page.locator("#pod-snapshots")
    expect(head.locator(".pod-status .badge")).to_have_text("running")
    expect(snapshots).to_contain_text("No snapshots yet.")

    # Stop: its confirmation measures what goes; then badge, buttons, volumes and snapshots
    # change on the page the person is looking at.
    head.locator("a.button", has_text="Stop").click()
    page.wait_for_selector("form.actions button.danger")
    promised = exact_bytes(page.locator("tfoot th.num"))
    stop = confirm_and_run(page, pod_url, watcher, kind="pod.stop")
    snapshot = Snapshot.objects.get(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE)
    expect(head.locator(".pod-status .badge")).to_have_text("stopped")
    expect(head.locator(".pod-actions a.button", has_text="Start")).to_be_visible()
    expect(head.locator(".pod-actions a.button", has_text="Stop")).to_have_count(0)
    expect(volumes.locator("td.exists")).to_have_text(["no"] * 8)
    expect(snapshots).not_to_contain_text("No snapshots yet.")
    listed = snapshots.locator("table.snapshots tbody tr").first
    expect(listed.locator("td").first).to_have_text(str(snapshot.pk))
    expect(listed.locator(".badge")).to_have_text("complete")
    expect(listed.locator(".bytes")).to_have_attribute("title", f"{snapshot.total_bytes:,} bytes")
    # The confirmation's bytes are measured for it: at least the file written since provisioning.
    stale.check(
        "pod stop confirmation (tfoot total)",
        lambda: _at_least(
            promised, 3_000_000, f"promised {promised:,} bytes; the snapshot took {snapshot.total_bytes:,}"
        ),
    )
    assert stop.progress_total is None or stop.progress_done <= stop.progress_total
    assert_not_reloaded(page)

    # Start: running again, the volumes back, and the file as it was written.
    head.locator("a.button", has_text="Start").click()
    confirm_and_run(page, pod_url, watcher, kind="pod.start")
    expect(head.locator(".pod-status .badge")).to_have_text("running")
    expect(head.locator(".pod-actions a.button", has_text="Stop")).to_be_visible()
    expect(volumes.locator("td.exists")).to_have_text(["yes"] * 8)
    assert_not_reloaded(page)
    restored = docker_client.containers.get(container_name(pod_id)).exec_run(["md5sum", "/workspace/journey.bin"])
    assert restored.output.decode().split()[0] == checksum

    # Deprovision: container and volumes go, the snapshot stays (listed, and on disk).
    head.locator("a.button", has_text="Deprovision").click()
    confirm_and_run(page, pod_url, watcher, kind="pod.deprovision")
    expect(head.locator(".pod-status .badge")).to_have_text("deprovisioned")
    expect(head.locator(".pod-actions a.button", has_text="Stop")).to_have_count(0)
    expect(volumes.locator("td.exists")).to_have_text(["no"] * 8)
    expect(listed.locator("td").first).to_have_text(str(snapshot.pk))
    assert_not_reloaded(page)
    stale.after_reload(page)
    assert not pod_volumes(docker_client, pod_id) and not container_exists(docker_client, pod_id)
    assert snapshot.total_bytes == disk_bytes(snapshots_root, "*.tar") > 3_000_000


def _at_least(value: int, floor: int, message: str) -> None:
    assert value >= floor, message


def mixjobs_leg(page, watcher: Watcher, stale: StaleParts, live_server) -> None:
    """Sync, then clean up the expired jobs, from the mix-jobs page; the page stays open in
    a second tab while each runs, and its header, counts and table follow without a reload."""
    now = datetime.now(UTC)
    for index in range(3):
        write_job(f"mix-old-{index}", f"job-old-{index}", state="complete", updated_at=now - timedelta(hours=60))
        atomic_write(output_path(f"mix-old-{index}"), b"\1" * 700_000)
    write_job("mix-live", "job-live", state="mixing", updated_at=now - timedelta(minutes=5))
    mix_url = f"{live_server.url}/mixjobs/"
    side = page.context.new_page()

    page.goto(mix_url)
    page.click("form[action$='/mixjobs/sync/'] button")
    page.wait_for_url(re.compile(r"/operations/\d+/$"))
    mark(page)
    side.goto(mix_url)
    mark(side)
    sync = watcher.run_queued(kind="mixjobs.sync", also=[side])
    # The operation page shows its times, result and log once the work ends.
    facts = page.locator("#operation-facts")
    expect(facts.locator(".started")).not_to_have_text("—")
    expect(facts.locator(".finished")).not_to_have_text("—")
    expect(facts.locator("pre.log")).not_to_have_text("(empty)")
    expect(facts.locator("p.result")).not_to_have_text("")
    assert "{" not in facts.locator("p.result").inner_text()
    assert sync.started_at and sync.finished_at
    # The mix-jobs tab: the header now counts the four jobs and the bytes on disk.
    headline = side.locator("#mixjobs-headline")
    held = headline.locator(".held .bytes")
    expect(headline.locator(".jobs")).to_have_text("4")
    expect(headline.locator(".expired")).to_have_text("3")
    expect(side.locator("#mixjobs-table tbody tr")).to_have_count(4)
    before = mix_disk_bytes()
    expect(held).to_have_attribute("title", f"{before:,} bytes")
    assert_not_reloaded(page)
    assert_not_reloaded(side)

    # Clean up: the preview, then the header bytes drop to what is left on disk.
    side.goto(mix_url)
    side.click("a.button:has-text('Clean up expired jobs')")
    # The preview lists the expired job (expect waits for the page the click opens; a bare
    # count() read it before it had loaded, once in a full run).
    expect(side.locator("tbody tr", has_text="job-old-0").first).to_be_visible()
    confirm(side)
    side.wait_for_url(re.compile(r"/operations/\d+/$"))
    page.goto(mix_url)
    mark(page)
    mark(side)
    watcher.run_queued(kind="mixjobs.cleanup", also=[side])
    after = mix_disk_bytes()
    assert after < before - 3 * 700_000
    held = page.locator("#mixjobs-headline .held .bytes")
    expect(held).to_have_attribute("title", f"{after:,} bytes")
    expect(held).to_have_text(humanize_bytes(after))
    expect(page.locator("#mixjobs-headline .jobs")).to_have_text("1")
    expect(page.locator("#mixjobs-headline .expired")).to_have_text("0")
    expect(page.locator("#mixjobs-table tbody tr")).to_have_count(1)
    expect(page.locator("#mixjobs-table")).to_contain_text("job-live")
    expect(side.locator("#operation-facts .finished")).not_to_have_text("—")
    by_state = page.locator("main section.card dl.facts dt")
    stale.check(
        "mix-jobs page, jobs by state (dl.facts)", lambda: expect(by_state).to_have_text(["mixing"], timeout=SETTLE)
    )
    assert_not_reloaded(page)
    assert_not_reloaded(side)
    stale.after_reload(page)
    side.close()


def mix_disk_bytes() -> int:
    return disk_bytes(media()) + disk_bytes(outputs())


def sessions_leg(page, watcher: Watcher, stale: StaleParts, live_server) -> None:
    """Sync the sessions volume, then run the download policy, from the sessions page."""
    now = datetime.now(UTC)
    for index in range(3):
        put_session(f"old-{index}", mtime=now - timedelta(hours=3 + index), input_bytes=900_000)
    put_session("fresh-0", mtime=now, input_bytes=900_000)
    sessions_url = f"{live_server.url}/sessions/"

    page.goto(sessions_url)
    expect(page.locator("#sessions-gauge")).to_contain_text("Not synced yet")
    page.click("#sessions-gauge form button[type=submit]")
    page.wait_for_url(re.compile(r"/operations/\d+/$"))
    page.goto(sessions_url)
    mark(page)
    watcher.run_queued(kind="sessions.sync")
    gauge = page.locator("#sessions-gauge .used .bytes")
    before = disk_bytes(volume_root())
    expect(gauge).to_have_attribute("title", f"{before:,} bytes")
    expect(page.locator("#sessions-table tbody tr[data-session]")).to_have_count(4)
    assert_not_reloaded(page)

    page.click("#sessions-gauge a.button:has-text('download policy')")
    for index in range(3):
        assert page.locator("td", has_text=f"old-{index}").count() >= 1
    confirm(page)
    page.wait_for_url(re.compile(r"/operations/\d+/$"))
    page.goto(sessions_url)
    mark(page)
    cleanup = watcher.run_queued(kind="sessions.cleanup")
    after = disk_bytes(volume_root())
    assert after < before - 3 * 900_000
    expect(gauge).to_have_attribute("title", f"{after:,} bytes")
    expect(gauge).to_have_text(humanize_bytes(after))
    live = page.locator("#sessions-table tbody tr[data-session]")
    expect(live).to_have_count(1)
    expect(live.first).to_have_attribute("data-session", "fresh-0")
    result = page.locator(f"#operation-{cleanup.pk} .result").inner_text()
    assert "{" not in result and "3" in result, result
    assert cleanup.progress_done <= cleanup.progress_total
    samples = StorageSample.objects.filter(domain="sessions", subject=sessions_volume_name()).count()
    dots = page.locator("figure.chart-box circle.dot")
    stale.check("sessions page, size-over-time chart", lambda: expect(dots).to_have_count(samples, timeout=SETTLE))
    audit = page.locator("section.card", has=page.locator("h2", has_text="Audit"))
    stale.check("sessions page, audit table", lambda: expect(audit).to_contain_text("sessions.cleanup", timeout=SETTLE))
    assert_not_reloaded(page)
    stale.after_reload(page)


def test_a_pod_mix_jobs_and_a_session_policy_through_the_pages_without_a_reload(
    logged_in_page,
    live_server,
    artifacts,
    docker_client,
    new_pod_id,  # noqa: F811 - the pods tests' fixture, imported above
    panel_paths,
):
    page, watcher, stale = logged_in_page, Watcher(logged_in_page), StaleParts()
    pod_id = new_pod_id()
    snapshots_root = panel_paths / "snapshots"

    pod_leg(page, watcher, stale, live_server, docker_client, pod_id, snapshots_root)
    page.screenshot(path=str(artifacts / "journey-pod-deprovisioned.png"), full_page=True)
    mixjobs_leg(page, watcher, stale, live_server)
    page.screenshot(path=str(artifacts / "journey-mixjobs-after-cleanup.png"), full_page=True)
    sessions_leg(page, watcher, stale, live_server)
    page.screenshot(path=str(artifacts / "journey-sessions-after-policy.png"), full_page=True)

    # No progress text ever said more done than its total.
    assert watcher.texts and not over_total(watcher.texts), watcher.texts

    # The overview: each card's bytes, and the sum held, are what is on disk now (the pod
    # holds only its snapshot: Docker has none of its volumes left).
    page.goto(f"{live_server.url}/")
    on_disk = {
        "Pods": disk_bytes(snapshots_root, "*.tar"),
        "Mix jobs": mix_disk_bytes(),
        "Separation sessions": disk_bytes(volume_root()),
    }
    for title, size in on_disk.items():
        card = page.locator("article.domain", has=page.locator("h2", has_text=title))
        assert card.locator("p.big").inner_text() == humanize_bytes(size), title
    held = page.locator(".headline.card .big").first.inner_text()
    assert held == humanize_bytes(sum(on_disk.values()))
    page.screenshot(path=str(artifacts / "journey-overview-after.png"), full_page=True)
    assert not [error for error in page.console_errors if "Content Security Policy" in error]
    stale.report()

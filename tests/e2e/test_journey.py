"""Issue #17's Done-when journey, through pages only, in Chromium: every status, button,
table and total an operation changes refreshes without a reload, no progress text ever
says done > total, and the overview's bytes equal what is on disk afterwards.

This file holds the volume leg (inspect a volume, remove the forbidden folder the leak
report names); the pod, mix-job and session-policy legs are still to come (see the report
of helper "pages3"). Work is queued by the pages and run by a worker thread once the page
is polling, as a qcluster worker would."""

import re
import threading
import time

import pytest

from apps.audit.models import Operation
from apps.audit.operations import run_operation
from apps.volumes.services import layout_preset_import
from controlpanel.formatting import humanize_bytes
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
    """Runs the newest queued operation like a worker, while the page polls; keeps every
    progress text the page showed on the way."""

    def __init__(self, page):
        self.page = page
        self.texts: set[str] = set()

    def run_queued(self, *, kind: str, delay: float = 1.0) -> Operation:
        operation = Operation.objects.filter(kind=kind, status="pending").latest("created_at")
        worker = threading.Thread(target=lambda: (time.sleep(delay), run_operation(operation.pk)), daemon=True)
        worker.start()
        box = self.page.locator(f"#operation-{operation.pk}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for text in self.page.locator(".progress-text").all_inner_texts():
                self.texts.add(text.strip())
            if box.get_attribute("data-status") in {"succeeded", "failed", "errored"}:
                break
            time.sleep(0.1)
        worker.join(timeout=10)
        operation.refresh_from_db()
        assert operation.status == "succeeded", operation.error
        return operation


@pytest.fixture
def local_world(tmp_path):
    return LocalWorld(tmp_path / "volumes" / "brain-go-brr-results")


def disk_bytes(root) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())


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

"""Any file back, in Chromium on the real dockerd: an operator opens the pod page, follows
Browse files, searches a name, restores the file beside the current one, and the page shows
the outcome without a reload; the page fits a phone and a laptop; a viewer gets no controls."""

import hashlib
import io
import tarfile
import threading
import time

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from playwright.sync_api import expect

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_operation
from apps.audit.roles import OPERATOR_GROUP, roles_sync
from apps.pods import services
from apps.pods.models import Snapshot, container_name
from tests.e2e.test_roles import log_in
from tests.e2e.world import OVERFLOW_JS
from tests.pods.conftest import new_pod_id, pods_settings, run_in  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = r"""
set -e
mkdir -p /workspace/proj/src
printf 'hello pod\n' > /workspace/proj/src/a.txt
printf 'other' > /workspace/proj/src/b.txt
printf 'long' > /workspace/proj/src/LONG_NAME
"""
# One word of 227 characters, no space or hyphen to break at: the name column must wrap it.
LONG_NAME = "averyverylongfilenamewithnospaceorhyphen" * 5 + "_theend.txt"
SCRIPT = SCRIPT.replace("LONG_NAME", LONG_NAME)


def file_in(docker_client, pod_id: str, path: str) -> bytes:
    stream, _ = docker_client.api.get_archive(container_name(pod_id), path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile(tar.getmembers()[0]).read()


def run_when_shown(page, operation: Operation) -> None:
    """Run the queued operation like a worker once the page shows its box polling."""
    expect(page.locator(f"#operation-{operation.pk}")).to_be_visible()

    def work():
        time.sleep(0.5)
        try:
            run_operation(operation.pk)
        finally:
            connection.close()

    threading.Thread(target=work, daemon=True).start()


def operator_on_a_restarted_pod(browser, live_server, docker_client, make_pod_id, django_user_model, changed: str):
    """A pod stopped once (its snapshot holds SCRIPT's files) and started again, `changed`
    (a path in /workspace/proj/src) rewritten since; an operator logged in at 1,400 px.
    Returns the pod id, the snapshot's number and the page."""
    pod_id = make_pod_id()
    services.pod_provision(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, SCRIPT)
    services.pod_stop(pod_id=pod_id, actor="test")
    services.pod_start(pod_id=pod_id, actor="test")
    run_in(docker_client, pod_id, f"printf 'changed' > /workspace/proj/src/{changed}")
    number = Snapshot.objects.get(pod__pod_id=pod_id, status=Snapshot.Status.COMPLETE).pk
    roles_sync()
    operator = django_user_model.objects.create_user(username="operator", password="pw-operator-123!", is_staff=True)
    operator.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log_in(page, live_server, "operator", "pw-operator-123!")
    return pod_id, number, page


def test_an_operator_browses_searches_and_restores_a_file_beside_without_a_reload(
    browser,
    live_server,
    docker_client,
    new_pod_id,  # noqa: F811 - the pods tests' fixture, imported above
    django_user_model,
    viewer_user,
):
    pod_id, number, page = operator_on_a_restarted_pod(
        browser, live_server, docker_client, new_pod_id, django_user_model, changed="a.txt"
    )
    page.goto(f"{live_server.url}/pods/{pod_id}/")
    page.click("a.browse-files")
    expect(page.locator("h1")).to_have_text(f"Files of snapshot #{number}")
    page.fill("#file-search", "a.txt")
    page.click("form[role=search] button")
    row = page.locator("tr[data-path='/workspace/proj/src/a.txt']")
    expect(row).to_contain_text("10 B")
    expect(row.locator("a", has_text="Download")).to_have_count(1)

    row.locator("a", has_text="Restore beside the current one").click()
    expect(page.locator("main")).to_contain_text(f"as /workspace/proj/src/a.txt.from-snapshot-{number}")
    expect(page.locator("main")).to_contain_text("1 file (10 B)")
    page.click("button:has-text('Restore as a.txt.from-snapshot')")
    expect(page.locator("#file-restores")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    operation = Operation.objects.get(kind=Kind.POD_RESTORE_PATH, target_id=pod_id)
    run_when_shown(page, operation)

    box = page.locator(f"#operation-{operation.pk}")
    expect(box).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(box).to_contain_text(f"as /workspace/proj/src/a.txt.from-snapshot-{number}: 1 file (10 B), read back")
    assert page.evaluate("window.notReloaded") is True
    restored = file_in(docker_client, pod_id, f"/workspace/proj/src/a.txt.from-snapshot-{number}")
    assert hashlib.sha256(restored).hexdigest() == hashlib.sha256(b"hello pod\n").hexdigest()
    assert file_in(docker_client, pod_id, "/workspace/proj/src/a.txt") == b"changed"

    # Asked again, the confirmation says why not, with no button: nothing is overwritten.
    page.goto(f"{live_server.url}/pods/{pod_id}/snapshots/{number}/files/restore/?path=/workspace/proj/src/a.txt")
    expect(page.locator("main .error")).to_contain_text("already exists in pod")
    expect(page.locator("button:has-text('Restore as')")).to_have_count(0)

    # The page fits a phone and a laptop, a long name and a search's full paths included; a
    # search that finds nothing is a sentence.
    for width, height in [(390, 844), (1400, 900)]:
        page.set_viewport_size({"width": width, "height": height})
        for query in ["", "&q=theend", "&q=no-such-name"]:
            page.goto(f"{live_server.url}/pods/{pod_id}/snapshots/{number}/files/?path=/workspace/proj/src{query}")
            scroll_width, client_width = page.evaluate(OVERFLOW_JS)
            assert scroll_width <= client_width, f"{scroll_width} px wide in a {client_width} px window ({query})"
        expect(page.locator("#snapshot-files")).to_contain_text("has a name holding “no-such-name”")
        expect(page.locator("#snapshot-files table")).to_have_count(0)
    page.context.close()

    # A viewer sees names and sizes, no download or restore control.
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    viewer = context.new_page()
    log_in(viewer, live_server, "viewer", "pw-viewer-123!")
    viewer.goto(f"{live_server.url}/pods/{pod_id}/")
    viewer.click("a.browse-files")
    viewer.goto(viewer.url + "?path=/workspace/proj/src")
    expect(viewer.locator("tr[data-path='/workspace/proj/src/a.txt']")).to_contain_text("10 B")
    expect(viewer.locator("#snapshot-files a", has_text="Download")).to_have_count(0)
    expect(viewer.locator("#snapshot-files a", has_text="Restore")).to_have_count(0)
    expect(viewer.locator("#snapshot-files")).to_contain_text("a.txt")
    context.close()


def test_an_operator_replaces_a_file_after_a_backup_and_the_page_shows_it_without_a_reload(
    browser,
    live_server,
    docker_client,
    new_pod_id,  # noqa: F811 - the pods tests' fixture, imported above
    django_user_model,
):
    pod_id, number, page = operator_on_a_restarted_pod(
        browser, live_server, docker_client, new_pod_id, django_user_model, changed="b.txt"
    )
    page.goto(f"{live_server.url}/pods/{pod_id}/snapshots/{number}/files/?path=/workspace/proj/src")
    page.locator("tr[data-path='/workspace/proj/src/b.txt'] a", has_text="Restore beside the current one").click()
    expect(page.locator("#alternative")).to_contain_text(f"the running pod {pod_id} is backed up first")
    replace = page.locator("#alternative button.danger")
    expect(replace).to_have_text("Replace the current one (backs it up first)")
    replace.click()
    expect(page.locator("#file-restores")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    operation = Operation.objects.get(kind=Kind.POD_RESTORE_PATH, target_id=pod_id)
    assert operation.params["replace"] is True
    run_when_shown(page, operation)

    box = page.locator(f"#operation-{operation.pk}")
    expect(box).to_have_attribute("data-status", "succeeded", timeout=60_000)
    backup = Snapshot.objects.get(pod__pod_id=pod_id, kind=Snapshot.Kind.BACKUP)
    expect(box).to_contain_text(f"is replaced by its copy from snapshot #{number}")
    expect(box).to_contain_text(f"the one it replaced is kept in backup snapshot #{backup.pk}")
    assert page.evaluate("window.notReloaded") is True
    assert file_in(docker_client, pod_id, "/workspace/proj/src/b.txt") == b"other"
    page.context.close()

"""Volume URLs that must be refused (issue #15, items 4 and 10): paths are normalised before
they are checked and stored; system folders and the panel's own data are refused with one
line in the service, the CLI and the admin form; a Modal volume that does not exist is
refused with one line wherever it can be named."""

import os

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.audit.models import Operation
from apps.volumes.backends import volume_url_clean
from apps.volumes.models import Inspection, Volume
from apps.volumes.services import volume_add
from controlpanel.errors import InvalidInput, NotFound
from tests.volumes.helpers import crosscheck_now, inspect_now

pytestmark = pytest.mark.django_db

SYSTEM_URLS = [
    "local:///",
    "local:///proc",
    "local:///srv/../etc",
    "local:////etc",
    "local:///sys",
    "local:///dev",
    "local:///etc",
    "local:///boot",
    "local:///run",
    "local:///usr/local",
    "local:///var/lib/docker",
    "local:///var/lib/docker/volumes/pinacle-vol-x-home/_data",
    "local:///tmp",
    "local:///home",
]


def _panel_urls(settings) -> list[str]:
    """The panel's own data under the test's roots (VAR_DIR, the snapshot store, mix jobs)."""
    return [
        f"local://{settings.VAR_DIR}",
        f"local://{settings.VAR_DIR}/",
        f"local://{settings.VAR_DIR / 'cache'}",
        f"local://{settings.VAR_DIR / 'volumes' / '..' / 'secret-key'}",
        f"local://{settings.SNAPSHOT_STORE_URL.removeprefix('file://')}",
        f"local://{settings.MIX_MEDIA_DIR}",
    ]


def _one_line_refusal(message: str) -> None:
    assert "refused" in message and "\n" not in message and len(message) < 600, message


@pytest.mark.parametrize("url", SYSTEM_URLS)
def test_system_folders_are_refused_by_the_service(url):
    with pytest.raises(InvalidInput) as caught:
        volume_add(name="sys", url=url, actor="test")
    _one_line_refusal(str(caught.value))
    assert not Volume.objects.exists()


def test_the_panel_s_own_data_is_refused_but_var_volumes_is_allowed(settings):
    for url in _panel_urls(settings):
        with pytest.raises(InvalidInput) as caught:
            volume_add(name="own", url=url, actor="test")
        _one_line_refusal(str(caught.value))
    assert not Volume.objects.exists()
    # VAR_DIR/volumes/ is where local volumes live by default (the sessions volume too).
    volume = volume_add(name="home", url=f"local://{settings.VAR_DIR / 'volumes' / 'results'}", actor="test")
    assert volume.url == f"local://{settings.VAR_DIR / 'volumes' / 'results'}"


def test_a_symlink_that_leads_to_a_system_folder_is_refused(tmp_path):
    link = tmp_path / "volumes" / "looks-harmless"
    link.parent.mkdir(parents=True)
    os.symlink("/etc", link)
    with pytest.raises(InvalidInput, match="through a symlink"):
        volume_add(name="link", url=f"local://{link}", actor="test")


def test_paths_are_stored_normalised(tmp_path):
    written = f"local://{tmp_path}/volumes/./other/../results/"
    volume = volume_add(name="results", url=written, actor="test")
    assert volume.url == f"local://{tmp_path}/volumes/results"
    assert volume_url_clean(f"local://{tmp_path}//volumes///results") == volume.url


@pytest.mark.parametrize("url", ["local:///proc", "local:///srv/../etc", "local:///"])
def test_the_cli_refuses_system_folders_with_one_line(url):
    with pytest.raises(CommandError) as caught:
        call_command("volumes", "add", "sys", url)
    _one_line_refusal(str(caught.value))
    assert not Volume.objects.exists()


def _admin_add(staff_client, url: str):
    return staff_client.post(
        reverse("admin:volumes_volume_add"),
        {"name": "viaadmin", "url": url, "folder_depth": 3, "rules-TOTAL_FORMS": 0, "rules-INITIAL_FORMS": 0},
    )


@pytest.mark.parametrize("url", ["local:///proc", "local:///srv/../etc", "local:///"])
def test_the_admin_form_refuses_system_folders(staff_client, url):
    response = _admin_add(staff_client, url)
    assert response.status_code == 200 and "refused" in response.content.decode()
    assert not Volume.objects.exists()


def test_the_admin_form_stores_the_normalised_path(staff_client, tmp_path):
    response = _admin_add(staff_client, f"local://{tmp_path}/volumes/x/../results/")
    assert response.status_code == 302
    assert Volume.objects.get(name="viaadmin").url == f"local://{tmp_path}/volumes/results"


def test_a_row_written_before_the_rule_is_refused_when_inspected():
    """A URL stored un-normalised by an older panel: the inspection refuses it, reads nothing."""
    volume = Volume.objects.create(name="old", url="local:///srv/../etc")
    with pytest.raises(InvalidInput, match="/etc is the system's configuration"):
        inspect_now(volume)
    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.FAILED and "\n" not in operation.error
    assert not Inspection.objects.exists()


def test_a_sessions_volume_in_a_system_folder_is_refused(settings):
    from tests.separations.helpers import sync_now

    settings.SESSIONS_VOLUME_URL = "local:///proc"
    with pytest.raises(InvalidInput, match="/proc is the kernel's process table"):
        sync_now()


def test_a_modal_mount_in_a_system_folder_is_refused():
    with pytest.raises(InvalidInput, match="refused"):
        volume_url_clean("modal://music-split-jobs-data?mount=/proc/1")


# -- item 10: a Modal volume that does not exist ------------------------------------------------

MISSING = "modal://no-such-volume?environment=main"


def _one_line_not_found(message: str) -> None:
    assert "no-such-volume" in message and "not found" in message and "\n" not in message, message


def test_registering_a_missing_modal_volume_is_refused_by_the_service(modal_server):
    with pytest.raises(NotFound) as caught:
        volume_add(name="typo", url=MISSING, actor="test")
    _one_line_not_found(str(caught.value))
    assert not Volume.objects.exists()


def test_registering_a_missing_modal_volume_is_refused_by_the_cli(modal_server):
    with pytest.raises(CommandError) as caught:
        call_command("volumes", "add", "typo", MISSING)
    _one_line_not_found(str(caught.value))
    assert not Volume.objects.exists()


def test_registering_a_missing_modal_volume_is_refused_by_the_admin(modal_server, staff_client):
    response = _admin_add(staff_client, MISSING)
    assert response.status_code == 200
    assert "no-such-volume" in response.content.decode() and "not found" in response.content.decode()
    assert not Volume.objects.exists()


def test_an_existing_modal_volume_registers(modal_server):
    modal_server.create_volume("ml-results")
    volume = volume_add(name="ml-results", url="modal://ml-results?environment=main", actor="test")
    assert volume.url == "modal://ml-results?environment=main"


def test_a_modal_volume_deleted_after_registration_fails_inspect_and_crosscheck_with_one_line(modal_server):
    volume = Volume.objects.create(name="was-there", url=MISSING)
    with pytest.raises(NotFound) as caught:
        inspect_now(volume)
    _one_line_not_found(str(caught.value))
    with pytest.raises(NotFound) as caught:
        crosscheck_now(volume, folder="cache", s3_url="s3://bucket/cache")
    _one_line_not_found(str(caught.value))
    assert {op.status for op in Operation.objects.all()} == {Operation.Status.FAILED}


def test_a_missing_modal_sessions_volume_is_one_line(modal_server, settings):
    from apps.separations.services import cleanup_plan, policy_get, sessions_backend
    from controlpanel.errors import Unreachable
    from tests.separations.helpers import sync_now

    settings.SESSIONS_VOLUME_URL = MISSING
    with pytest.raises(Unreachable) as caught:
        sync_now()
    _one_line_not_found(str(caught.value))
    with pytest.raises(Unreachable) as caught:
        cleanup_plan(backend=sessions_backend(), policy=policy_get("exit"))
    _one_line_not_found(str(caught.value))

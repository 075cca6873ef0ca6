"""Issue #17 item 9 on the pages: the fix is offered from the volume page and the leak report
for a `folder_absent` finding, confirmed on the one confirmation page (live for an operator,
disabled with the reason for a viewer), and queued as an operation. Also item 10: an admin
message says a volume's name as typed."""

import pytest
from django.urls import reverse

from apps.audit.models import Operation
from apps.audit.operations import run_operation
from apps.volumes.models import Volume
from tests.volumes.test_remove_folder import STRAY, forbidden_world

pytestmark = pytest.mark.django_db

CONFIRM = "volumes:remove-folder"


def confirm_url(volume, path="results"):
    return f"{reverse(CONFIRM, args=[volume.name])}?path={path}"


def test_the_volume_page_and_the_leak_report_offer_the_removal(staff_client, local_world):
    volume, _ = forbidden_world(local_world)
    page = staff_client.get(reverse("volumes:detail", args=[volume.name])).text
    assert f'href="{confirm_url(volume)}">Remove this folder</a>' in page
    leaks = staff_client.get(reverse("dashboard:leaks")).text
    assert f'href="{confirm_url(volume)}">Remove this folder</a>' in leaks


def test_confirming_queues_the_removal_and_the_page_then_has_no_finding(staff_client, local_world, run_on_commit):
    volume, _ = forbidden_world(local_world)
    preview = staff_client.get(confirm_url(volume))
    assert preview.status_code == 200
    for path in STRAY:
        assert path in preview.text
    assert '<button type="submit" class="danger">Remove this folder</button>' in preview.text
    assert '<input type="hidden" name="path" value="results">' in preview.text
    run = reverse("volumes:remove-folder-run", args=[volume.name])
    # Without the confirm field nothing is queued: back to the preview.
    response = staff_client.post(run, {"path": "results"})
    assert response.status_code == 302 and response["Location"] == confirm_url(volume)
    assert not Operation.objects.filter(kind="volume.remove-folder").exists()
    with run_on_commit() as callbacks:
        response = staff_client.post(run, {"path": "results", "confirm": "yes"})
    assert response["Location"] == reverse("volumes:detail", args=[volume.name]) and len(callbacks) == 1
    operation = Operation.objects.get(kind="volume.remove-folder")
    assert operation.target_id == f"{volume.name}:results"
    run_operation(operation.pk)
    assert not (local_world.root / "results").exists()
    page = staff_client.get(reverse("volumes:detail", args=[volume.name])).text
    assert "Removed results/ from brain-go-brr-results: 3 files, 1.0 KiB" in page  # recent work on the volume
    assert "Remove this folder" not in page and "should not exist" not in page
    body = staff_client.get(reverse("volumes:detail", args=[volume.name]), {"part": "body"}).text
    assert "Every layout rule holds." in body


def test_a_viewer_sees_the_preview_with_a_disabled_button_and_cannot_post(viewer_client, local_world):
    volume, _ = forbidden_world(local_world)
    page = viewer_client.get(reverse("volumes:detail", args=[volume.name])).text
    assert ">Preview the removal</a>" in page and ">Remove this folder</a>" not in page
    preview = viewer_client.get(confirm_url(volume))
    assert preview.status_code == 200 and '<button type="button" disabled' in preview.text
    assert 'name="confirm"' not in preview.text
    run = reverse("volumes:remove-folder-run", args=[volume.name])
    assert viewer_client.post(run, {"path": "results", "confirm": "yes"}).status_code == 403
    assert (local_world.root / "results").exists() and not Operation.objects.filter(kind="volume.remove-folder")


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [("", 400, "refusing to remove the root"), ("../etc", 400, "is not valid"), ("train", 400, "no enabled")],
)
def test_a_refused_folder_is_a_clear_page_with_no_button(staff_client, local_world, path, status, words):
    volume, _ = forbidden_world(local_world)
    response = staff_client.get(confirm_url(volume, path))
    assert response.status_code == status and words in response.text
    assert 'class="danger"' not in response.text
    run = reverse("volumes:remove-folder-run", args=[volume.name])
    response = staff_client.post(run, {"path": path, "confirm": "yes"}, follow=True)
    assert words in response.text and not Operation.objects.filter(kind="volume.remove-folder").exists()


def test_an_unknown_volume_is_a_404(staff_client):
    assert staff_client.get(reverse(CONFIRM, args=["nope"]), {"path": "x"}).status_code == 404
    assert staff_client.post(reverse("volumes:remove-folder-run", args=["nope"]), {"path": "x"}).status_code == 404


def test_an_admin_message_says_the_volume_name_as_typed(staff_client, local_world):
    volume = Volume.objects.create(name="music-split-jobs-data", url=local_world.url)
    response = staff_client.post(
        reverse("admin:volumes_volume_changelist"),
        {"action": "import_s3_mount_preset", "_selected_action": [volume.pk]},
        follow=True,
    )
    assert "Volume music-split-jobs-data: " in response.text and "Music-split-jobs-data" not in response.text

"""Thin tests for the pages, the buttons, the overview section and the admin."""

import pytest
from django.urls import reverse

from apps.audit.models import Operation
from apps.audit.services import storage_sample_record
from apps.volumes import selectors
from apps.volumes.models import CrossCheck, Inspection, LayoutRule, Volume
from apps.volumes.services import layout_preset_import, volume_inspect
from tests.volumes.helpers import ModalWorld, inspect_now, lay_out_s3_mount_plan

pytestmark = pytest.mark.django_db


def inspected_volume(world, *, stray_bytes: int = 0) -> Volume:
    lay_out_s3_mount_plan(world)
    if stray_bytes:
        world.put("results/results/train/big.bin", stray_bytes)
    volume = world.volume(purpose="training outputs")
    layout_preset_import(volume=volume, preset="s3-mount", actor="test")
    volume_inspect(volume=volume, actor="test")
    return volume


def test_list_page_shows_latest_bytes_findings_and_cost(staff_client, local_world, django_assert_num_queries):
    inspected_volume(local_world, stray_bytes=700)
    Volume.objects.create(name="never-inspected", url="local:///nowhere")
    # 1 session, 2 user, 3 volumes with their latest inspection, 4 finding counts by severity.
    with django_assert_num_queries(4):
        response = staff_client.get(reverse("volumes:list"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "brain-go-brr-results" in page and "training outputs" in page
    assert "not inspected yet" in page and "badge-error" in page


def test_list_page_says_when_the_last_inspection_failed(staff_client, tmp_path):
    from controlpanel.errors import NotFound

    volume = Volume.objects.create(name="gone", url=f"local://{tmp_path / 'gone'}")
    with pytest.raises(NotFound):
        inspect_now(volume)
    page = staff_client.get(reverse("volumes:list")).content.decode()
    assert f"Last inspection failed: volume folder {tmp_path / 'gone'} does not exist" in page


def test_detail_page_shows_folders_largest_files_findings_and_history(
    staff_client, local_world, django_assert_num_queries
):
    volume = inspected_volume(local_world, stray_bytes=700)
    local_world.put("train/run-2/metrics.json", 4000)
    volume_inspect(volume=volume, actor="test")
    # 1 session, 2 user, 3 volume, 4 recent operations, 5 history rows, 6 latest inspection
    # and 7 its findings, 8 the folders' holds (one query for every row), 9 rules, 10 chart
    # samples, 11 cross-checks, 12 audit events.
    with django_assert_num_queries(12):
        response = staff_client.get(reverse("volumes:detail", args=[volume.name]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "checkpoints/run-1/model.pt" in page  # largest files
    assert "results/ should not exist" in page  # finding
    assert "What grew or shrank" in page and "train/" in page
    assert "<polyline" in page  # two samples: a line
    assert "2 of 2 rules hold" not in page and "1 of 2 rules hold" in page
    assert f'action="{reverse("volumes:inspect", args=[volume.name])}"' in page


def test_inspect_button_runs_an_operation_and_the_page_shows_it(staff_client, local_world, q_sync, run_on_commit):
    local_world.put("train/a.json", 5)
    volume = local_world.volume()
    with run_on_commit(execute=True):
        response = staff_client.post(reverse("volumes:inspect", args=[volume.name]))
    assert response.status_code == 302 and response.url == reverse("volumes:detail", args=[volume.name])
    operation = Operation.objects.get(kind="volume.inspect")
    assert operation.status == Operation.Status.SUCCEEDED
    assert Inspection.objects.get(volume=volume).total_bytes == 5
    page = staff_client.get(response.url).content.decode()
    assert f'id="operation-{operation.pk}"' in page  # the progress include


def test_an_unreachable_local_volume_is_a_clear_error_not_a_500(staff_client, tmp_path, q_sync, run_on_commit):
    volume = Volume.objects.create(name="gone", url=f"local://{tmp_path / 'gone'}")
    with run_on_commit(execute=True):
        staff_client.post(reverse("volumes:inspect", args=[volume.name]))
    response = staff_client.get(reverse("volumes:detail", args=[volume.name]))
    assert response.status_code == 200
    assert f"The last inspection failed: volume folder {tmp_path / 'gone'} does not exist" in response.content.decode()


def test_modal_down_is_a_clear_error_on_the_page(staff_client, modal_server, q_sync, run_on_commit):
    world = ModalWorld(modal_server)
    world.put("train/a.json", 5)
    volume = world.volume()
    modal_server.stop()
    with run_on_commit(execute=True):
        staff_client.post(reverse("volumes:inspect", args=[volume.name]))
    response = staff_client.get(reverse("volumes:detail", args=[volume.name]))
    assert response.status_code == 200
    assert "The last inspection failed: Modal volume" in response.content.decode()
    assert "unreachable" in response.content.decode()


def test_a_malformed_url_is_shown_on_the_page(staff_client):
    volume = Volume.objects.create(name="typo", url="modall://x")
    response = staff_client.get(reverse("volumes:detail", args=[volume.name]))
    assert response.status_code == 200 and "is not supported" in response.content.decode()


def test_crosscheck_form_runs_and_shows_the_result(
    staff_client, local_world, s3_server, s3_bucket, q_sync, run_on_commit
):
    local_world.put("cache/tusz/train/a.npz", 3)
    s3_server.client().put_object(Bucket=s3_bucket, Key="cache/tusz/train/b.npz", Body=b"12")
    volume = local_world.volume()
    with run_on_commit(execute=True):
        response = staff_client.post(
            reverse("volumes:crosscheck", args=[volume.name]),
            {"folder": "cache/tusz/train", "s3_url": f"s3://{s3_bucket}/cache/tusz/train"},
        )
    assert response.status_code == 302
    check = CrossCheck.objects.get()
    assert (check.only_on_volume, check.only_on_s3) == (1, 1)
    page = staff_client.get(response.url).content.decode()
    assert "only on the volume: a.npz" in page and "only on S3: b.npz" in page


def test_crosscheck_with_a_bad_url_says_so_and_queues_nothing(staff_client, local_world):
    volume = local_world.volume()
    response = staff_client.post(
        reverse("volumes:crosscheck", args=[volume.name]), {"folder": "cache", "s3_url": "ftp://x"}, follow=True
    )
    assert "is not valid: use s3://bucket/prefix" in response.content.decode()
    assert not Operation.objects.exists()


def test_a_viewer_can_read_but_not_inspect(viewer_client, local_world):
    volume = local_world.volume()
    assert viewer_client.get(reverse("volumes:detail", args=[volume.name])).status_code == 200
    assert viewer_client.post(reverse("volumes:inspect", args=[volume.name])).status_code == 403
    assert "Inspect now" not in viewer_client.get(reverse("volumes:detail", args=[volume.name])).content.decode()
    assert not Operation.objects.exists()


def test_buttons_refuse_get_and_unknown_volumes(staff_client, local_world):
    volume = local_world.volume()
    assert staff_client.get(reverse("volumes:inspect", args=[volume.name])).status_code == 405
    assert staff_client.post(reverse("volumes:inspect", args=["no-such-volume"])).status_code == 404
    assert staff_client.get(reverse("volumes:detail", args=["..."])).status_code == 404
    assert not Operation.objects.exists()


def test_overview_section_counts_findings_and_lists_error_findings_as_leaks(local_world, django_assert_max_num_queries):
    inspected_volume(local_world, stray_bytes=700)
    with django_assert_max_num_queries(3):  # volumes+latest, finding counts, error findings
        section = selectors.overview_section()
    assert section.bytes == Inspection.objects.get().total_bytes
    assert ("findings", "1 error / 0 warning / 0 info") in section.rows
    [leak] = section.leaks
    assert leak.bytes == 700 and leak.domain == "volumes"
    assert "results/ should not exist" in leak.label
    # A folder that must not exist has its own fix (issue #17 item 9): remove it, previewed first.
    assert leak.fix_url == reverse("volumes:remove-folder", args=["brain-go-brr-results"]) + "?path=results"


def test_overview_page_renders_the_section(staff_client, local_world):
    inspected_volume(local_world, stray_bytes=700)
    page = staff_client.get(reverse("dashboard:overview")).content.decode()
    assert "Volumes" in page and "results/ should not exist" in page  # a local:// volume is not Modal


def test_history_chart_reads_the_volume_samples(staff_client, local_world):
    volume = local_world.volume()
    storage_sample_record(domain="volumes", subject=volume.name, total_bytes=10, total_files=1)
    storage_sample_record(domain="volumes", subject=volume.name, total_bytes=30, total_files=2)
    assert "<polyline" in staff_client.get(reverse("volumes:detail", args=[volume.name])).content.decode()


# -- admin ----------------------------------------------------------------------------------


def test_admin_refuses_a_bad_url_and_imports_a_preset(staff_client, local_world):
    response = staff_client.post(
        reverse("admin:volumes_volume_add"),
        {
            "name": "bad",
            "url": "ftp://x",
            "folder_depth": 3,
            "rules-TOTAL_FORMS": 0,
            "rules-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200 and "is not supported" in response.content.decode()
    assert not Volume.objects.filter(name="bad").exists()

    volume = local_world.volume()
    response = staff_client.post(
        reverse("admin:volumes_volume_changelist"),
        {"action": "import_volume_cache_preset", "_selected_action": [volume.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert LayoutRule.objects.filter(volume=volume, preset="volume-cache").count() == 7


def test_admin_rejects_a_count_rule_without_a_count(staff_client, local_world):
    volume = local_world.volume()
    response = staff_client.post(
        reverse("admin:volumes_layoutrule_add"),
        {"volume": volume.pk, "kind": "file_count", "path": "x/*.npz", "count_mode": "exactly", "severity": "error"},
    )
    assert response.status_code == 200 and "needs a count" in response.content.decode()
    assert not LayoutRule.objects.exists()


def test_admin_edits_rules_inline_on_the_volume(staff_client, local_world):
    volume = local_world.volume()
    form = {
        "name": volume.name,
        "url": volume.url,
        "folder_depth": 2,
        "rules-TOTAL_FORMS": 1,
        "rules-INITIAL_FORMS": 0,
        "rules-0-kind": "file_count",
        "rules-0-path": "cache/tusz/train/*.npz",
        "rules-0-count_mode": "at_least",
        "rules-0-severity": "warning",
        "rules-0-enabled": "on",
    }
    change_url = reverse("admin:volumes_volume_change", args=[volume.pk])
    response = staff_client.post(change_url, form)
    assert response.status_code == 200 and "needs a count" in response.content.decode()
    assert not LayoutRule.objects.exists()

    response = staff_client.post(change_url, {**form, "rules-0-count": 10})
    assert response.status_code == 302
    rule = LayoutRule.objects.get()
    assert (rule.volume, rule.count, rule.severity, rule.preset) == (volume, 10, "warning", "")

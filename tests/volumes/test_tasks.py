"""The schedule, busy volumes, the price by backend on Modal, and the benchmark's smoke run."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import Kind, TargetType
from apps.audit.operations import SCHEDULE_TASK, Schedule, kind_get, run_scheduled
from apps.audit.schedules import collect_schedules
from apps.audit.services import operation_create
from apps.volumes.models import Inspection, Volume
from tests.volumes.helpers import LocalWorld, ModalWorld, inspect_now

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_the_schedule_inspects_every_volume_and_one_failure_stops_no_other(
    tmp_path, q_sync, django_capture_on_commit_callbacks
):
    schedule = Schedule("inspect volumes", 360, "schedule:inspect-volumes")
    assert kind_get(Kind.VOLUMES_INSPECT_ALL).schedule == schedule
    assert ("inspect volumes", SCHEDULE_TASK, "'volumes.inspect-all'", 360) in collect_schedules()
    good = LocalWorld(tmp_path / "good", name="good")
    good.put("a/b.bin", 10)
    good.volume()
    Volume.objects.create(name="gone", url=f"local://{tmp_path / 'gone'}")

    with django_capture_on_commit_callbacks(execute=True):
        assert run_scheduled(Kind.VOLUMES_INSPECT_ALL) == "succeeded: 2 inspections queued."

    statuses = dict(Operation.objects.filter(kind=Kind.VOLUME_INSPECT).values_list("target_id", "status"))
    assert statuses == {"good": "succeeded", "gone": "failed"}
    assert Inspection.objects.get().volume.name == "good"
    assert Operation.objects.get(target_id="good").actor_name == "schedule:inspect-volumes"
    round_ = Operation.objects.get(kind=Kind.VOLUMES_INSPECT_ALL)
    assert (round_.target_id, round_.status, round_.progress_done) == ("all", "succeeded", 2)
    assert AuditEvent.objects.get(action="volumes.inspect-all").actor_name == "schedule:inspect-volumes"


def test_the_schedule_skips_a_volume_already_being_inspected(tmp_path, q_sync, django_capture_on_commit_callbacks):
    for name in ("busy", "idle"):
        LocalWorld(tmp_path / name, name=name).volume()
    operation_create(kind=Kind.VOLUME_INSPECT, target_type=TargetType.VOLUME, target_id="busy", actor="someone")

    with django_capture_on_commit_callbacks(execute=True):
        result = run_scheduled(Kind.VOLUMES_INSPECT_ALL)

    assert result == "succeeded: 1 inspection queued, 1 volume skipped (already being inspected)."
    assert Inspection.objects.get().volume.name == "idle"
    assert Operation.objects.filter(kind=Kind.VOLUME_INSPECT, target_id="busy").count() == 1


def test_a_second_inspection_while_one_is_pending_is_refused_with_a_message(staff_client, local_world):
    volume = local_world.volume()
    operation_create(kind="volume.inspect", target_type=TargetType.VOLUME, target_id=volume.name, actor="someone")
    response = staff_client.post(reverse("volumes:inspect", args=[volume.name]), follow=True)
    assert "already has volume.inspect in progress" in response.content.decode()
    assert Operation.objects.count() == 1


def test_a_modal_volume_is_priced_at_the_modal_rate(modal_server, settings):
    settings.PRICE_MODAL_VOLUME_GB_MONTH = 0.15
    world = ModalWorld(modal_server)
    world.put("cache/tusz/train/big.npz", 450 * 1000**3)  # the fake stores only the size
    inspection = inspect_now(world.volume())
    assert inspection.total_bytes == 450 * 1000**3
    assert inspection.monthly_cost == 67.5
    operation = Operation.objects.get(kind="volume.inspect")
    assert (operation.progress_done, operation.progress_unit) == (4, "entries")  # 3 folders and a file


def test_the_benchmark_runs_standalone_on_a_small_tree():
    done = subprocess.run(
        [sys.executable, "bench/inspect.py", "--files", "300", "--folders", "10", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # the root, 10 group folders, 10 folders and 300 files
    assert "tree: 300 files, 20 folders" in done.stdout and "find | wc -l: 321 entries" in done.stdout
    assert "ratio:" in done.stdout

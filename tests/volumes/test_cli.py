"""manage.py volumes add | preset | inspect [--json] | crosscheck [--json]: one line on errors."""

import json

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.volumes.models import LayoutRule, Volume
from tests.volumes.helpers import lay_out_volume_cache_plan

pytestmark = pytest.mark.django_db


def test_add_preset_and_inspect_as_json(local_world, capsys):
    lay_out_volume_cache_plan(local_world, train=4666)
    local_world.put("results/results/x.bin", 9)
    call_command("volumes", "add", "brain-go-brr-results", local_world.url, "--purpose", "ML results")
    assert Volume.objects.get(name="brain-go-brr-results").purpose == "ML results"
    assert AuditEvent.objects.filter(action="volume.add").exists()
    call_command("volumes", "preset", "brain-go-brr-results", "volume-cache")
    assert "7 rules from the volume-cache preset" in capsys.readouterr().out

    call_command("volumes", "inspect", "brain-go-brr-results", "--json")
    report = json.loads(capsys.readouterr().out)

    assert report["total_files"] == 4666 + 1832 + 2 + 6 + 1
    assert report["total_bytes"] > 0
    assert sorted((f["severity"], f["message"].split(":")[0]) for f in report["findings"]) == [
        ("error", "cache/tusz/train/*.npz"),
        ("error", "results/ should not exist"),
    ]


def test_inspect_prints_a_summary(local_world, capsys):
    local_world.put("a/b.txt", 3)
    call_command("volumes", "add", "v1", local_world.url)
    capsys.readouterr()
    call_command("volumes", "inspect", "v1")
    assert "v1: 3 bytes in 1 files" in capsys.readouterr().out


def test_crosscheck_as_json(local_world, s3_server, s3_bucket, capsys):
    local_world.put("cache/a.npz", 3)
    s3_server.client().put_object(Bucket=s3_bucket, Key="cache/a.npz", Body=b"123")
    call_command("volumes", "add", "v1", local_world.url)
    capsys.readouterr()
    call_command("volumes", "crosscheck", "v1", "cache", f"s3://{s3_bucket}/cache", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["in_sync"] and report["matched_files"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x", "ftp://nowhere"], "is not supported"),
        (["add", "../x", "local:///tmp"], "volume name"),
        (["add", "x", "local://relative"], "needs an absolute path"),
        (["inspect", "unknown"], "is not registered"),
        (["preset", "unknown", "s3-mount"], "is not registered"),
    ],
)
def test_bad_input_is_one_line_and_touches_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("volumes", *args)
    assert not Volume.objects.exists() and not LayoutRule.objects.exists()


def test_adding_twice_is_refused(local_world):
    call_command("volumes", "add", "v1", local_world.url)
    with pytest.raises(CommandError, match="already registered"):
        call_command("volumes", "add", "v1", local_world.url)


def test_inspecting_a_missing_folder_exits_non_zero_with_one_line(tmp_path):
    call_command("volumes", "add", "gone", f"local://{tmp_path / 'gone'}")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("volumes", "inspect", "gone")

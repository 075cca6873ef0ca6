"""`manage.py pods ...`: synchronous, one clear line and a non-zero exit on failure."""

import json
import os
import subprocess
import sys
import uuid
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import Operation
from apps.pods.models import Pod
from tests.pods.conftest import pod_volumes
from tests.pods.test_verify import flip_a_byte, pod_row, stored_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]


def pods(*args) -> str:
    out = StringIO()
    call_command("pods", *args, stdout=out)
    return out.getvalue()


def test_cli_runs_the_whole_life_cycle_and_shows_json(docker_client, new_pod_id):
    pod_id = new_pod_id()
    pods("provision", pod_id)
    shown = json.loads(pods("show", pod_id, "--json"))
    assert shown["pod_id"] == pod_id and shown["status"] == "running" and shown["container_id"]
    assert len(shown["volumes"]) == 8
    assert {"name", "docker_name", "exists"} <= set(shown["volumes"][0])
    assert all(v["exists"] for v in shown["volumes"])
    assert shown["last_snapshot"] is None

    pods("stop", pod_id)
    shown = json.loads(pods("show", pod_id, "--json"))
    assert shown["status"] == "stopped" and shown["container_id"] is None
    assert shown["last_snapshot"]["status"] == "complete" and shown["last_snapshot"]["total_bytes"] > 0
    assert not any(v["exists"] for v in shown["volumes"])
    assert pod_volumes(docker_client, pod_id) == []

    listed = json.loads(pods("list", "--json"))
    assert [row["pod_id"] for row in listed] == [pod_id]
    assert listed[0]["last_snapshot"]["status"] == "complete"
    assert pod_id in pods("list")

    pods("start", pod_id)
    assert len(pod_volumes(docker_client, pod_id)) == 8
    pods("delete", pod_id)
    assert Pod.objects.get(pod_id=pod_id).status == "deleted"
    assert pod_volumes(docker_client, pod_id) == []
    assert "local:" in pods("reconcile")
    assert "would remove" in pods("sweep-orphans", "--dry-run")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stop", "nope"], "pod 'nope' does not exist"),
        (["stop", "../etc"], "pod id '../etc' is not valid"),
        (["show", "a/b"], "pod id 'a/b' is not valid"),
        (["provision", "x", "--host", "mars"], "Docker host 'mars' does not exist"),
    ],
)
def test_cli_bad_input_is_one_clear_line(pods_settings, args, message):
    with pytest.raises(CommandError, match=message):
        pods(*args)
    assert Pod.objects.count() == 0


def test_cli_illegal_transition_fails_with_its_reason(docker_client, new_pod_id):
    pod_id = new_pod_id()
    pods("provision", pod_id)
    with pytest.raises(CommandError, match="is running; it cannot be started now"):
        pods("start", pod_id)


@pytest.mark.postgres
def test_two_concurrent_stops_make_one_snapshot_on_postgresql(postgres_url, docker_client, new_pod_id, tmp_path):
    """Two `manage.py pods stop` processes race on PostgreSQL: one snapshot, volumes gone once."""
    database = f"pods_race_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path / "var"),
        "SNAPSHOT_STORE_URL": f"file://{tmp_path / 'snapshots'}",
        "POD_IMAGE": "pinacle-base:test",
        "POD_COMMAND": "/bin/sh",
        "POD_STOP_TIMEOUT_SECONDS": "0",
        "REDIS_URL": "",
    }

    def manage(*args) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    try:
        assert manage("migrate", "--noinput").wait(timeout=120) == 0
        pod_id = new_pod_id()
        assert manage("pods", "provision", pod_id).wait(timeout=60) == 0
        racers = [manage("pods", "stop", pod_id), manage("pods", "stop", pod_id)]
        outcomes = [(r.wait(timeout=120), r.stderr.read().decode()) for r in racers]

        codes = sorted(code for code, _ in outcomes)
        assert codes[0] == 0 and codes[1] != 0, outcomes
        loser = next(err for code, err in outcomes if code != 0)
        assert "already has pod.stop in progress" in loser or "is stopped" in loser, loser
        with psycopg.connect(url) as conn:
            snapshots = conn.execute(
                "SELECT s.status FROM pods_snapshot s JOIN pods_pod p ON p.id = s.pod_id WHERE p.pod_id = %s",
                [pod_id],
            ).fetchall()
            status = conn.execute("SELECT status FROM pods_pod WHERE pod_id = %s", [pod_id]).fetchone()[0]
        assert snapshots == [("complete",)]
        assert status == "stopped"
        assert pod_volumes(docker_client, pod_id) == []
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_cli_verify_and_drill_a_pod_say_one_sentence_or_json(docker_client, new_pod_id):
    pod_id = new_pod_id()
    pods("provision", pod_id)
    pods("stop", pod_id)
    snapshot = Pod.objects.get(pod_id=pod_id).snapshots.get()

    said = pods("verify", pod_id)

    assert said.count("\n") == 1  # one sentence, one line
    assert said.startswith("1 snapshot re-read (") and said.strip().endswith("every object matches its manifest.")
    drill = json.loads(pods("drill", pod_id, "--json"))
    operation = Operation.objects.get(pk=drill["operation"])
    assert (drill["ok"], drill["kind"], drill["pod_id"]) == (True, "pods.drill", pod_id)
    assert drill["sentence"].startswith(f"Snapshot #{snapshot.pk} of pod {pod_id} restored into temporary volumes")
    assert drill["result"]["files"] > 0 and operation.status == Operation.Status.SUCCEEDED
    assert operation.actor_name.startswith("cli:")
    assert Pod.objects.get(pod_id=pod_id).proven_by == f"restore drill of snapshot #{snapshot.pk}"


def test_cli_verify_and_drill_fail_with_the_panels_sentence(new_pod_id, panel_paths):
    pod = pod_row(new_pod_id())
    with pytest.raises(CommandError, match=f"pod '{pod.pod_id}' has no complete snapshot to drill"):
        pods("drill", pod.pod_id)
    with pytest.raises(CommandError, match="^No complete snapshot to verify.$"):
        pods("verify", pod.pod_id)
    with pytest.raises(CommandError, match="pod 'nope' does not exist"):
        pods("verify", "nope")
    snapshot = stored_snapshot(pod)
    flip_a_byte(snapshot, panel_paths)
    out = StringIO()

    with pytest.raises(CommandError, match=f"1 FAILED verification \\(#{snapshot.pk}: "):
        call_command("pods", "verify", pod.pod_id, "--json", stdout=out)

    answer = json.loads(out.getvalue())
    assert answer["ok"] is False and list(answer["result"]["failed"]) == [str(snapshot.pk)]
    assert Operation.objects.get(pk=answer["operation"]).kind == "pods.verify"

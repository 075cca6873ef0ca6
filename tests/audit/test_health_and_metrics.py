"""/healthz answers in time whatever hangs and says which part failed; /metrics speaks
Prometheus behind a Bearer token; LOG_FORMAT=json tags every line of an operation."""

import io
import json
import logging
import re
import time

import pytest
from django.utils import timezone

from apps.audit import health
from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.separations.models import SeparationSession
from apps.separations.services.scan import sessions_volume_name
from controlpanel.logs import JsonFormatter, OperationFilter

pytestmark = pytest.mark.django_db


@pytest.fixture
def extra_checks():
    saved = dict(health._CHECKS)
    yield health.register_health
    health._CHECKS.clear()
    health._CHECKS.update(saved)


def test_healthz_is_open_to_monitors_and_lists_each_check(client):
    response = client.get("/healthz")
    report = response.json()
    assert set(report) == {"status", "checks"}
    assert {"database", "cache and broker", "worker"} <= set(report["checks"])
    assert report["checks"]["database"] == {"ok": True, "message": "sqlite answers"}
    # No worker runs in this test: the report fails, with the reason, and the status is 503.
    assert report["checks"]["worker"]["ok"] is False
    assert "qcluster" in report["checks"]["worker"]["message"]
    assert (report["status"], response.status_code) == ("fail", 503)


def test_a_hanging_check_is_cut_off_and_the_others_still_answer(client, extra_checks, settings):
    settings.HEALTH_TIMEOUT_SECONDS = 1

    def hang():
        time.sleep(30)
        return "never"

    extra_checks(health.HealthCheck("snapshot store", hang))
    started = time.monotonic()
    report = client.get("/healthz").json()
    assert time.monotonic() - started < 3
    assert report["checks"]["snapshot store"] == {"ok": False, "message": "no answer within 1 s"}
    assert report["checks"]["database"]["ok"] is True


def test_healthz_ok_when_every_check_passes_and_holds_no_secret(client, extra_checks, settings):
    settings.METRICS_TOKEN = "metrics-secret-123"
    settings.NOTIFY_URLS = ["json://user:notify-secret-456@127.0.0.1:9/x"]
    health._CHECKS.pop("worker")
    # The real Docker hosts' check runs a container (tests/pods/test_health.py); stand in for it.
    health._CHECKS.pop("docker hosts")
    extra_checks(health.HealthCheck("docker host local", lambda: "answers (engine 20.10)"))
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    text = response.content.decode()
    assert "secret" not in text and settings.SECRET_KEY not in text


def test_a_failing_check_says_why_in_one_line(client, extra_checks):
    def refuse():
        raise ConnectionError("connection refused\nmore detail")

    extra_checks(health.HealthCheck("docker host far", refuse))
    assert client.get("/healthz").json()["checks"]["docker host far"] == {"ok": False, "message": "connection refused"}


def test_metrics_are_off_without_a_token_and_need_the_bearer(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


def test_metrics_count_operations_and_their_durations(client, settings):
    settings.METRICS_TOKEN = "t"
    now = timezone.now()
    for seconds, status in [(2, "succeeded"), (30, "succeeded"), (4000, "failed")]:
        Operation.objects.create(
            kind=Kind.POD_STOP, target_type="pod", target_id=f"p{seconds}", actor_name="t", status=status,
            started_at=now - timezone.timedelta(seconds=seconds), finished_at=now, exclusive=False,
        )  # fmt: skip
    run_now(Kind.PANEL_WATCH, actor="schedule:watch-leaks")
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    assert 'panel_operations_total{kind="pod.stop",status="succeeded"} 2.0' in text
    assert 'panel_operations_total{kind="pod.stop",status="failed"} 1.0' in text
    assert 'panel_operation_duration_seconds_bucket{kind="pod.stop",le="5.0"} 1.0' in text
    assert 'panel_operation_duration_seconds_bucket{kind="pod.stop",le="60.0"} 2.0' in text
    assert 'panel_operation_duration_seconds_bucket{kind="pod.stop",le="+Inf"} 3.0' in text
    assert 'panel_operation_duration_seconds_count{kind="pod.stop"} 3.0' in text
    assert 'panel_schedule_last_success_timestamp_seconds{schedule="watch leaks"}' in text
    for name in ("panel_bytes_held", "panel_bytes_leaked"):
        assert f"# TYPE {name} gauge" in text


def test_bytes_held_and_leaked_name_every_domain_alike_even_at_zero(client, settings):
    settings.METRICS_TOKEN = "t"

    def series(name: str) -> dict[str, float]:
        text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
        return {d: float(v) for d, v in re.findall(rf'^{name}{{domain="([^"]+)"}} (\S+)$', text, flags=re.MULTILINE)}

    every = {"mixjobs", "pods", "separations", "volumes"}
    assert set(series("panel_bytes_held")) == set(series("panel_bytes_leaked")) == every
    # A stale session leaks under the same domain name as the bytes the sessions hold.
    SeparationSession.objects.create(
        session_id="old", volume=sessions_volume_name(), status=SeparationSession.Status.COMPLETE,
        total_bytes=4096, modified_at=timezone.now() - timezone.timedelta(days=3),
    )  # fmt: skip
    leaked = series("panel_bytes_leaked")
    assert set(leaked) == set(series("panel_bytes_held")) == every
    assert leaked["separations"] == 4096


def test_json_logs_carry_the_operation_on_every_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(OperationFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("outside").warning("before any operation")
        finished = run_now(Kind.PANEL_WATCH, actor="tests")
    finally:
        root.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "before any operation" and "operation_id" not in lines[0]
    inside = [line for line in lines if "leaks hold" in line["message"]]
    assert inside and all(
        (line["operation_id"], line["operation_kind"]) == (finished.pk, "panel.watch") for line in inside
    )

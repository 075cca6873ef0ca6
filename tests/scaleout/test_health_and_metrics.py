"""/healthz sees real qcluster workers come and go; /metrics counts what every worker did,
whichever process answers the scrape (PostgreSQL + Redis, workers as real processes)."""

import json

import pytest

pytestmark = [pytest.mark.scaleout, pytest.mark.postgres, pytest.mark.redis]

HEALTH = """
import json
from apps.audit.health import health_report
report = health_report(timeout=4)
print(json.dumps(report["checks"]["worker"]))
print("yes" if report["checks"]["worker"]["ok"] else "no")
"""

REQUEST_SYNCS = """
from apps.audit.names import Kind
from apps.audit.operations import request
print(request(Kind.MIXJOBS_SYNC, actor="scaleout-test").pk)
"""

ALL_DONE = """
from apps.audit.models import Operation
active = Operation.objects.filter(status__in=["pending", "running"]).count()
done = Operation.objects.filter(kind="mixjobs.sync", status="succeeded").count()
print(active, done, "yes" if active == 0 and done >= {count} else "no")
"""

SCRAPE = """
from django.test import Client
print(Client(HTTP_HOST="localhost").get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").content.decode())
"""


def test_healthz_sees_a_real_worker_and_metrics_count_every_workers_work(stack):
    before = json.loads(stack.shell(HEALTH).splitlines()[0])
    assert before["ok"] is False and "qcluster" in before["message"]

    stack.start_workers(2)
    stack.wait_until(HEALTH, timeout=60)

    # Work handed to the queue one at a time (the kind is exclusive), taken by whichever worker.
    for count in range(1, 3):
        stack.shell(REQUEST_SYNCS)
        stack.wait_until(ALL_DONE.format(count=count), timeout=60)

    stack.env["METRICS_TOKEN"] = "scrape-token"
    text = stack.shell(SCRAPE)
    assert 'panel_operations_total{kind="mixjobs.sync",status="succeeded"} 2.0' in text
    assert 'panel_operation_duration_seconds_count{kind="mixjobs.sync"} 2.0' in text

    stack.stop_workers()

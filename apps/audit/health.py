"""`/healthz`: is every part the panel needs answering right now?

The audit app checks what every deployment has (the database, the cache and the task
broker, a worker seen lately); each domain app registers checks for its own parts (Docker
hosts, the snapshot store, Modal) from `AppConfig.ready()`. Every check runs on its own
thread with its own deadline, so the answer comes within HEALTH_TIMEOUT_SECONDS whatever
hangs. A message never holds a secret: a check reports what failed, not the URL it used.
"""

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from controlpanel.formatting import first_line


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    message: str


@dataclass(frozen=True)
class HealthCheck:
    """`run()` returns a message when all is well and raises (any exception) when not.
    `expand()`, when given, yields several named checks instead (one per Docker host)."""

    name: str
    run: Callable[[], str] | None = None
    expand: Callable[[], Iterable["HealthCheck"]] | None = None


_CHECKS: dict[str, HealthCheck] = {}


def register_health(*checks: HealthCheck) -> None:
    for check in checks:
        _CHECKS[check.name] = check


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this thread's own connection, opened for the check
    return f"{connection.vendor} answers"


def _cache_and_broker() -> str:
    from django_q.brokers import get_broker

    probe = f"healthz:{time.monotonic_ns()}"
    cache.set(probe, "1", 30)
    if cache.get(probe) != "1":
        raise RuntimeError("the cache did not keep a value")
    cache.delete(probe)
    broker = get_broker()
    if not broker.ping():
        raise RuntimeError("the task broker does not answer")
    return f"cache and {type(broker).__name__} broker answer"


def _worker_seen() -> str:
    """A qcluster reports its status every few seconds (kept 3 s in the cache); a task it
    finished lately (the minutely reconcile) counts as being seen too."""
    from django.utils import timezone
    from django_q.models import Task
    from django_q.status import Stat

    clusters = [stat for stat in Stat.get_all() if getattr(stat, "timestamp", None)]
    if clusters:
        return f"{len(clusters)} qcluster(s) reporting now"
    newest = Task.objects.order_by("-stopped").values_list("stopped", flat=True).first()
    if newest is not None:
        age = (timezone.now() - newest).total_seconds()
        if age <= settings.HEALTH_WORKER_SECONDS:
            return f"a worker finished a task {int(age)} s ago"
        raise RuntimeError(f"no worker seen for {int(age)} s (start one: python manage.py qcluster)")
    raise RuntimeError("no worker has ever reported (start one: python manage.py qcluster)")


register_health(
    HealthCheck("database", _database),
    HealthCheck("cache and broker", _cache_and_broker),
    HealthCheck("worker", _worker_seen),
)


def _expanded() -> list[HealthCheck]:
    checks: list[HealthCheck] = []
    for check in _CHECKS.values():
        if check.expand is None:
            checks.append(check)
            continue
        try:
            checks.extend(check.expand())
        except Exception as exc:  # listing what to check failed: that is the finding
            checks.append(HealthCheck(check.name, _raiser(exc)))
    return checks


def _raiser(exc: Exception) -> Callable[[], str]:
    def run() -> str:
        raise exc

    return run


def health_report(*, timeout: float | None = None) -> dict:
    """{"status": "ok"|"fail", "checks": {name: {"ok": bool, "message": str}}}."""
    deadline_seconds = settings.HEALTH_TIMEOUT_SECONDS if timeout is None else timeout
    results: dict[str, HealthResult] = {}
    threads = []
    for check in _expanded():

        def run(check: HealthCheck = check) -> None:
            try:
                results[check.name] = HealthResult(True, check.run())
            except Exception as exc:  # every failure is a finding for the report, not an error
                results[check.name] = HealthResult(False, first_line(exc)[:300])
            finally:
                connection.close()

        thread = threading.Thread(target=run, name=f"healthz {check.name}", daemon=True)
        thread.start()
        threads.append((check.name, thread))
    deadline = time.monotonic() + deadline_seconds
    for _name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    checks = {}
    for name, _thread in threads:
        result = results.get(name) or HealthResult(False, f"no answer within {deadline_seconds:g} s")
        checks[name] = {"ok": result.ok, "message": result.message}
    status = "ok" if all(check["ok"] for check in checks.values()) else "fail"
    return {"status": status, "checks": checks}

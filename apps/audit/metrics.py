"""`/metrics` in Prometheus text format, read from the database at scrape time.

Every figure comes from rows all workers share (operations, audit events, the overview
sections), not from one process's memory, so the numbers are right however many web
processes and qcluster workers run and whichever of them answers the scrape.
"""

from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from apps.audit.models import Operation
from apps.audit.operations import kinds
from apps.audit.overview import overview_collect, overview_providers

DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600)


class PanelCollector:
    def collect(self):
        yield from self._bytes()
        yield self._operations_total()
        yield self._durations()
        yield self._schedules()

    def _bytes(self):
        held = GaugeMetricFamily("panel_bytes_held", "Bytes held, by domain", labels=["domain"])
        leaked = GaugeMetricFamily("panel_bytes_leaked", "Bytes held by leaks, by domain", labels=["domain"])
        # One name per domain (the app that registered the section) in both series, and every
        # domain present in both even at 0, so a dashboard's query never loses a series.
        for provider, section in zip(overview_providers(), overview_collect(), strict=True):
            held.add_metric([provider.app_label], section.bytes or 0)
            leaked.add_metric([provider.app_label], sum(leak.bytes or 0 for leak in section.leaks))
        return held, leaked

    def _operations_total(self):
        family = CounterMetricFamily("panel_operations", "Operations, by kind and status", labels=["kind", "status"])
        rows = Operation.objects.values_list("kind", "status").annotate(n=Count("id")).order_by("kind", "status")
        for kind, status, count in rows:
            family.add_metric([kind, status], count)
        return family

    def _durations(self):
        family = HistogramMetricFamily(
            "panel_operation_duration_seconds", "Time from claim to finish, by kind", labels=["kind"]
        )
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        buckets = {
            f"le_{bound}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound))) for bound in DURATION_BUCKETS
        }
        rows = (
            Operation.objects.filter(started_at__isnull=False, finished_at__isnull=False)
            .annotate(duration=duration)
            .values("kind")
            .annotate(count=Count("id"), total=Sum("duration"), **buckets)
            .order_by("kind")
        )
        for row in rows:
            cumulative = [(str(float(bound)), row[f"le_{bound}"]) for bound in DURATION_BUCKETS]
            cumulative.append(("+Inf", row["count"]))
            total = row["total"].total_seconds() if row["total"] else 0.0
            family.add_metric([row["kind"]], cumulative, total)
        return family

    def _schedules(self):
        family = GaugeMetricFamily(
            "panel_schedule_last_success_timestamp_seconds",
            "When each schedule last finished successfully (Unix time)",
            labels=["schedule"],
        )
        scheduled = {kind.name: kind.schedule for kind in kinds() if kind.schedule}
        actors = {schedule.actor: schedule.name for schedule in scheduled.values()}
        rows = (
            Operation.objects.filter(status=Operation.Status.SUCCEEDED, actor_name__in=list(actors))
            .values("actor_name")
            .annotate(last=Max("finished_at"))
        )
        for row in rows:
            family.add_metric([actors[row["actor_name"]]], row["last"].timestamp())
        return family


def metrics_text() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PanelCollector())
    return generate_latest(registry)

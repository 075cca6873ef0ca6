"""Restore drills on a schedule, rotating over the pods (POD_DRILL_EVERY_DAYS; 0 = off).

Each turn of the schedule (hourly) looks at the pods with a complete snapshot and takes the
one whose last drill is oldest (never drilled first); if that drill is POD_DRILL_EVERY_DAYS
old or more, it queues one drill of it, the same `pods.drill` a person's button asks for.
One pod a turn: a drill restores a whole snapshot into temporary volumes on the pod's host,
so the fleet is proven a pod at a time and each pod about every N days. The queued drill's
own row counts as that pod's last drill at once, so the next turn takes the next pod even
while this one's drill is still running."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, F, OuterRef, QuerySet, Subquery
from django.utils import timezone

from apps.audit import operations
from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.services import Actor
from apps.pods.models import Pod, Snapshot
from apps.pods.services.state import _log
from controlpanel.errors import PanelError
from controlpanel.formatting import plural


def _days(days: float) -> str:
    return plural(int(days), "day") if float(days).is_integer() else f"{days:g} days"


def pods_by_last_drill() -> QuerySet[Pod]:
    """Pods a drill can prove (a complete snapshot, a host not known to be down), the one
    whose last drill (any outcome, a queued one too) is oldest first, never drilled before all."""
    last_drill = (
        Operation.objects.filter(kind=Kind.PODS_DRILL, target_id=OuterRef("pod_id"))
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    complete = Snapshot.objects.filter(pod=OuterRef("pk"), status=Snapshot.Status.COMPLETE)
    return (
        Pod.objects.filter(Exists(complete))
        .exclude(host__reachable=False)
        .annotate(last_drill_at=Subquery(last_drill))
        .order_by(F("last_drill_at").asc(nulls_first=True), "created_at", "pk")
    )


def pods_drill_rotate(*, actor: Actor, operation: Operation | None = None) -> dict:
    """One turn: queue a drill of the pod whose last drill is oldest, if it is due."""
    days = settings.POD_DRILL_EVERY_DAYS
    result: dict = {"days": days, "drilled": None, "drill": None, "last_drill_at": None, "pods": 0}
    if not days:
        return {**result, "off": True}
    candidates = pods_by_last_drill()
    result["pods"] = candidates.count()
    pod = candidates.first()
    if pod is None:
        _log(operation, "no pod has a complete snapshot to drill")
        return result
    if pod.last_drill_at is not None:
        result["last_drill_at"] = pod.last_drill_at.isoformat()
        if pod.last_drill_at > timezone.now() - timedelta(days=days):
            _log(operation, f"every pod was drilled within {_days(days)}; {pod.pod_id} is next")
            return {**result, "next": pod.pod_id}
    try:
        queued = operations.request(Kind.PODS_DRILL, pod.pod_id, actor=actor)
    except PanelError as exc:  # its drill is already under way, or its snapshot just went
        _log(operation, f"{pod.pod_id}: not drilled: {exc}")
        return {**result, "refused": {pod.pod_id: str(exc)}}
    _log(operation, f"{pod.pod_id}: restore drill queued as operation #{queued.pk}")
    return {**result, "drilled": pod.pod_id, "drill": queued.pk}


def drill_rotation_sentence(result: dict) -> str:
    if result.get("off"):
        return "Scheduled restore drills are off (POD_DRILL_EVERY_DAYS is 0)."
    if result.get("drilled"):
        return f"Restore drill of pod {result['drilled']} queued as operation #{result['drill']}."
    if result.get("refused"):
        (pod_id, why), *_ = result["refused"].items()
        return f"Pod {pod_id} was due a restore drill but was not drilled: {why}."
    if not result["pods"]:
        return "No pod has a complete snapshot to drill."
    return f"Every pod was drilled within {_days(result['days'])}; pod {result['next']} is next."

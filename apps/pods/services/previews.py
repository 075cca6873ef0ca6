"""What an action would do, before anyone confirms it: the check a request must pass, and
the `Preview` the confirmation pages (pages and admin alike) show. Reads only."""

from django.conf import settings
from django.utils import timezone

from apps.audit.holds import ON_HOLD, held_ids
from apps.audit.names import TargetType
from apps.pods.actions import PROVISION, PodAction, pod_action
from apps.pods.models import VOLUME_PREFIX, OrphanVolume, Pod, Snapshot
from apps.pods.selectors import orphan_grace_ends
from apps.pods.services.hosts import engine_for
from apps.pods.services.housekeeping import orphans_plan
from apps.pods.services.retention import retention_preview  # noqa: F401 - kept importable from here
from apps.pods.services.state import _volumes, pod_get, pod_id_check
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.formatting import plural
from controlpanel.preview import Preview, PreviewItem

# A preview measures the pod's volumes for the page, within this long; what is not measured
# by then shows its last measurement.
PREVIEW_MEASURE_SECONDS = 10


def _measured_now(pod: Pod, names: list[str]) -> dict[str, int]:
    """The volumes' bytes now (the same helper as the size schedule), for the page only:
    a GET writes nothing, and a host that does not answer leaves the last measurements."""
    if not names:
        return {}
    try:
        return (
            engine_for(pod.host)
            .volumes_measure(names=names, image=settings.POD_IMAGE, seconds=PREVIEW_MEASURE_SECONDS)
            .sizes
        )
    except PanelError:
        return {}


def pod_action_check(*, pod_id: str, action: PodAction | str) -> Pod | None:
    """Refuse a request the pod's status does not allow, before any row is written. A pod
    to provision need not exist yet; any other action needs the pod."""
    action = pod_action(action) if isinstance(action, str) else action
    if action is PROVISION:
        pod_id_check(pod_id)
        pod = Pod.objects.filter(pod_id=pod_id).first()
        if pod is not None and not action.allowed(pod):
            raise InvalidInput(f"pod {pod_id!r} already exists and is {pod.status}")
        return pod
    pod = pod_get(pod_id=pod_id)
    if not action.allowed(pod):
        raise action.refusal(pod)
    return pod


def pod_preview(*, pod_id: str, action: PodAction | str) -> Preview:
    """What an action on one pod deletes (volumes, snapshots) and keeps, with bytes."""
    action = pod_action(action) if isinstance(action, str) else action
    pod = pod_get(pod_id=pod_id)
    if action is not PROVISION and not action.allowed(pod):
        raise action.refusal(pod)
    delete: list[PreviewItem] = []
    keep: list[PreviewItem] = []
    if action.volume_fate:
        volumes = _volumes(pod)
        now = _measured_now(pod, [v.docker_name for v in volumes if v.exists])
        # A volume already gone holds nothing now, whatever it measured last; one the helper
        # could not measure in time shows its last measurement, and says so.
        delete += [
            PreviewItem(v.docker_name, bytes=now[v.docker_name], why=action.volume_fate)
            if v.docker_name in now
            else PreviewItem(v.docker_name, bytes=v.size_bytes, why=f"{action.volume_fate} (size last measured)")
            if v.exists
            else PreviewItem(v.docker_name, why="already gone")
            for v in volumes
        ]
        fate = "purged from" if action.purges_snapshots else "kept in"
        snapshots = [
            PreviewItem(f"snapshot #{s.pk} ({s.status})", bytes=s.total_bytes, why=f"{fate} {s.store_url}")
            for s in pod.snapshots.exclude(status=Snapshot.Status.DELETED)
        ]
        (delete if action.purges_snapshots else keep).extend(snapshots)
    restore = (
        " from its latest complete snapshot (checksums verified first)" if pod.status == Pod.Status.STOPPED else ""
    )
    summary = action.summary.format(pod_id=pod.pod_id, store=settings.SNAPSHOT_STORE_URL, restore=restore)
    return Preview(
        title=f"{action.name.capitalize()} pod {pod.pod_id}",
        summary=summary,
        delete=delete,
        keep=keep,
        destructive=action.destructive,
    )


def orphans_preview(*, name_prefix: str = VOLUME_PREFIX, host_name: str | None = None) -> Preview:
    """The orphan sweep's confirmation: each volume no pod needs, older than the grace period."""
    plan = orphans_plan(name_prefix=name_prefix, host_name=host_name)
    held = held_ids(target_type=TargetType.POD, target_ids={p["pod_id"] for p in plan if p["pod_id"]})
    kept = [p for p in plan if p["pod_id"] in held]
    plan = [p for p in plan if p["pod_id"] not in held]
    return Preview(
        title="Sweep orphaned pod volumes",
        summary=_orphans_summary(plan, host_name=host_name),
        delete=[PreviewItem(f"{p['host'].name}: {p['name']}", bytes=p["bytes"], why=p["reason"]) for p in plan],
        keep=[PreviewItem(f"{p['host'].name}: {p['name']}", bytes=p["bytes"], why=ON_HOLD) for p in kept],
    )


def _orphans_summary(plan: list[dict], *, host_name: str | None) -> str:
    """What the sweep will do, or why it has nothing to do yet and when it will."""
    if plan:
        these = "This volume belongs" if len(plan) == 1 else f"These {len(plan)} volumes belong"
        return (
            f"{these} to no pod that needs {'it' if len(plan) == 1 else 'them'} and "
            f"{'is' if len(plan) == 1 else 'are'} older than the grace period. "
            f"{'It' if len(plan) == 1 else 'They'} will be deleted (each is checked again just before)."
        )
    grace = orphan_grace_ends()
    young = OrphanVolume.objects.filter(created_at__gt=timezone.now() - grace)
    if host_name:
        young = young.filter(host__name=host_name)
    first = young.order_by("created_at").first()
    minutes = settings.POD_ORPHAN_GRACE_MINUTES
    if first is None:
        return "No orphaned volume is older than the grace period: nothing to delete."
    count = young.count()
    return (
        f"Nothing to delete yet: {plural(count, 'orphaned volume')} {'is' if count == 1 else 'are'} still inside "
        f"the {minutes}-minute grace period (a volume that new may be a pod's being provisioned). "
        f"The first, {first.docker_name}, can be swept from {first.created_at + grace:%Y-%m-%d %H:%M} UTC."
    )

"""Snapshot retention by policy: SNAPSHOT_KEEP_LAST (SNAPSHOT_RETENTION by default),
SNAPSHOT_KEEP_DAILY and SNAPSHOT_KEEP_WEEKLY, as `selectors.snapshots_past_retention`
decides. Never the snapshot a stopped pod needs (a pod's latest complete one), never a held
one (held itself, or its pod): those are kept and reported "on hold". Previewed like every
deletion; the run purges exactly what the preview lists, looked up again."""

from django.conf import settings
from django.db.models import Q

from apps.audit.holds import ON_HOLD, held_ids, hold_guard
from apps.audit.models import Operation
from apps.audit.names import TargetType
from apps.audit.services import Actor
from apps.pods.models import Snapshot
from apps.pods.selectors import retention_keep_last, snapshot_leaks, snapshots_kept_on_hold
from apps.pods.services.backup import UNDER_WAY
from apps.pods.services.snapshotting import _snapshot_purge
from apps.pods.services.state import _log
from apps.pods.services.store_strays import strays_forget, strays_found
from controlpanel.preview import Preview, PreviewItem


def snapshots_to_retire(*, keep: int | None = None) -> list[Snapshot]:
    """What retention purges now; the rules are `selectors.snapshots_past_retention`."""
    return snapshot_leaks(keep=keep)


def snapshots_on_hold(*, keep: int | None = None) -> list[Snapshot]:
    return list(snapshots_kept_on_hold(keep).select_related("pod").order_by("pod_id", "-finished_at", "-id"))


def retention_policy_sentence(keep: int | None = None) -> str:
    last = retention_keep_last(keep)
    parts = [f"the latest {last}"]
    if settings.SNAPSHOT_KEEP_DAILY > 0:
        parts.append(f"the newest of each of the last {settings.SNAPSHOT_KEEP_DAILY} days (UTC)")
    if settings.SNAPSHOT_KEEP_WEEKLY > 0:
        parts.append(f"the newest of each of the last {settings.SNAPSHOT_KEEP_WEEKLY} ISO weeks")
    return "Each pod keeps " + ", ".join(parts) + " of its complete snapshots"


def copy_under_way(snapshot: Snapshot) -> bool:
    """Another copy of the snapshot's pod into its store is under way (its operation alive):
    one whose volumes did not change reuses the parent's objects without a restic snapshot of
    its own until it is recorded, so the parent stays until then. Read under the pod's
    deletion lock, which such a copy takes to decide (`volume_marks.parent_kept`)."""
    return (
        Snapshot.objects.filter(pod_id=snapshot.pod_id, store_url=snapshot.store_url, status__in=UNDER_WAY)
        .exclude(pk=snapshot.pk)
        .filter(Q(operation__isnull=True) | Q(operation__status__in=Operation.ACTIVE))
        .exists()
    )


def snapshots_apply_retention(*, actor: Actor, keep: int | None = None, operation: Operation | None = None) -> dict:
    purged, reclaimed, held_now = [], 0, []
    for snapshot in snapshots_to_retire(keep=keep):
        # Read again under the lock a hold's write takes: one held since the list was made stays.
        with hold_guard((TargetType.SNAPSHOT, str(snapshot.pk)), (TargetType.POD, snapshot.pod.pod_id)) as hold:
            if hold is not None:
                held_now.append(snapshot.pk)
                continue
            if copy_under_way(snapshot):
                _log(
                    operation,
                    f"kept snapshot #{snapshot.pk} for now: a copy of pod {snapshot.pod.pod_id} into its store is "
                    "under way and may rely on it; a later purge takes it",
                )
                continue
            reclaimed += _snapshot_purge(snapshot=snapshot, actor=actor, operation=operation)
        purged.append(snapshot.pk)
    on_hold = held_now + [pk for pk in (snapshot.pk for snapshot in snapshots_on_hold(keep=keep)) if pk not in held_now]
    if on_hold:
        _log(operation, f"kept {len(on_hold)} snapshots {ON_HOLD}: " + ", ".join(f"#{pk}" for pk in on_hold[:20]))
    strays = strays_forget(actor=actor, operation=operation)
    if strays["held"]:
        _log(operation, f"kept the objects under purged snapshots {ON_HOLD}: {', '.join(strays['held'][:20])}")
    return {
        "purged": purged,
        "bytes": reclaimed + strays["bytes"],
        "on_hold": on_hold,
        "strays_forgotten": strays["forgotten"],
        "strays_on_hold": strays["held"],
    }


def retention_preview(*, keep: int | None = None) -> Preview:
    """Retention's confirmation: what the policy purges (and the objects left under snapshots
    it purged before, `store_strays`), and what it keeps on hold."""
    strays, unlisted = strays_found()
    held_pods = held_ids(target_type=TargetType.POD, target_ids=[stray.pod_id for stray in strays])
    held_snapshots = held_ids(target_type=TargetType.SNAPSHOT, target_ids=[stray.number for stray in strays])
    held = {stray for stray in strays if stray.pod_id in held_pods or str(stray.number) in held_snapshots}
    return Preview(
        title="Purge old snapshots",
        summary=f"{retention_policy_sentence(keep)}; failed snapshots and complete ones past that will be deleted "
        "from their store. The snapshot a stopped pod needs is never among them, nor a held one."
        + "".join(f" {sentence}." for sentence in unlisted),
        delete=[
            PreviewItem(
                f"{s.pod.pod_id} snapshot #{s.pk} ({s.status})", bytes=s.total_bytes or s.bytes_done, why=s.store_url
            )
            for s in snapshots_to_retire(keep=keep)
        ]
        + [
            PreviewItem(f"{stray.pod_id}: {stray.sentence}", why=", ".join(stray.keys[:3]))
            for stray in strays
            if stray not in held
        ],
        keep=[
            PreviewItem(f"{s.pod.pod_id} snapshot #{s.pk} ({s.status})", bytes=s.total_bytes, why=ON_HOLD)
            for s in snapshots_on_hold(keep=keep)
        ]
        + [PreviewItem(f"{stray.pod_id}: {stray.sentence}", why=ON_HOLD) for stray in strays if stray in held],
    )

"""Snapshots proven readable: re-read complete snapshots from their store and check every
object's size and sha256 against the manifest (a dedup store's read-back is `restic dump`,
which also checks every chunk's MAC on the way).

The daily schedule reads a rotating subset: the snapshots read longest ago (never read ones
first) until VERIFY_BYTES_PER_RUN is spent; at least one a run, so one snapshot larger than
the budget is still read in its turn. A failure is recorded on the snapshot, audited and
notified; the run itself succeeds (it did its work) and says how many failed."""

import hashlib
import json

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.notify import notify
from apps.audit.services import Actor, Progress, audit_record
from apps.pods.models import Pod, PodVolume, Snapshot
from apps.pods.services.beside import object_bytes, objects_to_read
from apps.pods.services.state import _log
from apps.pods.snapshots import DedupStore, SnapshotStore, StoreError, store_from_url
from apps.pods.stores.dedup import DEDUP_REPAIR
from apps.pods.stores.restic_locks import RepositoryLocked
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes


def snapshots_to_verify(*, budget_bytes: int | None = None, pod_id: str | None = None) -> list[Snapshot]:
    """The next snapshots to read: longest unread first, within the budget (at least one).
    With `pod_id`, that pod's latest complete snapshot alone (the button on its page)."""
    complete = Snapshot.objects.filter(status=Snapshot.Status.COMPLETE)
    if pod_id is not None:
        latest = complete.filter(pod__pod_id=pod_id).order_by("-finished_at", "-id").first()
        return [latest] if latest else []
    budget = settings.VERIFY_BYTES_PER_RUN if budget_bytes is None else budget_bytes
    order = [F("verify_checked_at").asc(nulls_first=True), "finished_at", "id"]
    chosen, spent = [], 0
    for pk, size in complete.order_by(*order).values_list("pk", "total_bytes").iterator(chunk_size=500):
        if chosen and spent + size > budget:
            break
        chosen.append(pk)
        spent += size
    by_pk = Snapshot.objects.select_related("pod").in_bulk(chosen)
    return [by_pk[pk] for pk in chosen if pk in by_pk]


def damage_advice(*, snapshot: Snapshot) -> str:
    """What to do about a snapshot that does not read back, as the end of one sentence."""
    advice = f"snapshot #{snapshot.pk} will not restore as it is: run Verify on pod {snapshot.pod.pod_id}'s snapshots"
    kept = PodVolume.objects.filter(pod_id=snapshot.pod_id, exists=True).exists()
    if kept:
        advice += ", keep its volumes (do not deprovision or delete it)"
    if snapshot.store_url.startswith("dedup+"):
        return f"{advice}, and {DEDUP_REPAIR}"
    return f"{advice}; its next stop writes a new copy" if kept else advice


def _read_back(*, store: SnapshotStore, key: str, entry: dict, progress: Progress) -> None:
    digest, count = hashlib.sha256(), 0
    for chunk in store.read(key):
        digest.update(chunk)
        count += len(chunk)
        progress.advance(len(chunk))
    if count != object_bytes(entry) or digest.hexdigest() != entry["sha256"]:
        raise StoreError(
            f"{store.url}/{key} reads back {count} bytes with sha256 {digest.hexdigest()[:12]}…; "
            f"the manifest says {object_bytes(entry)} bytes, {entry['sha256'][:12]}…"
        )


def snapshot_verify(*, snapshot: Snapshot, progress: Progress, operation: Operation | None = None) -> str:
    """Read every object of one snapshot back; "" when all match, else why not (one line,
    ending with what to do when the store's bytes are damaged)."""
    try:
        store = store_from_url(snapshot.store_url)
        store.remember(snapshot.manifest)
        if isinstance(store, DedupStore):
            # The key first (one listing): a refused key is told as such, not as damage.
            store.keys_present([entry["key"] for entry in snapshot.manifest.values()])
        for names, entry in objects_to_read(snapshot.manifest):
            try:
                _read_back(store=store, key=entry["key"], entry=entry, progress=progress)
            except RepositoryLocked:
                raise  # a prune holds the store: nothing is damaged
            except StoreError as exc:
                raise StoreError(f"{exc}; {damage_advice(snapshot=snapshot)}") from exc
            held = humanize_bytes(object_bytes(entry))
            _log(operation, f"snapshot #{snapshot.pk} {', '.join(names)}: {held}, sha256 matches")
        try:
            written = json.loads(store.get_small(f"{snapshot.prefix}/manifest.json"))
        except RepositoryLocked:
            raise
        except StoreError as exc:
            raise StoreError(f"{exc}; {_manifest_advice(snapshot)}") from exc
        if written.get("volumes") != snapshot.manifest:
            raise StoreError(
                f"{store.url}/{snapshot.prefix}/manifest.json differs from the one recorded; "
                f"{_manifest_advice(snapshot)}"
            )
    except RepositoryLocked:
        raise  # a prune holds the store: nothing was found wrong, the snapshot is read another time
    except (PanelError, ValueError) as exc:  # ValueError: a manifest that is not JSON
        if isinstance(exc, PanelError):
            return str(exc)
        return f"manifest of snapshot #{snapshot.pk} is unreadable; {_manifest_advice(snapshot)}"
    return ""


def _manifest_advice(snapshot: Snapshot) -> str:
    repair = DEDUP_REPAIR if snapshot.store_url.startswith("dedup+") else "its next stop writes a new snapshot"
    return (
        f"its volumes read back whole, so snapshot #{snapshot.pk} restores (from the panel's copy of the "
        f"manifest), but a restore drill cannot check its files: {repair}"
    )


def _verified(*, snapshot: Snapshot, error: str, actor: Actor, operation: Operation | None) -> None:
    now = timezone.now()
    with transaction.atomic():
        if not error:
            Snapshot.objects.filter(pk=snapshot.pk).update(verified_at=now, verify_checked_at=now, verify_error="")
            Pod.objects.filter(pk=snapshot.pod_id).update(
                proven_at=now, proven_by=f"verification of snapshot #{snapshot.pk}"
            )
            return
        Snapshot.objects.filter(pk=snapshot.pk).update(verify_checked_at=now, verify_error=error)
        audit_record(
            actor=actor,
            action=AuditAction.PODS_VERIFY,
            target_type=TargetType.SNAPSHOT,
            target_id=str(snapshot.pk),
            outcome=AuditEvent.Outcome.FAILED,
            message=f"snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id} failed verification: {error}",
            operation=operation,
        )
    notify(
        event="snapshot.verify-failed",
        subject=str(snapshot.pk),
        title=f"Snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id} failed verification",
        body=f"Snapshot #{snapshot.pk} of pod {snapshot.pod.pod_id} in {snapshot.store_url}: {error}",
        level="failure",
    )


def snapshots_verify(
    *, actor: Actor, pod_id: str | None = None, budget_bytes: int | None = None, operation: Operation | None = None
) -> dict:
    """Verify the next snapshots in turn (or one pod's latest); see the module's docstring."""
    chosen = snapshots_to_verify(budget_bytes=budget_bytes, pod_id=pod_id)
    progress = Progress(operation, total=sum(s.total_bytes for s in chosen), unit="bytes")
    verified, failed = [], {}
    for snapshot in chosen:
        try:
            error = snapshot_verify(snapshot=snapshot, progress=progress, operation=operation)
        except RepositoryLocked as exc:  # not a failure: it stays first in line for the next run
            _log(operation, f"snapshot #{snapshot.pk} not read now: {exc}")
            continue
        _verified(snapshot=snapshot, error=error, actor=actor, operation=operation)
        if error:
            failed[str(snapshot.pk)] = error
            _log(operation, f"snapshot #{snapshot.pk} FAILED: {error}")
        else:
            verified.append(snapshot.pk)
    progress.flush()
    result = {"verified": verified, "failed": failed, "bytes": progress.done, "pod_id": pod_id}
    audit_record(
        actor=actor,
        action=AuditAction.PODS_VERIFY,
        target_type=TargetType.POD if pod_id else TargetType.PODS,
        target_id=pod_id or "verify",
        outcome=AuditEvent.Outcome.FAILED if failed else AuditEvent.Outcome.SUCCEEDED,
        message=snapshots_verified_sentence(result),
        details={"verified": verified, "failed": failed},
        operation=operation,
    )
    return result


def snapshots_verified_sentence(result: dict) -> str:
    count = len(result["verified"]) + len(result["failed"])
    sentence = f"{count} snapshot{'s' if count != 1 else ''} re-read ({humanize_bytes(result['bytes'])})"
    if not count:
        return "No complete snapshot to verify."
    if result["failed"]:
        first, error = next(iter(result["failed"].items()))
        return f"{sentence}: {len(result['failed'])} FAILED verification (#{first}: {error})."
    return f"{sentence}: every object matches its manifest."

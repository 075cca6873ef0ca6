"""restic snapshots in a deduplicated store under a snapshot the panel has purged: what a
stopped worker's restic helper saved after retention had already purged its failed snapshot
(the helper runs on beside the volumes when its worker dies; nothing else writes under a
purged snapshot's key prefix). Their chunks count as referenced, so the unreferenced-bytes
measure never showed them: a leak nobody saw.

Found with one `restic snapshots` per store; listed in retention's preview; forgotten and
pruned by the retention run like a purge (the objects a live snapshot of the pod still points
at are kept), a hold on the pod keeping them. Only a prefix whose snapshot row the panel
itself marked deleted counts: a restic snapshot no row names at all (a database restored from
an older copy) is never touched, and nothing is swept while a copy into the store is under
way (it may point at any object of its pod)."""

import json
from dataclasses import dataclass

from django.db.models import Q

from apps.audit.holds import hold_guard
from apps.audit.models import Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record
from apps.pods.models import Snapshot
from apps.pods.services.capture import _unreferenced_record
from apps.pods.services.state import _log
from apps.pods.services.unchanged import manifest_keys
from apps.pods.snapshots import DedupStore, store_from_url
from apps.pods.stores.dedup import HOST
from controlpanel.errors import PanelError
from controlpanel.formatting import humanize_bytes, plural

UNDER_WAY = [Snapshot.Status.PENDING, Snapshot.Status.UPLOADING]
HELD = object()  # `_stray_forget`: a hold keeps it
# A store that does not answer within this is reported as not listed (a preview page waits for it).
LIST_SECONDS = 20


@dataclass(frozen=True)
class Stray:
    store_url: str
    pod_id: str
    number: int  # the purged snapshot whose key prefix they are under
    keys: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return f"{self.pod_id}/{self.number}"

    @property
    def sentence(self) -> str:
        return (
            f"{plural(len(self.keys), 'object')} under purged snapshot #{self.number} of pod {self.pod_id} "
            f"in {self.store_url} (saved after the purge, by a stopped worker's restic helper)"
        )


def _dedup_store_urls() -> list[str]:
    urls = Snapshot.objects.filter(store_url__startswith="dedup+").values_list("store_url", flat=True).distinct()
    return sorted(set(urls))


def _needed(store_url: str, pod_ids: set[str]) -> set[str]:
    """The keys the pods' snapshots that are not deleted point at (their own or older ones)."""
    manifests = (
        Snapshot.objects.filter(store_url=store_url, pod__pod_id__in=pod_ids)
        .exclude(status=Snapshot.Status.DELETED)
        .values_list("manifest", flat=True)
    )
    return set().union(*(manifest_keys(manifest) for manifest in manifests))


def store_strays(store_url: str) -> list[Stray]:
    """The strays of one deduplicated store, looked up now (one restic listing)."""
    under_way = Snapshot.objects.filter(store_url=store_url, status__in=UNDER_WAY).filter(
        Q(operation__isnull=True) | Q(operation__status__in=Operation.ACTIVE)
    )
    if under_way.exists():
        return []
    store = store_from_url(store_url)
    if not isinstance(store, DedupStore):
        return []
    # Without a lock, one attempt: a prune at work does not hold a page up, nor a killed listing
    # leave a lock behind.
    listed = store.run(
        "snapshots",
        "--json",
        "--no-lock",
        "--host",
        HOST,
        doing="looking for objects under purged snapshots",
        timeout=LIST_SECONDS,
    )
    tags = {tag for found in json.loads(listed or "[]") or [] for tag in found.get("tags") or []}
    by_prefix: dict[tuple[str, int], set[str]] = {}
    for key in tags:
        pod_id, _, rest = key.partition("/")
        number, _, name = rest.partition("/")
        if pod_id and number.isdigit() and name:
            by_prefix.setdefault((pod_id, int(number)), set()).add(key)
    purged = set(
        Snapshot.objects.filter(
            store_url=store_url, status=Snapshot.Status.DELETED, pk__in=[number for _, number in by_prefix]
        ).values_list("pod__pod_id", "pk")
    )
    found = {prefix: keys for prefix, keys in by_prefix.items() if prefix in purged}
    needed = _needed(store_url, {pod_id for pod_id, _ in found})
    return [
        Stray(store_url=store_url, pod_id=pod_id, number=number, keys=tuple(sorted(keys - needed)))
        for (pod_id, number), keys in sorted(found.items())
        if keys - needed
    ]


def strays_found() -> tuple[list[Stray], list[str]]:
    """Every deduplicated store's strays, and a sentence for each store that could not be listed."""
    strays, unlisted = [], []
    for url in _dedup_store_urls():
        try:
            strays += store_strays(url)
        except PanelError as exc:
            unlisted.append(f"{url} could not be listed for objects left under purged snapshots: {exc}")
    return strays, unlisted


def strays_forget(*, actor: Actor, operation: Operation | None) -> dict:
    """Forget (and prune) each stray, looked up again now; a hold on its pod keeps it. A store
    that fails is told in the log and left for the next run."""
    forgotten, held, reclaimed = [], [], 0
    strays, unlisted = strays_found()
    for sentence in unlisted:
        _log(operation, sentence)
    for stray in strays:
        try:
            done = _stray_forget(stray, operation=operation)
        except PanelError as exc:
            _log(operation, f"left {stray.sentence}: {exc}")
            continue
        if done is HELD:
            held.append(stray.prefix)
            continue
        if done is None:
            _log(operation, f"left {stray.sentence} for the next run: a copy into the store began, or it changed")
            continue
        found, removed = done
        reclaimed += removed
        forgotten.append(stray.prefix)
        audit_record(
            actor=actor,
            action=AuditAction.SNAPSHOT_DELETE,
            target_type=TargetType.POD,
            target_id=stray.pod_id,
            bytes_reclaimed=removed,
            message=f"forgot {found.sentence}",
            operation=operation,
        )
        _log(operation, f"forgot {found.sentence} ({humanize_bytes(removed)})")
    return {"forgotten": forgotten, "held": held, "bytes": reclaimed, "unlisted": unlisted}


def _stray_forget(stray: Stray, *, operation: Operation | None):
    """(the stray as found now, the bytes the store shrank by); HELD when a hold keeps it; None
    when it is not to go now (a copy into the store began, or it is gone)."""
    with hold_guard((TargetType.SNAPSHOT, str(stray.number)), (TargetType.POD, stray.pod_id)) as hold:
        if hold is not None:
            return HELD
        # Looked up again under the guard: a copy that began meanwhile may point at them.
        again = [s for s in store_strays(stray.store_url) if (s.pod_id, s.number) == (stray.pod_id, stray.number)]
        if not again:
            return None
        store = store_from_url(stray.store_url)
        removed = store.delete_prefix(stray.prefix, keep=frozenset(_needed(stray.store_url, {stray.pod_id})))
        _unreferenced_record(store, operation)
        return again[0], removed

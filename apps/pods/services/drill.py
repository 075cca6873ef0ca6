"""Restore drills: prove a pod's latest complete snapshot restores, without touching the pod.

A drill restores every volume of the snapshot into temporary volumes on the pod's host
(`pinacle-drill-<pod>-<volume>`, labelled `pinacle.drill=<operation id>`, mounted in a
container that is created and never started), checks each archive's sha256 on the way in,
reads each volume back out and checks every file against the manifest's per-file list (path,
size, sha256), then removes the temporary container and volumes. The pod's own volumes
(`pinacle-vol-…`) are never named. A drill killed midway leaves labelled volumes behind:
reconcile's `drills_leftover_remove` removes those whose operation is over, and the pod's
next drill starts by removing its own names."""

import hashlib
import json
from pathlib import PurePosixPath

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.services import Actor, Progress, audit_record
from apps.pods.docker_engine import DockerEngine
from apps.pods.models import VOLUME_MOUNTS, VOLUME_PREFIX, DockerHost, Pod, Snapshot
from apps.pods.services.beside import folder_layout
from apps.pods.services.capture_folders import folders_restore
from apps.pods.services.fleet import hosts_each
from apps.pods.services.hosts import engine_for
from apps.pods.services.state import _latest_complete, _log, pod_get
from apps.pods.services.verify import damage_advice
from apps.pods.snapshots import StoreError, store_from_url
from apps.pods.stores.restic_locks import RepositoryLocked
from apps.pods.stores.tarlist import TarFileList, file_differences
from controlpanel.errors import Busy, PanelError

DRILL_PREFIX = "pinacle-drill-"
DRILL_LABEL = "pinacle.drill"


class DrillFailed(PanelError):
    """The snapshot did not restore as its manifest says."""


def drill_volume_name(pod_id: str, volume: str) -> str:
    return f"{DRILL_PREFIX}{pod_id}-{volume}"


def drill_check(*, pod_id: str) -> None:
    """Refuse, before any row, a drill of a pod with nothing to restore or a drill under way."""
    pod = pod_get(pod_id=pod_id)
    if _latest_complete(pod) is None:
        raise PanelError(f"pod {pod_id!r} has no complete snapshot to drill")
    active = Operation.objects.filter(kind=Kind.PODS_DRILL, target_id=pod_id, status__in=Operation.ACTIVE).values_list(
        "pk", flat=True
    )
    if active:
        raise Busy(f"pod {pod_id!r} already has a restore drill in progress (operation #{active[0]})")


def _leftovers(host: DockerHost) -> list[tuple[str, str, str]]:
    """("container" or "volume", name, drill label) of every drill leftover candidate on the
    host: two calls, on the host's own thread (no database)."""
    engine = engine_for(host)
    with engine._errors("listing restore drill leftovers"):
        containers = engine.client.api.containers(all=True, filters={"label": DRILL_LABEL})
        volumes = engine.client.api.volumes(filters={"label": DRILL_LABEL}).get("Volumes") or []
    return [
        ("container", row["Names"][0].lstrip("/"), (row.get("Labels") or {}).get(DRILL_LABEL, "")) for row in containers
    ] + [("volume", row["Name"], (row.get("Labels") or {}).get(DRILL_LABEL, "")) for row in volumes]


def drills_leftover_remove(*, hosts: list[DockerHost] | None = None, operation: Operation | None = None) -> list[str]:
    """Remove what drills that are over left behind (a killed worker's), on every reachable
    host. Only what carries the id of one of our own finished drill operations and that
    drill's pod's name: a drill at work, or another panel's on a shared engine, is left alone."""
    hosts = hosts if hosts is not None else list(DockerHost.objects.filter(reachable=True))
    found = {}
    for answer in hosts_each(hosts, _leftovers, seconds=settings.DOCKER_TIMEOUT_SECONDS):
        if answer.error is None and answer.value:
            found[answer.host] = answer.value
    tags = {int(tag) for rows in found.values() for _, _, tag in rows if tag.isdigit()}
    over = dict(
        Operation.objects.filter(pk__in=tags, kind=Kind.PODS_DRILL)
        .exclude(status__in=Operation.ACTIVE)
        .values_list("pk", "target_id")
    )
    removed = []
    for host, rows in found.items():
        engine = engine_for(host)
        for what, name, tag in rows:
            pod_id = over.get(int(tag)) if tag.isdigit() else None
            # Only our own temporary names, never a pod's volume, whatever labels it carries.
            if pod_id is None or not name.startswith(f"{DRILL_PREFIX}{pod_id}"):
                continue
            (engine.container_remove if what == "container" else engine.volume_remove)(name)
            removed.append(name)
    if removed:
        _log(operation, f"removed {len(removed)} restore drill leftovers: {', '.join(sorted(removed)[:8])}")
    return sorted(removed)


def _drill_restore(
    *, pod: Pod, snapshot: Snapshot, engine: DockerEngine, container: str, progress: Progress
) -> list[str]:
    """Restore each volume, then read it back; the problems found, one line each."""
    store = store_from_url(snapshot.store_url)
    store.remember(snapshot.manifest)
    written = json.loads(store.get_small(f"{snapshot.prefix}/manifest.json"))
    file_lists = written.get("files") or {}
    problems = []
    if folder_layout(snapshot.manifest):
        # Kept as folders: restored as a start restores them (restic writes, then checks each
        # file), then every file read back out of the volumes against the snapshot's lists.
        mounts = {drill_volume_name(pod.pod_id, v): PurePosixPath(m).name for v, m in VOLUME_MOUNTS.items()}
        folders_restore(
            pod=pod, snapshot=snapshot, engine=engine, mounts=mounts, operation=None, progress=progress, owner=container
        )
        return problems + _lists_compared(engine=engine, container=container, file_lists=file_lists)
    for volume, mount_path in VOLUME_MOUNTS.items():
        entry = snapshot.manifest.get(volume)
        if entry is None:
            problems.append(f"{volume}: not in the snapshot")
            continue
        digest, count = hashlib.sha256(), [0]

        def hashed(chunks, digest=digest, count=count):
            for chunk in chunks:
                digest.update(chunk)
                count[0] += len(chunk)
                progress.advance(len(chunk))
                yield chunk

        engine.archive_write(
            container=container, path=str(PurePosixPath(mount_path).parent), chunks=hashed(store.read(entry["key"]))
        )
        if count[0] != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
            problems.append(
                f"{volume}: the archive read {count[0]} bytes, sha256 {digest.hexdigest()[:12]}…, "
                f"the manifest says {entry['bytes']} bytes, {entry['sha256'][:12]}…"
            )
            continue
        if volume not in file_lists:
            continue  # a snapshot taken before per-file lists: its archive's sha256 is the check
        found = TarFileList()
        for chunk in engine.archive_read(container=container, path=mount_path):
            found.feed(chunk)
        problems += [f"{volume}: {line}" for line in file_differences(file_lists[volume], found.files)]
    return problems


def _lists_compared(*, engine: DockerEngine, container: str, file_lists: dict) -> list[str]:
    problems = []
    for volume, mount_path in VOLUME_MOUNTS.items():
        found = TarFileList()
        for chunk in engine.archive_read(container=container, path=mount_path):
            found.feed(chunk)
        problems += [f"{volume}: {line}" for line in file_differences(file_lists.get(volume, []), found.files)]
    return problems


def _drill_clean(*, engine: DockerEngine, container: str, names: list[str]) -> None:
    engine.container_remove(container)
    for name in names:
        engine.volume_remove(name)
    left = [name for name in names if engine.volume_exists(name)]
    if left:
        raise PanelError(f"restore drill volumes still exist after removal: {', '.join(left)}")


def pod_drill(*, pod_id: str, actor: Actor, operation: Operation | None = None) -> dict:
    pod = pod_get(pod_id=pod_id)
    snapshot = _latest_complete(pod)
    if snapshot is None:
        raise PanelError(f"pod {pod_id!r} has no complete snapshot to drill")
    engine = engine_for(pod.host)
    tag = str(operation.pk) if operation is not None else f"inline-{timezone.now():%Y%m%d%H%M%S%f}"
    names = [drill_volume_name(pod.pod_id, volume) for volume in VOLUME_MOUNTS]
    assert not any(name.startswith(VOLUME_PREFIX) for name in names)  # never a pod's own volume
    container = f"{DRILL_PREFIX}{pod.pod_id}"
    progress = Progress(operation, total=snapshot.total_bytes, unit="bytes")
    # What an earlier drill of this pod left (its worker killed): `drill_check` let no other
    # drill of it start, so these names are nobody's now.
    _drill_clean(engine=engine, container=container, names=names)
    _log(operation, f"restoring snapshot #{snapshot.pk} of {pod_id} into {DRILL_PREFIX}{pod_id}-* on {pod.host.name}")
    try:
        for name, volume in zip(names, VOLUME_MOUNTS, strict=True):
            engine.volume_create(name=name, labels={DRILL_LABEL: tag, "pinacle.drill.volume": volume})
        engine.container_create(
            name=container,
            image=pod.image or settings.POD_IMAGE,
            mounts=dict(zip(names, VOLUME_MOUNTS.values(), strict=True)),
            labels={DRILL_LABEL: tag},
            copy_image_content=False,
        )
        problems = _drill_restore(pod=pod, snapshot=snapshot, engine=engine, container=container, progress=progress)
    except RepositoryLocked:
        raise  # a prune holds the store: no drill ran, none failed
    except StoreError as exc:
        problems = [str(exc)]
    finally:
        _drill_clean(engine=engine, container=container, names=names)
    progress.flush()
    files = sum(entry.get("files", 0) for entry in snapshot.manifest.values())
    now = timezone.now()
    with transaction.atomic():
        if problems:
            error = f"restore drill of snapshot #{snapshot.pk} failed: {'; '.join(problems)}"
            error += f"; {damage_advice(snapshot=snapshot)}"
            Pod.objects.filter(pk=pod.pk).update(drill_error=error[:2000])
        else:
            Pod.objects.filter(pk=pod.pk).update(
                proven_at=now, proven_by=f"restore drill of snapshot #{snapshot.pk}", drill_error=""
            )
        audit_record(
            actor=actor,
            action=AuditAction.PODS_DRILL,
            target_type=TargetType.POD,
            target_id=pod.pod_id,
            outcome=AuditEvent.Outcome.FAILED if problems else AuditEvent.Outcome.SUCCEEDED,
            message=error
            if problems
            else f"snapshot #{snapshot.pk} restored into temporary volumes: "
            f"{files} files checked, every sha256 matches; temporary volumes removed",
            details={"snapshot": snapshot.pk, "problems": problems[:20]},
            operation=operation,
        )
    if problems:
        # The operation fails with this line; its failure is notified like any other.
        raise DrillFailed(error)
    return {"pod_id": pod.pod_id, "snapshot": snapshot.pk, "bytes": snapshot.total_bytes, "files": files}

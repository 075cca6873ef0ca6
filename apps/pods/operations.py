"""The pods' kinds of work, declared once: what runs, who may ask, what it is called, the
sentence it ends with and when it runs by itself. `PodsConfig.ready()` registers them;
pages, the admin, the CLI, reconcile's resume and the schedules all go through
`apps.audit.operations.request` / `run_now` with these names."""

from apps.audit.holds import hold_refuse
from apps.audit.models import Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import OperationKind, Schedule
from apps.pods import services
from apps.pods.actions import DELETE, DEPROVISION, PROVISION, START, STOP, PodAction
from apps.pods.models import VOLUME_PREFIX, Snapshot
from apps.pods.services.backup import backed_up_sentence
from apps.pods.services.backup_schedule import backups_sentence, pods_backups
from apps.pods.services.drill_rotation import drill_rotation_sentence, pods_drill_rotate
from apps.pods.services.idle import dormancy_sentence, idle_sentence, idle_stop_notify, pods_dormancy, pods_idle_stop
from apps.pods.services.restore_path import pod_restore_path, restore_path_check, restored_sentence
from apps.pods.services.sizes import pods_measure
from apps.pods.services.verify import snapshots_verified_sentence
from controlpanel.formatting import humanize_bytes, plural

# --- running them ------------------------------------------------------------------------


def _provision(operation: Operation) -> dict:
    params = operation.params or {}
    return services.pod_provision(
        pod_id=operation.target_id,
        actor=operation.actor,
        image=params.get("image"),
        host_name=params.get("host"),
        operation=operation,
    )


def _on_pod(service):
    def run(operation: Operation) -> dict:
        return service(pod_id=operation.target_id, actor=operation.actor, operation=operation)

    return run


def _stop(operation: Operation) -> dict:
    result = services.pod_stop(pod_id=operation.target_id, actor=operation.actor, operation=operation)
    idle_stop_notify(operation, result)  # only for a stop the idle schedule asked for
    return result


def _idle_stop(operation: Operation) -> dict:
    return pods_idle_stop(actor=operation.actor, operation=operation)


def _dormancy(operation: Operation) -> dict:
    return pods_dormancy(actor=operation.actor, operation=operation)


def _reconcile(operation: Operation) -> dict:
    return services.pods_reconcile(actor=operation.actor, operation=operation)


def _measure(operation: Operation) -> dict:
    return pods_measure(actor=operation.actor, operation=operation)


def _sweep(operation: Operation) -> dict:
    params = operation.params or {}
    return services.orphans_sweep(
        actor=operation.actor,
        dry_run=bool(params.get("dry_run")),
        name_prefix=params.get("name_prefix") or VOLUME_PREFIX,
        operation=operation,
    )


def _retention(operation: Operation) -> dict:
    return services.snapshots_apply_retention(
        actor=operation.actor, keep=(operation.params or {}).get("keep"), operation=operation
    )


# --- the sentence each ends with ---------------------------------------------------------


def _provisioned(result: dict) -> str:
    return f"Pod {result['pod_id']} provisioned with {plural(len(result['volumes']), 'volume')}."


def _stopped(result: dict) -> str:
    return (
        f"Pod {result['pod_id']} stopped: snapshot #{result['snapshot']} holds "
        f"{humanize_bytes(result['snapshot_bytes'])}; its container and volumes are removed."
    )


def _started(result: dict) -> str:
    if result.get("restored_snapshot"):
        return f"Pod {result['pod_id']} started from snapshot #{result['restored_snapshot']} (checksums verified)."
    return f"Pod {result['pod_id']} started with its volumes reattached."


def _deprovisioned(result: dict) -> str:
    return f"Pod {result['pod_id']} deprovisioned: {plural(len(result['volumes_removed']), 'volume')} removed."


def _deleted(result: dict) -> str:
    return (
        f"Pod {result['pod_id']} deleted: {plural(len(result['volumes_removed']), 'volume')} removed, "
        f"{humanize_bytes(result['snapshot_bytes_purged'])} of snapshots purged."
    )


def _reconciled(result: dict) -> str:
    hosts = result.get("hosts", {})
    reachable = [report for report in hosts.values() if report.get("reachable")]
    changed = sum(len(report["changed"]) for report in reachable)
    orphans = sum(len(report["orphans"]) for report in reachable)
    sentence = (
        f"{plural(len(hosts), 'host')} checked: {plural(changed, 'pod')} changed, "
        f"{plural(orphans, 'orphaned volume')} found"
    )
    if len(reachable) < len(hosts):
        sentence += f"; {plural(len(hosts) - len(reachable), 'host')} unreachable"
    if result.get("resumed"):
        sentence += f"; {plural(len(result['resumed']), 'interrupted pod')} taken up again"
    if result.get("backups_interrupted"):
        sentence += f"; {plural(len(result['backups_interrupted']), 'backup')} whose worker died marked failed"
    return sentence + "."


def _measured(result: dict) -> str:
    hosts = result.get("hosts", {})
    measured = sum(report["measured"] for report in hosts.values())
    cut_off = sum(report["cut_off"] for report in hosts.values())
    sentence = (
        f"{plural(measured, 'volume size')} measured on {plural(len(hosts), 'host')} "
        f"within {result['budget_seconds']} s each"
    )
    if cut_off:
        sentence += f"; {plural(cut_off, 'volume')} cut off by the budget (they keep their last size)"
    failed = [name for name, report in hosts.items() if report["error"]]
    if failed:
        sentence += f"; not finished on {', '.join(failed)}"
    return sentence + "."


def _swept(result: dict) -> str:
    if result.get("dry_run"):
        found = sum(entry["bytes"] or 0 for entry in result["orphans"])
        return f"{plural(len(result['orphans']), 'orphaned volume')} would be removed ({humanize_bytes(found)})."
    return f"{plural(len(result['removed']), 'orphaned volume')} removed, {humanize_bytes(result['bytes'])} reclaimed."


def _retired(result: dict) -> str:
    sentence = f"{plural(len(result['purged']), 'snapshot')} purged, {humanize_bytes(result['bytes'])} reclaimed"
    if result.get("on_hold"):
        sentence += f"; {plural(len(result['on_hold']), 'snapshot')} kept on hold"
    return sentence + "."


def _verify(operation: Operation) -> dict:
    return services.snapshots_verify(
        actor=operation.actor, pod_id=(operation.params or {}).get("pod_id"), operation=operation
    )


def _drilled(result: dict) -> str:
    return (
        f"Snapshot #{result['snapshot']} of pod {result['pod_id']} restored into temporary volumes: "
        f"{plural(result['files'], 'file')} ({humanize_bytes(result['bytes'])}) match the manifest; "
        "temporary volumes removed."
    )


def _backups(operation: Operation) -> dict:
    return pods_backups(actor=operation.actor, operation=operation)


def _drill_rotation(operation: Operation) -> dict:
    return pods_drill_rotate(actor=operation.actor, operation=operation)


def _restore_path(operation: Operation) -> dict:
    params = operation.params or {}
    return pod_restore_path(
        pod_id=operation.target_id,
        number=params.get("snapshot"),
        path=params.get("path"),
        actor=operation.actor,
        operation=operation,
        replace=bool(params.get("replace")),
    )


def _restore_path_check(target_id: str, params: dict) -> None:
    restore_path_check(
        pod_id=target_id, number=params.get("snapshot"), path=params.get("path"), replace=bool(params.get("replace"))
    )


def _drill_check(target_id: str, params: dict) -> None:
    services.drill_check(pod_id=target_id)


def _backup_check(target_id: str, params: dict) -> None:
    services.backup_check(pod_id=target_id)


# Actions that delete a pod's data: refused while the pod (or, for delete, one of its
# snapshots) is on hold.
HELD_REFUSED = {STOP, DEPROVISION, DELETE}


# --- the declarations --------------------------------------------------------------------
# Names are plain strings (`str(Kind.X)` is its value): a schedule carries the name as the
# repr of its argument, and the repr of a Kind member is not something a worker can read.


def _checker(action: PodAction):
    def check(target_id: str, params: dict) -> None:
        services.pod_action_check(pod_id=target_id, action=action)
        if action in HELD_REFUSED:
            hold_refuse(target_type=TargetType.POD, target_id=target_id, what=f"pod {target_id}")
        if action is DELETE:
            snapshots = Snapshot.objects.filter(pod__pod_id=target_id).exclude(status=Snapshot.Status.DELETED)
            for pk in snapshots.values_list("pk", flat=True):
                hold_refuse(
                    target_type=TargetType.SNAPSHOT, target_id=str(pk), what=f"snapshot #{pk} of pod {target_id}"
                )

    return check


def _pod_kind(action: PodAction, run, describe, progress_unit: str = "") -> OperationKind:
    return OperationKind(
        name=str(action.kind),
        target_type=TargetType.POD,
        run=run,
        permission=action.permission,
        audit_action=action.audit_action,
        label=Kind(action.kind).label,
        progress_unit=progress_unit,
        describe=describe,
        check=_checker(action),
    )


def _pods_kind(
    kind: Kind,
    run,
    describe,
    schedule: Schedule,
    *,
    progress_unit: str,
    permission: str = "pods.sweep_orphans",
    audit_action: str | None = None,
) -> OperationKind:
    """Work on all pods, one run at a time: its target is the kind's own second name
    ("reconcile", "sweep-orphans", "retention")."""
    return OperationKind(
        name=str(kind),
        target_type=TargetType.PODS,
        target_id=kind.value.split(".", 1)[1],
        run=run,
        permission=permission,
        audit_action=audit_action or AuditAction(kind.value),
        label=kind.label,
        progress_unit=progress_unit,
        describe=describe,
        schedule=schedule,
    )


def _idle_kind(kind: Kind, run, describe, minutes: int, actor: str, permission: str) -> OperationKind:
    """Idle stop and dormancy (`services.idle`): schedules over all pods that queue pod actions."""
    schedule = Schedule(kind.label.lower(), minutes, actor)
    return _pods_kind(kind, run, describe, schedule, permission=permission, progress_unit="pods")


KINDS = [
    _idle_kind(Kind.PODS_IDLE_STOP, _idle_stop, idle_sentence, 15, "schedule:idle-stop", "pods.stop_pod"),
    _idle_kind(Kind.PODS_DORMANCY, _dormancy, dormancy_sentence, 60, "schedule:dormancy", "pods.deprovision_pod"),
    _pod_kind(PROVISION, _provision, _provisioned),
    _pod_kind(STOP, _stop, _stopped, progress_unit="bytes"),
    _pod_kind(START, _on_pod(services.pod_start), _started, progress_unit="bytes"),
    _pod_kind(DEPROVISION, _on_pod(services.pod_deprovision), _deprovisioned),
    _pod_kind(DELETE, _on_pod(services.pod_delete), _deleted),
    _pods_kind(
        Kind.PODS_RECONCILE,
        _reconcile,
        _reconciled,
        Schedule("reconcile pods", 1, "schedule:reconcile-pods"),
        permission="pods.change_pod",
        audit_action=AuditAction.POD_RECONCILE,
        progress_unit="hosts",
    ),
    _pods_kind(
        Kind.PODS_MEASURE,
        _measure,
        _measured,
        Schedule("measure pod volume sizes", 5, "schedule:measure-pod-sizes"),
        permission="pods.change_pod",
        progress_unit="volumes",
    ),
    _pods_kind(
        Kind.PODS_SWEEP_ORPHANS,
        _sweep,
        _swept,
        Schedule("sweep orphaned pod volumes", 60, "schedule:sweep-orphans"),
        progress_unit="volumes",
    ),
    _pods_kind(
        Kind.PODS_RETENTION,
        _retention,
        _retired,
        Schedule("apply snapshot retention", 60, "schedule:snapshot-retention"),
        progress_unit="snapshots",
    ),
    _pods_kind(
        Kind.PODS_VERIFY,
        _verify,
        snapshots_verified_sentence,
        Schedule("verify snapshots", 24 * 60, "schedule:verify-snapshots"),
        permission="pods.verify_snapshot",
        progress_unit="bytes",
    ),
    OperationKind(
        name=str(Kind.PODS_DRILL),
        target_type=TargetType.POD,
        run=_on_pod(services.pod_drill),
        permission="pods.verify_snapshot",
        audit_action=AuditAction.PODS_DRILL,
        label=Kind.PODS_DRILL.label,
        progress_unit="bytes",
        # It reads a snapshot, never the pod's volumes: a stop or start may run beside it
        # (`drill_check` refuses a second drill of the same pod).
        exclusive=False,
        describe=_drilled,
        check=_drill_check,
    ),
    # Writes into the running pod beside what is there, or with `replace` backs the pod up and
    # then puts the copy in PATH's place (services/restore_path.py, restore_replace.py);
    # exclusive: never beside a stop or start of the same pod.
    OperationKind(
        name=str(Kind.POD_RESTORE_PATH),
        target_type=TargetType.POD,
        run=_restore_path,
        permission="pods.restore_files_pod",
        audit_action=AuditAction.POD_RESTORE_PATH,
        label=Kind.POD_RESTORE_PATH.label,
        progress_unit="bytes",
        describe=restored_sentence,
        check=_restore_path_check,
    ),
    OperationKind(
        name=str(Kind.POD_BACKUP),
        target_type=TargetType.POD,
        run=_on_pod(services.pod_backup),
        permission="pods.backup_pod",
        audit_action=AuditAction.POD_BACKUP,
        label=Kind.POD_BACKUP.label,
        progress_unit="bytes",
        # Not exclusive: a stop, deprovision or delete asked for meanwhile is never refused as
        # busy, it supersedes the backup (`services.backup`); `backup_check` refuses the rest.
        exclusive=False,
        describe=backed_up_sentence,
        check=_backup_check,
    ),
    # POD_BACKUP_EVERY_HOURS: each turn queues the due running pods' `pod.backup` (services/backup_schedule.py).
    _pods_kind(
        Kind.PODS_BACKUPS,
        _backups,
        backups_sentence,
        Schedule("back up running pods", 5, "schedule:backups"),
        permission="pods.backup_pod",
        audit_action=AuditAction.PODS_BACKUPS,
        progress_unit="pods",
    ),
    # POD_DRILL_EVERY_DAYS: each turn queues at most one `pods.drill` (services/drill_rotation.py).
    _pods_kind(
        Kind.PODS_DRILL_ROTATION,
        _drill_rotation,
        drill_rotation_sentence,
        Schedule("rotate restore drills", 60, "schedule:drill-rotation"),
        permission="pods.verify_snapshot",
        audit_action=AuditAction.PODS_DRILL,
        progress_unit="pods",
    ),
]

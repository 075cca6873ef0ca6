"""The volumes' kinds of work, declared once: inspect one volume, cross-check one folder
with S3, and inspect every volume (the schedule). Pages, admin actions and the `volumes`
CLI start them through `apps.audit.operations.request` / `run_now`; registered from
`VolumesConfig.ready()`.
"""

from typing import Any

from apps.audit.models import Operation
from apps.audit.names import AuditAction, Kind, TargetType
from apps.audit.operations import OperationKind, Schedule, request
from apps.audit.services import Progress, audit_record, operation_log
from apps.volumes.backends import clean_path
from apps.volumes.models import Volume
from apps.volumes.services import parse_s3_url, volume_crosscheck, volume_get, volume_inspect
from apps.volumes.services.removal import (
    describe_removal,
    folder_target,
    folder_target_parse,
    removable_folder,
    volume_folder_remove,
)
from controlpanel.errors import InvalidInput, PanelError
from controlpanel.formatting import humanize_bytes, plural

INSPECT_PERMISSION = "volumes.inspect_volume"
CROSSCHECK_PERMISSION = "volumes.crosscheck_volume"
REMOVE_FOLDER_PERMISSION = "volumes.remove_volume_folder"
ALL_VOLUMES = "all"


# -- checks: refuse before any operation row is written --------------------------------------


def _volume_exists(target_id: str, params: dict) -> None:
    volume_get(name=target_id)


def _crosscheck_input(target_id: str, params: dict) -> None:
    volume_get(name=target_id)
    clean_path(params.get("folder", ""))
    parse_s3_url(params.get("s3_url", ""))


def _removable(target_id: str, params: dict) -> None:
    # The root, a path leaving the volume, a folder no rule forbids and a held one are refused here.
    name, path = folder_target_parse(target_id)
    removable_folder(volume=volume_get(name=name), path=path)
    if folder_target(name, path) != target_id:
        # One spelling per folder, so that two removals of it can never run side by side.
        raise InvalidInput(f"write the folder as {folder_target(name, path)!r}, not {target_id[:200]!r}")


# -- the work ---------------------------------------------------------------------------------


def _inspect(operation: Operation) -> dict[str, Any]:
    volume = volume_get(name=operation.target_id)
    inspection = volume_inspect(volume=volume, actor=operation.actor, operation=operation)
    return {
        "inspection_id": inspection.pk,
        "total_bytes": inspection.total_bytes,
        "total_files": inspection.total_files,
        "findings": inspection.findings.count(),
        "rules_checked": inspection.rules_checked,
        "rules_passed": inspection.rules_passed,
        "unreadable_folders": inspection.unreadable_folders,
        "special_files": inspection.special_files,
    }


def _describe_inspection(result: dict) -> str:
    sentence = f"{humanize_bytes(result['total_bytes'])} in {plural(result['total_files'], 'file')}"
    if result.get("unreadable_folders"):
        # Totals below a folder that could not be read are missing: say so before the figures.
        sentence = f"At least {sentence} ({plural(result['unreadable_folders'], 'folder')} could not be read)"
    if result.get("rules_checked"):
        sentence += f"; {result['rules_passed']} of {plural(result['rules_checked'], 'layout rule')} hold"
    return f"{sentence}; {plural(result['findings'], 'finding')}."


def _crosscheck(operation: Operation) -> dict[str, Any]:
    check = volume_crosscheck(
        volume=volume_get(name=operation.target_id),
        folder=operation.params.get("folder", ""),
        s3_url=operation.params["s3_url"],
        actor=operation.actor,
        operation=operation,
    )
    return {
        "crosscheck_id": check.pk,
        "in_sync": check.in_sync,
        "matched_files": check.matched_files,
        "volume_bytes": check.volume_bytes,
        "only_on_volume": check.only_on_volume,
        "only_on_volume_bytes": check.only_on_volume_bytes,
        "only_on_s3": check.only_on_s3,
        "only_on_s3_bytes": check.only_on_s3_bytes,
        "size_mismatches": check.size_mismatches,
    }


def _describe_crosscheck(result: dict) -> str:
    if result["in_sync"]:
        # In sync, every file on the volume matches one on S3.
        return f"In sync: {plural(result['matched_files'], 'file')} match ({humanize_bytes(result['volume_bytes'])})."
    return (
        f"Out of sync: {plural(result['matched_files'], 'file')} match, "
        f"{plural(result['only_on_volume'], 'file')} only on the volume "
        f"({humanize_bytes(result['only_on_volume_bytes'])}), "
        f"{plural(result['only_on_s3'], 'file')} only on S3 ({humanize_bytes(result['only_on_s3_bytes'])}), "
        f"{plural(result['size_mismatches'], 'size mismatch', 'size mismatches')}."
    )


def _remove_folder(operation: Operation) -> dict[str, Any]:
    name, path = folder_target_parse(operation.target_id)
    return volume_folder_remove(volume=volume_get(name=name), path=path, actor=operation.actor, operation=operation)


def _inspect_all(operation: Operation) -> dict[str, Any]:
    """Queue one inspection per registered volume; one refused (already running) stops no other."""
    names = list(Volume.objects.order_by("name").values_list("name", flat=True))
    progress = Progress(operation, total=len(names), unit="volumes")
    queued, skipped = [], []
    for name in names:
        try:
            request(Kind.VOLUME_INSPECT, name, actor=operation.actor)
        except PanelError as exc:
            # An inspection already running covers this round.
            skipped.append(name)
            operation_log(operation, f"{name}: {exc}")
        else:
            queued.append(name)
        progress.advance(1)
    progress.flush()
    audit_record(
        actor=operation.actor,
        action=AuditAction.VOLUMES_INSPECT_ALL,
        target_type=TargetType.VOLUMES,
        target_id=ALL_VOLUMES,
        message=f"queued {plural(len(queued), 'inspection')}" + (f", skipped {', '.join(skipped)}" if skipped else ""),
        operation=operation,
    )
    return {"queued": len(queued), "skipped": len(skipped)}


def _describe_inspect_all(result: dict) -> str:
    sentence = f"{plural(result['queued'], 'inspection')} queued"
    if result.get("skipped"):
        sentence += f", {plural(result['skipped'], 'volume')} skipped (already being inspected)"
    return f"{sentence}."


def _declare(kind: Kind, target_type: TargetType, **fields) -> OperationKind:
    """A kind audits as its own name and reads as its own label. The name is a plain string:
    a schedule stores `repr(name)` as its django-q2 args."""
    return OperationKind(
        name=kind.value, target_type=target_type, audit_action=AuditAction(kind.value), label=kind.label, **fields
    )


KINDS = (
    _declare(
        Kind.VOLUME_INSPECT,
        TargetType.VOLUME,
        run=_inspect,
        permission=INSPECT_PERMISSION,
        progress_unit="entries",
        describe=_describe_inspection,
        check=_volume_exists,
    ),
    # Read-only on both sides: a cross-check may run beside an inspection of the same volume.
    _declare(
        Kind.VOLUME_CROSSCHECK,
        TargetType.VOLUME,
        run=_crosscheck,
        permission=CROSSCHECK_PERMISSION,
        exclusive=False,
        progress_unit="files",
        describe=_describe_crosscheck,
        check=_crosscheck_input,
    ),
    # Destructive: one at a time per folder (`<volume>:<path>`), previewed on its confirm page.
    _declare(
        Kind.VOLUME_REMOVE_FOLDER,
        TargetType.VOLUME_FOLDER,
        run=_remove_folder,
        permission=REMOVE_FOLDER_PERMISSION,
        progress_unit="files",
        describe=describe_removal,
        check=_removable,
    ),
    _declare(
        Kind.VOLUMES_INSPECT_ALL,
        TargetType.VOLUMES,
        run=_inspect_all,
        permission=INSPECT_PERMISSION,
        progress_unit="volumes",
        describe=_describe_inspect_all,
        schedule=Schedule("inspect volumes", 360, "schedule:inspect-volumes"),
        target_id=ALL_VOLUMES,
    ),
)

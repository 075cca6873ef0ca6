"""A download out of a snapshot (`views_files.download_view`): what it sends, and the audit
event that says who took which path out of which snapshot. Reading data out of a copy is
something an auditor wants to know, as much as writing it back."""

from django.db import transaction

from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record
from apps.pods.services.snapshot_files import Selection, shown, snapshot_select
from controlpanel.formatting import humanize_bytes, plural


def snapshot_download(*, pod_id: str, number: int | str, path: str, actor: Actor) -> Selection:
    """What a download of `path` will send, with the audit event naming who takes it out of
    which snapshot (one per download asked for, written before the first byte leaves)."""
    selection = snapshot_select(pod_id=pod_id, number=number, path=path)
    snapshot = selection.snapshot
    what = f"{shown(selection.path, 1000)} ({plural(len(selection.rows), 'file')}, {humanize_bytes(selection.bytes)})"
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.POD_FILES_DOWNLOAD,
            target_type=TargetType.POD,
            target_id=snapshot.pod.pod_id,
            message=f"{what} downloaded from snapshot #{snapshot.pk}"[:4000],
            details={
                "snapshot": snapshot.pk,
                "path": selection.path,
                "folder": selection.is_folder,
                "files": len(selection.rows),
                "bytes": selection.bytes,
            },
        )
    return selection

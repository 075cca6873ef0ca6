"""python manage.py pods provision|stop|start|deprovision|delete POD_ID, reconcile,
sweep-orphans [--dry-run], retention, list [--json], show POD_ID [--json],
verify|drill POD_ID [--json], backup POD_ID [--json], files POD_ID N [PATH] [--json],
restore-path POD_ID N PATH [--replace].

Synchronous: the work runs as an Operation right here (`run_now`, the same kinds as the
pages and schedules); a failure prints one line and exits non-zero."""

import getpass
import json
from collections.abc import Callable
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError

from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.audit.operations import kind_get, run_now, sentence
from apps.pods.actions import POD_ACTIONS, PROVISION
from apps.pods.selectors import pod_as_dict, pods_with_totals
from apps.pods.services import pod_get
from apps.pods.services.snapshot_files import mtime_utc, shown, snapshot_entries
from controlpanel.errors import PanelError
from controlpanel.formatting import first_line

# The housekeeping subcommands, by the kind each runs.
HOUSEKEEPING = {
    "reconcile": Kind.PODS_RECONCILE,
    "sweep-orphans": Kind.PODS_SWEEP_ORPHANS,
    "retention": Kind.PODS_RETENTION,
}


@dataclass(frozen=True)
class ProofVerb:
    """A verb that proves one pod's snapshot restorable: the kind it runs (its label is the
    help), whether POD is the kind's target or its `pod_id` parameter, and when a run that
    ended well still proved nothing (a verification reads and reports, it does not raise)."""

    kind: Kind
    pod_is_target: bool
    unproven: Callable[[dict], bool] = lambda result: False


PROOF_VERBS = {
    "verify": ProofVerb(
        Kind.PODS_VERIFY, pod_is_target=False, unproven=lambda r: bool(r["failed"]) or not r["verified"]
    ),
    "drill": ProofVerb(Kind.PODS_DRILL, pod_is_target=True),
}


class Command(BaseCommand):
    help = (
        "Provision, stop, start, deprovision and delete pods; reconcile, sweep orphans; verify, drill, list, show; "
        "a snapshot's files, and one path restored beside the current one or in its place."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        provision = sub.add_parser("provision", help="create the 8 volumes and the container, start it")
        provision.add_argument("pod_id")
        provision.add_argument("--image", help="image for the pod (default: POD_IMAGE)")
        provision.add_argument("--host", help="DockerHost name (default: local)")
        for action, text in [
            ("stop", "snapshot, verify, then remove the container and its 8 volumes"),
            ("start", "reattach a paused pod, or restore a stopped one from its latest snapshot"),
            ("deprovision", "remove the container and the 8 volumes (snapshots stay)"),
            ("delete", "remove the container, the 8 volumes and every snapshot"),
        ]:
            sub.add_parser(action, help=text).add_argument("pod_id")
        sub.add_parser("reconcile", help="mark crashed pods paused, unreachable hosts' pods unknown, find leaks")
        sweep = sub.add_parser("sweep-orphans", help="remove orphaned pinacle-vol-* volumes past the grace period")
        sweep.add_argument("--dry-run", action="store_true", help="list them with sizes; remove nothing")
        retention = sub.add_parser("retention", help="purge failed snapshots and complete ones beyond retention")
        retention.add_argument("--keep", type=int, help="complete snapshots kept per pod (default SNAPSHOT_RETENTION)")
        for verb, proof in PROOF_VERBS.items():
            parser_ = sub.add_parser(verb, help=f"{kind_get(proof.kind).label.lower()} of one pod, now")
            parser_.add_argument("pod_id")
            parser_.add_argument("--json", dest="as_json", action="store_true")
        backup = sub.add_parser("backup", help="copy a running pod's 8 volumes into the store; it keeps running")
        backup.add_argument("pod_id")
        backup.add_argument("--json", dest="as_json", action="store_true")
        listing = sub.add_parser("list", help="every pod with status, host, volume bytes and last snapshot")
        listing.add_argument("--json", dest="as_json", action="store_true")
        files = sub.add_parser("files", help="the folders and files at PATH (default /) in snapshot N of a pod")
        files.add_argument("pod_id")
        files.add_argument("number", help="the snapshot's number (#N on the pod page)")
        files.add_argument("path", nargs="?", default="/")
        files.add_argument("--json", dest="as_json", action="store_true")
        restore = sub.add_parser(
            "restore-path", help="put PATH from snapshot N into the running pod beside it, as PATH.from-snapshot-N"
        )
        restore.add_argument("pod_id")
        restore.add_argument("number")
        restore.add_argument("path")
        restore.add_argument(
            "--replace",
            action="store_true",
            help="back the running pod up first, then put the snapshot's PATH in the current one's place",
        )
        show = sub.add_parser("show", help="one pod with its volumes and last snapshot")
        show.add_argument("pod_id")
        show.add_argument("--json", dest="as_json", action="store_true")

    def handle(self, *args, action, **options):
        actor = f"cli:{getpass.getuser()}"
        try:
            if action == "list":
                return self._list(as_json=options["as_json"])
            if action == "show":
                return self._show(pod_id=options["pod_id"], as_json=options["as_json"])
            if action == "files":
                return self._files(options["pod_id"], options["number"], options["path"], as_json=options["as_json"])
            if action == "restore-path":
                where = {"snapshot": options["number"], "path": options["path"], "replace": options["replace"]}
                operation = run_now(Kind.POD_RESTORE_PATH, options["pod_id"], actor=actor, **where)
                self.stdout.write(sentence(operation))
                return None
            if action == "backup":
                return self._backup(pod_id=options["pod_id"], actor=actor, as_json=options["as_json"])
            if action in PROOF_VERBS:
                return self._prove(action, pod_id=options["pod_id"], actor=actor, as_json=options["as_json"])
            if action in HOUSEKEEPING:
                params = {
                    "sweep-orphans": {"dry_run": options.get("dry_run")},
                    "retention": {"keep": options.get("keep")},
                }
                operation = run_now(HOUSEKEEPING[action], actor=actor, **params.get(action, {}))
            else:
                params = {"image": options["image"], "host": options["host"]} if action == PROVISION.name else {}
                operation = run_now(POD_ACTIONS[action].kind, options["pod_id"], actor=actor, **params)
        except PanelError as exc:
            raise CommandError(first_line(exc)) from None
        self.stdout.write(self._summary(action, operation.result))
        return None

    def _summary(self, action: str, result: dict) -> str:
        if action == "sweep-orphans":
            verb = "would remove" if result.get("dry_run") else "removed"
            lines = [f"{verb} {len(result['orphans']) if result.get('dry_run') else len(result['removed'])} volumes"]
            lines += [f"  {o['name']}  {o['bytes'] or 0} bytes  ({o['reason']})" for o in result["orphans"]]
            return "\n".join(lines)
        if action == "reconcile":
            lines = []
            for host, report in result["hosts"].items():
                if report["reachable"]:
                    lines.append(f"{host}: {len(report['changed'])} pods changed, {len(report['orphans'])} orphans")
                else:
                    lines.append(f"{host}: unreachable ({report['error']}); {len(report['unknown'])} pods unknown")
            return "\n".join(lines)
        # The exact result, as before the sentence people read was added to it.
        return json.dumps({key: value for key, value in result.items() if key != "summary"}, sort_keys=True)

    def _backup(self, *, pod_id: str, actor: str, as_json: bool) -> None:
        """Back up a running pod now: `{"snapshot", "stored_bytes", "seconds"}` or one sentence."""
        operation = run_now(Kind.POD_BACKUP, pod_id, actor=actor)
        if as_json:
            keys = ("snapshot", "stored_bytes", "seconds")
            self.stdout.write(json.dumps({key: operation.result[key] for key in keys}))
        else:
            self.stdout.write(sentence(operation))

    def _prove(self, verb: str, *, pod_id: str, actor: str, as_json: bool) -> None:
        """One sentence (or JSON), as the pod page's button would end; non-zero when it proved nothing."""
        proof = PROOF_VERBS[verb]
        pod_id = pod_get(pod_id=pod_id).pod_id
        answer = {"pod_id": pod_id, "kind": str(proof.kind), "operation": None}
        operation: Operation | None = None
        try:
            if proof.pod_is_target:
                operation = run_now(proof.kind, pod_id, actor=actor)
            else:
                operation = run_now(proof.kind, actor=actor, pod_id=pod_id)
        except PanelError as exc:
            said, ok = first_line(exc), False
        else:
            said, ok = sentence(operation), not proof.unproven(operation.result)
            answer["operation"] = operation.pk
            answer["result"] = {key: value for key, value in operation.result.items() if key != "summary"}
        if as_json:
            self.stdout.write(json.dumps({**answer, "ok": ok, "sentence": said}, indent=2, sort_keys=True))
        if not ok:
            raise CommandError(said)
        if not as_json:
            self.stdout.write(said)

    def _files(self, pod_id: str, number: str, path: str, *, as_json: bool) -> None:
        entries = [entry.as_dict() for entry in snapshot_entries(pod_id=pod_id, number=number, path=path)]
        if as_json:
            self.stdout.write(json.dumps(entries, indent=2))
            return
        for entry in entries:
            when = mtime_utc(entry["mtime"])
            mtime = when.strftime("%Y-%m-%d %H:%M") if when else "-"
            kind = "dir " if entry["type"] == "folder" else "file"
            self.stdout.write(f"{kind} {entry['size']:>14} {mtime:<16} {shown(entry['path'], 4096)}")

    def _list(self, *, as_json: bool) -> None:
        rows = [
            {
                "pod_id": pod.pod_id,
                "status": pod.status,
                "host": pod.host.name,
                "volume_bytes": pod.volume_bytes or 0,
                "last_snapshot": None
                if pod.last_snapshot_id is None
                else {
                    "id": pod.last_snapshot_id,
                    "status": pod.last_snapshot_status,
                    "total_bytes": pod.last_snapshot_bytes,
                },
            }
            for pod in pods_with_totals().iterator()
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            snap = row["last_snapshot"]
            snap_text = f"#{snap['id']} {snap['status']} {snap['total_bytes']} B" if snap else "-"
            self.stdout.write(
                f"{row['pod_id']:<30} {row['status']:<15} {row['host']:<12} {row['volume_bytes']:>14} B  {snap_text}"
            )

    def _show(self, *, pod_id: str, as_json: bool) -> None:
        data = pod_as_dict(pod_get(pod_id=pod_id))
        if as_json:
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(f"{data['pod_id']}: {data['status']} on {data['host']} ({data['image']})")
        self.stdout.write(f"container: {data['container_id'] or '-'}")
        if data["last_error"]:
            self.stdout.write(f"last error: {data['last_error']}")
        for volume in data["volumes"]:
            state = "exists" if volume["exists"] else "absent"
            self.stdout.write(f"  {volume['docker_name']:<50} {volume['mount_path']:<12} {state}")
        snap = data["last_snapshot"]
        self.stdout.write(
            f"last snapshot: #{snap['id']} {snap['status']} {snap['total_bytes']} B" if snap else "last snapshot: -"
        )

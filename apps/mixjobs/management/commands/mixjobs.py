import json

from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import operation_run_inline
from apps.mixjobs.services import (
    mixjobs_cleanup,
    mixjobs_cleanup_report,
    mixjobs_cleanup_start,
    mixjobs_sync_run,
    mixjobs_sync_start,
)
from controlpanel.errors import PanelError


class Command(BaseCommand):
    help = "Mirror mix job files (sync) or delete expired ones (cleanup)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["sync", "cleanup"])
        parser.add_argument("--session", help="only this session (cleanup)")
        parser.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, action, session, dry_run, json: bool, **options):
        try:
            if action == "sync":
                result = self._operation(mixjobs_sync_start(actor="cli"), mixjobs_sync_run)
            elif dry_run:
                report = mixjobs_cleanup(actor="cli", session_id=session, dry_run=True)
                result = report.as_dict()
            else:
                # The operation row keeps counts; the CLI prints the full lists it was given.
                reports = []
                operation = mixjobs_cleanup_start(actor="cli", session_id=session)
                self._operation(operation, lambda operation: reports.append(mixjobs_cleanup_report(operation)) or {})
                result = reports[0].as_dict()
        except PanelError as exc:
            raise CommandError(str(exc)) from None
        if json:
            self.stdout.write(_json(result))
        elif action == "sync":
            self.stdout.write(
                f"{result['jobs']} jobs, {result['problems']} with problems, {result['vanished']} vanished"
            )
        else:
            verb = "would delete" if result.get("dry_run") else "deleted"
            jobs = result["deleted_jobs"]
            count = jobs if isinstance(jobs, int) else len(jobs)
            self.stdout.write(
                f"{verb} {count} job(s), {result['bytes_reclaimed']} bytes; {len(result['skipped'])} skipped"
            )
            for skipped in result["skipped"]:
                self.stdout.write(f"  skipped {skipped['path']}: {skipped['reason']}")

    def _operation(self, operation, run):
        return operation_run_inline(operation=operation, work=lambda op: run(operation=op)).result


def _json(result: dict) -> str:
    return json.dumps(result, indent=2, default=str)

import json

from django.core.management.base import BaseCommand, CommandError

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.mixjobs.services import mixjobs_cleanup
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
                result = _printed(run_now(Kind.MIXJOBS_SYNC, actor="cli").result)
            elif dry_run:
                # Deletes nothing and starts no operation; the audit log still records the look.
                result = mixjobs_cleanup(actor="cli", session_id=session, dry_run=True).as_dict()
            elif session is not None:
                # `itemised`: the CLI prints every deleted job and file, so the result keeps them.
                operation = run_now(Kind.MIXJOBS_CLEANUP_SESSION, session, actor="cli", itemised=True)
                result = _printed(operation.result)
            else:
                result = _printed(run_now(Kind.MIXJOBS_CLEANUP, actor="cli", itemised=True).result)
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


def _printed(result: dict) -> dict:
    """The service's result as the CLI always printed it (the operation adds a sentence for pages)."""
    return {key: value for key, value in result.items() if key != "summary"}


def _json(result: dict) -> str:
    return json.dumps(result, indent=2, default=str)

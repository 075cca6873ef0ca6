"""python manage.py sessions sync|cleanup --policy download|exit|manual [--session ID] [--dry-run] [--json]"""

import getpass
import json

from django.core.management.base import BaseCommand, CommandError

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.separations.services import POLICIES, cleanup_plan, policy_get, sessions_backend
from controlpanel.errors import PanelError


class Command(BaseCommand):
    help = "Mirror the sessions volume, or run a cleanup batch (synchronously)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["sync", "cleanup"])
        parser.add_argument("--policy", choices=POLICIES)
        parser.add_argument("--session", action="append", default=[], help="a session id (manual; repeatable)")
        parser.add_argument("--dry-run", action="store_true", help="show what would be deleted; change nothing")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the result as JSON")

    def handle(self, *args, action, policy, session, dry_run, as_json, **options):
        actor = f"cli:{getpass.getuser()}"
        try:
            if action == "sync":
                if dry_run:
                    raise CommandError("sync changes only the panel's mirror; it has no --dry-run")
                result = run_now(Kind.SESSIONS_SYNC, actor=actor).result
                text = (
                    f"{result['sessions']} sessions on {result['volume']} ({result['new']} new, "
                    f"{result['gone']} gone), {result['total_bytes']} bytes in {result['total_files']} files"
                    + "".join(f"\n  problem: {line}" for line in result.get("problems", []))
                )
            else:
                if not policy:
                    raise CommandError("cleanup needs --policy download, exit or manual")
                if dry_run:
                    plan = cleanup_plan(backend=sessions_backend(), policy=policy_get(policy), session_ids=session)
                    result = plan.as_dict()
                    text = (
                        f"dry run, {plan.policy.description}: looked at {len(plan.looked_at)} on {plan.volume}, "
                        f"would delete {len(plan.to_delete)} ({plan.total_bytes} bytes)"
                        + "".join(f"\n  {s.session_id}  {s.total_bytes} bytes" for s in plan.to_delete)
                        + "".join(f"\n  skipped {line}" for line in plan.skipped)
                    )
                else:
                    result = run_now(Kind.SESSIONS_CLEANUP, actor=actor, policy=policy, session_ids=session).result
                    text = (
                        f"deleted {len(result['deleted'])} sessions, {result['bytes_reclaimed']} bytes reclaimed, "
                        f"{result['commits']} commit{'s' if result['commits'] != 1 else ''}"
                        + "".join(f"\n  {sid}" for sid in result["deleted"])
                        + "".join(f"\n  skipped {line}" for line in result.get("skipped", []))
                    )
        except PanelError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result, indent=2, sort_keys=True) if as_json else text)

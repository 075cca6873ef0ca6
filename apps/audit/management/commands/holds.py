"""`manage.py holds set|release|list`: the same audited services as the admin and the pages."""

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from apps.audit.holds import HOLDABLE, hold_release, hold_set, holds_active
from controlpanel.errors import PanelError


class Command(BaseCommand):
    help = "Put storage on hold (no deletion touches it), release it, or list what is held."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        put = sub.add_parser("set", help="put an item on hold")
        put.add_argument("target_type", choices=sorted(HOLDABLE))
        put.add_argument("target_id")
        put.add_argument("--reason", required=True)
        put.add_argument("--until", help="ISO time in UTC, e.g. 2026-12-24T00:00")
        release = sub.add_parser("release", help="release an item's hold")
        release.add_argument("target_type", choices=sorted(HOLDABLE))
        release.add_argument("target_id")
        listing = sub.add_parser("list", help="what is on hold now")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        try:
            if options["action"] == "set":
                hold = hold_set(
                    target_type=options["target_type"],
                    target_id=options["target_id"],
                    reason=options["reason"],
                    until=_utc(options["until"]),
                    actor="cli",
                )
                self.stdout.write(f"{hold.target_type} {hold.target_id} is on hold: {hold.reason}")
            elif options["action"] == "release":
                hold_release(target_type=options["target_type"], target_id=options["target_id"], actor="cli")
                self.stdout.write(f"released the hold on {options['target_type']} {options['target_id']}")
            else:
                self._list(as_json=options["json"])
        except PanelError as exc:
            raise CommandError(str(exc)) from None

    def _list(self, *, as_json: bool) -> None:
        holds = list(holds_active().order_by("target_type", "target_id"))
        if as_json:
            rows = [
                {
                    "target_type": h.target_type,
                    "target_id": h.target_id,
                    "reason": h.reason,
                    "held_by": h.held_by,
                    "until": h.until.isoformat() if h.until else None,
                }
                for h in holds
            ]
            self.stdout.write(json.dumps(rows, indent=1))
            return
        for h in holds:
            until = f" until {h.until:%Y-%m-%d %H:%M} UTC" if h.until else ""
            self.stdout.write(f"{h.target_type} {h.target_id}: {h.reason} (by {h.held_by}{until})")
        if not holds:
            self.stdout.write("nothing is on hold")


def _utc(value: str | None):
    if not value:
        return None
    from datetime import UTC

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PanelError(f"--until {value[:40]!r} is not an ISO time such as 2026-12-24T00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

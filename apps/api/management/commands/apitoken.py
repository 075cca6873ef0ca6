"""`manage.py apitoken create NAME --group operator|viewer | revoke NAME | list`."""

import json

from django.core.management.base import BaseCommand, CommandError

from apps.api.models import ApiToken
from apps.api.services import ROLES, apitoken_create, apitoken_revoke, role_of
from controlpanel.errors import PanelError


class Command(BaseCommand):
    help = "Make an API token (printed once), revoke one, or list them."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="make a token; it is printed once, alone on the last line")
        create.add_argument("name", help="lower-case letters, digits, '.', '_' or '-'")
        create.add_argument("--group", required=True, choices=ROLES, help="the role whose permissions it has")
        revoke = sub.add_parser("revoke", help="refuse the token from now on")
        revoke.add_argument("name")
        listing = sub.add_parser("list", help="every token, without the secret")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        try:
            if options["action"] == "create":
                token, secret = apitoken_create(name=options["name"], group=options["group"], actor="cli")
                self.stdout.write(
                    f"API token {token.name} made: it acts as {token.user.get_username()} with the "
                    f"{options['group']} role. It is shown only now; keep it somewhere safe:"
                )
                # Alone on the last line, so a script can take it with `tail -n 1`.
                self.stdout.write(secret)
            elif options["action"] == "revoke":
                token = apitoken_revoke(name=options["name"], actor="cli")
                self.stdout.write(f"API token {token.name} revoked; requests with it are refused from now on")
            else:
                self._list(as_json=options["json"])
        except PanelError as exc:
            raise CommandError(str(exc)) from None

    def _list(self, *, as_json: bool) -> None:
        tokens = list(ApiToken.objects.select_related("user").prefetch_related("user__groups"))
        rows = [
            {
                "name": token.name,
                "prefix": token.prefix,
                "role": role_of(token),
                "created_at": token.created_at.isoformat(),
                "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
                "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
            }
            for token in tokens
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=1))
            return
        for row in rows:
            state = f"revoked {row['revoked_at'][:16]}" if row["revoked_at"] else "active"
            used = f"last used {row['last_used_at'][:16]}" if row["last_used_at"] else "never used"
            self.stdout.write(f"{row['name']} ({row['prefix']}…, {row['role']}): {state}, {used}")
        if not rows:
            self.stdout.write("no API tokens")

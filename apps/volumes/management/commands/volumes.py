"""python manage.py volumes add NAME URL [--purpose P] | inspect NAME [--json]
| preset NAME PRESET | crosscheck NAME FOLDER s3://bucket/prefix [--json] | list"""

import getpass
import json

from django.core.management.base import BaseCommand, CommandError

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.volumes.models import CrossCheck, Inspection, Volume
from apps.volumes.presets import PRESETS
from apps.volumes.services import crosscheck_as_dict, inspection_as_dict, layout_preset_import, volume_add, volume_get
from controlpanel.errors import PanelError


class Command(BaseCommand):
    help = "Register, inspect and cross-check volumes (synchronously)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a volume")
        add.add_argument("name")
        add.add_argument("url", help="local:///path or modal://volume?environment=env")
        add.add_argument("--purpose", default="")
        add.add_argument("--notes", default="")
        inspect = sub.add_parser("inspect", help="walk a volume once and check its layout rules")
        inspect.add_argument("name")
        inspect.add_argument("--json", dest="as_json", action="store_true")
        preset = sub.add_parser("preset", help="import a plan's layout rules")
        preset.add_argument("name")
        preset.add_argument("preset", choices=sorted(PRESETS))
        cross = sub.add_parser("crosscheck", help="compare a volume folder with an S3 prefix")
        cross.add_argument("name")
        cross.add_argument("folder", help="folder on the volume ('' or / for the root)")
        cross.add_argument("s3_url", help="s3://bucket/prefix")
        cross.add_argument("--json", dest="as_json", action="store_true")
        sub.add_parser("list", help="registered volumes")

    def handle(self, *args, action, **options):
        actor = f"cli:{getpass.getuser()}"
        try:
            getattr(self, f"do_{action}")(actor=actor, **options)
        except PanelError as exc:
            raise CommandError(str(exc)) from None

    def do_add(self, *, actor, name, url, purpose, notes, **_):
        volume = volume_add(name=name, url=url, purpose=purpose, notes=notes, actor=actor)
        self.stdout.write(f"registered volume {volume.name} at {volume.url}")

    def do_list(self, **_):
        for volume in Volume.objects.all():
            self.stdout.write(f"{volume.name}\t{volume.url}\t{volume.purpose}")

    def do_preset(self, *, actor, name, preset, **_):
        rules = layout_preset_import(volume=volume_get(name=name), preset=preset, actor=actor)
        self.stdout.write(f"{name}: {len(rules)} rules from the {preset} preset")
        for rule in rules:
            self.stdout.write(f"  [{rule.severity}] {rule}")

    def do_inspect(self, *, actor, name, as_json, **_):
        operation = run_now(Kind.VOLUME_INSPECT, name, actor=actor)
        inspection = Inspection.objects.get(pk=operation.result["inspection_id"])
        report = inspection_as_dict(inspection)
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
            return
        at_least = "at least " if report["totals_are_lower_bound"] else ""
        self.stdout.write(
            f"{name}: {at_least}{report['total_bytes']} bytes in {report['total_files']} files, "
            f"{report['rules_passed']} of {report['rules_checked']} rules hold, "
            f"~${report['monthly_cost_usd']:.2f}/month"
        )
        for finding in report["findings"]:
            self.stdout.write(f"  [{finding['severity']}] {finding['message']}")

    def do_crosscheck(self, *, actor, name, folder, s3_url, as_json, **_):
        operation = run_now(Kind.VOLUME_CROSSCHECK, name, actor=actor, folder=folder, s3_url=s3_url)
        check = CrossCheck.objects.get(pk=operation.result["crosscheck_id"])
        report = crosscheck_as_dict(check)
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
            return
        self.stdout.write(
            f"{name}:{check.folder or '/'} vs {s3_url}: {check.matched_files} match, "
            f"{check.only_on_volume} only on the volume ({check.only_on_volume_bytes} bytes), "
            f"{check.only_on_s3} only on S3 ({check.only_on_s3_bytes} bytes), {check.size_mismatches} size mismatches"
        )

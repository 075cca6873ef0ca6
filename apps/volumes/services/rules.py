"""Layout rules: checking one as typed, counting them all during one streaming walk, and
importing a preset's rules (the presets themselves are data in `apps.volumes.presets`)."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, audit_record
from apps.volumes.backends import clean_path
from apps.volumes.models import Finding, LayoutRule, Volume
from apps.volumes.presets import PRESETS
from controlpanel.errors import InvalidInput


def glob_regex(pattern: str) -> re.Pattern:
    """`*` and `?` stay inside one folder, `**` crosses folders: cache/tusz/train/*.npz
    counts the split's own files, not those of a nested folder."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def glob_literal_prefix(pattern: str) -> str:
    """The folder part before the first wildcard: only paths under it can match."""
    cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=len(pattern))
    head = pattern[:cut]
    return head[: head.rfind("/") + 1] if "/" in head else ""


def layout_rule_clean(rule: LayoutRule) -> None:
    """Check a rule as typed in the admin or a preset; InvalidInput says what is wrong."""
    if rule.kind == LayoutRule.Kind.FILE_COUNT:
        if rule.count is None:
            raise InvalidInput(f"rule {rule.path!r}: a file count rule needs a count")
        pattern = rule.path.strip("/")
        if not pattern or ".." in pattern.split("/"):
            raise InvalidInput(f"rule pattern {rule.path!r} is not valid")
    else:
        clean_path(rule.path)
        if not rule.path.strip("/"):
            raise InvalidInput("a rule needs a path below the volume root")


@dataclass
class RuleState:
    rule: LayoutRule
    path: str
    matches: int = 0
    bytes: int = 0
    seen: bool = False
    regex: re.Pattern | None = None
    prefix: str = ""


class RuleEvaluator:
    """Counts what each rule needs while the walk streams past; one pass, no second walk."""

    def __init__(self, rules: Iterable[LayoutRule]):
        self.states: list[RuleState] = []
        self.folders: dict[str, list[RuleState]] = {}
        self.files: dict[str, list[RuleState]] = {}
        self.absent: list[RuleState] = []
        self.counts: list[RuleState] = []
        for rule in rules:
            state = RuleState(rule=rule, path=rule.path.strip("/"))
            self.states.append(state)
            if rule.kind in {LayoutRule.Kind.FOLDER_EXISTS, LayoutRule.Kind.FOLDER_ABSENT}:
                self.folders.setdefault(state.path, []).append(state)
                if rule.kind == LayoutRule.Kind.FOLDER_ABSENT:
                    state.prefix = state.path + "/"
                    self.absent.append(state)
            elif rule.kind == LayoutRule.Kind.FILE_EXISTS:
                self.files.setdefault(state.path, []).append(state)
            elif rule.kind == LayoutRule.Kind.FILE_COUNT:
                state.regex = glob_regex(state.path)
                state.prefix = glob_literal_prefix(state.path)
                self.counts.append(state)

    def folder(self, path: str) -> None:
        for state in self.folders.get(path, ()):
            state.seen = True

    def counting_in(self, parent: str) -> list[RuleState]:
        """The count rules that can match a file directly in `parent` (asked once a folder)."""
        head = f"{parent}/" if parent else ""
        return [state for state in self.counts if head.startswith(state.prefix)]

    def file_seen(self, path: str) -> None:
        for state in self.files.get(path, ()):
            state.seen = True

    def run(self, parent: str, size: int, files: int) -> None:
        """A run of `files` files directly in `parent`, `size` bytes in all."""
        if parent:
            # A backend that lists no folder entries still proves the parent exists.
            self.folder(parent)
        head = f"{parent}/" if parent else ""
        for state in self.absent:
            if head.startswith(state.prefix):
                state.bytes += size
                state.matches += files

    def findings(self) -> tuple[list[Finding], int]:
        """Unmet rules as unsaved findings, and how many rules held."""
        findings, passed = [], 0
        for state in self.states:
            rule, message, size = state.rule, "", None
            if rule.kind == LayoutRule.Kind.FOLDER_EXISTS and not state.seen:
                message = f"{state.path}/ is missing"
            elif rule.kind == LayoutRule.Kind.FOLDER_ABSENT and (state.seen or state.matches):
                files = f"{state.matches} file" + ("s" if state.matches != 1 else "")
                message = f"{state.path}/ should not exist: {files} in it"
                size = state.bytes
            elif rule.kind == LayoutRule.Kind.FILE_EXISTS and not state.seen:
                message = f"{state.path} is missing"
            elif rule.kind == LayoutRule.Kind.FILE_COUNT:
                expected = rule.count or 0
                exact = rule.count_mode == LayoutRule.CountMode.EXACTLY
                if (exact and state.matches != expected) or (not exact and state.matches < expected):
                    wanted = "exactly" if exact else "at least"
                    message = f"{state.path}: {state.matches} files, expected {wanted} {expected}"
            if message:
                if rule.description:
                    message = f"{message} ({rule.description})"
                findings.append(Finding(rule=rule, severity=rule.severity, message=message[:500], bytes=size))
            else:
                passed += 1
        return findings, passed


def layout_preset_import(*, volume: Volume, preset: str, actor: Actor) -> list[LayoutRule]:
    """Replace the rules of any earlier preset with this one's; hand-written rules stay."""
    if preset not in PRESETS:
        raise InvalidInput(f"unknown preset {preset!r}: choose {', '.join(sorted(PRESETS))}")
    rules = [LayoutRule(volume=volume, preset=preset, **spec) for spec in PRESETS[preset]["rules"]]
    for rule in rules:
        layout_rule_clean(rule)
    with transaction.atomic():
        replaced, _ = LayoutRule.objects.filter(volume=volume).exclude(preset="").delete()
        created = LayoutRule.objects.bulk_create(rules)
        audit_record(
            actor=actor,
            action=AuditAction.VOLUME_PRESET,
            target_type=TargetType.VOLUME,
            target_id=volume.name,
            message=f"imported the {preset} preset: {len(created)} rules ({replaced} earlier preset rules replaced)",
        )
    return created

"""Volume inspection: the registry, one streaming walk per inspection (sizes per folder,
extensions, largest files, layout rules), presets for the two cache plans, the S3
cross-check and cost estimates.

Only the interface in `apps.volumes.backends` is used, so a local folder and a Modal
Volume are inspected by the same code. A walk never holds the list of entries: it keeps
running totals, a heap of the largest files and one counter per rule.
"""

import heapq
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.db import transaction

from apps.audit.models import Operation
from apps.audit.services import (
    Actor,
    Progress,
    audit_record,
    operation_create,
    operation_enqueue,
    operation_log,
    operation_run_inline,
    storage_sample_record,
)
from apps.volumes.backends import VolumeBackend, backend_for_url, clean_path
from apps.volumes.models import CrossCheck, Finding, Inspection, LayoutRule, Severity, Volume
from controlpanel.errors import InvalidInput, NotFound, PanelError, Unreachable
from controlpanel.paths import validate_id

TARGET_TYPE = "volume"
INSPECT_TASK = "apps.volumes.tasks.volume_inspect_task"
CROSSCHECK_TASK = "apps.volumes.tasks.volume_crosscheck_task"
LARGEST_FILES = 20
GROWTH_ROWS = 50
CROSSCHECK_SAMPLES = 50
# Progress is written per this many entries (and at most once a second by Progress itself).
PROGRESS_EVERY = 1000
GB = 1000**3


# -- registry ------------------------------------------------------------------------------


def volume_backend(*, volume: Volume) -> VolumeBackend:
    """The backend for a registered volume; a URL edited into nonsense is InvalidInput."""
    return backend_for_url(volume.url)


def volume_get(*, name: str) -> Volume:
    validate_id(name, kind="volume name")
    volume = Volume.objects.filter(name=name).first()
    if volume is None:
        raise NotFound(f"volume {name!r} is not registered; add it with `manage.py volumes add {name} URL`")
    return volume


def volume_add(*, name: str, url: str, actor: Actor, purpose: str = "", notes: str = "") -> Volume:
    validate_id(name, kind="volume name")
    backend_for_url(url)  # refuses unsupported or malformed URLs before anything is written
    with transaction.atomic():
        if Volume.objects.filter(name=name).exists():
            raise InvalidInput(f"volume {name!r} is already registered")
        volume = Volume.objects.create(name=name, url=url, purpose=purpose, notes=notes)
        audit_record(
            actor=actor,
            action="volume.add",
            target_type=TARGET_TYPE,
            target_id=name,
            message=f"registered {url}" + (f" ({purpose})" if purpose else ""),
        )
    return volume


# -- cost ------------------------------------------------------------------------------------


def volume_price_per_gb_month(*, url: str) -> float:
    scheme = urlparse(url or "").scheme
    if scheme == "modal":
        return settings.PRICE_MODAL_VOLUME_GB_MONTH
    if scheme == "local":
        return settings.PRICE_LOCAL_GB_MONTH
    return 0.0


def volume_monthly_cost(*, url: str, total_bytes: int) -> float:
    """US$ per month at the configured price; GB here is 10^9 bytes, as providers bill."""
    return round(total_bytes / GB * volume_price_per_gb_month(url=url), 2)


def s3_monthly_cost(*, total_bytes: int) -> float:
    return round(total_bytes / GB * settings.PRICE_S3_GB_MONTH, 2)


# -- layout rules ----------------------------------------------------------------------------


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
class _RuleState:
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
        self.states: list[_RuleState] = []
        self.folders: dict[str, list[_RuleState]] = {}
        self.files: dict[str, list[_RuleState]] = {}
        self.absent: list[_RuleState] = []
        self.counts: list[_RuleState] = []
        for rule in rules:
            state = _RuleState(rule=rule, path=rule.path.strip("/"))
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

    def counting_in(self, parent: str) -> list[_RuleState]:
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


# The two plans the team argued about. Where the cache lives decides which one applies.
PRESETS: dict[str, dict[str, Any]] = {
    "s3-mount": {
        "description": "The cache is read from S3 mounted at /cache; the volume holds results only.",
        "rules": [
            {
                "kind": "folder_absent",
                "path": "cache/tusz",
                "severity": "error",
                "description": "the S3-mount plan reads the cache from S3; a copy here is paid twice",
            },
            {
                "kind": "folder_absent",
                "path": "results",
                "severity": "error",
                "description": "a stray results/results/ duplicate",
            },
        ],
    },
    "volume-cache": {
        "description": "The cache is copied to the volume under cache/tusz/{train,dev}.",
        "rules": [
            {"kind": "folder_exists", "path": "cache/tusz/train", "severity": "error"},
            {"kind": "folder_exists", "path": "cache/tusz/dev", "severity": "error"},
            {
                "kind": "file_count",
                "path": "cache/tusz/train/*.npz",
                "count_mode": "exactly",
                "count": 4667,
                "severity": "error",
                "description": "the train split is incomplete or has extra files",
            },
            {
                "kind": "file_count",
                "path": "cache/tusz/dev/*.npz",
                "count_mode": "exactly",
                "count": 1832,
                "severity": "error",
                "description": "the dev split is incomplete or has extra files",
            },
            {"kind": "file_exists", "path": "cache/tusz/manifest.json", "severity": "error"},
            {"kind": "file_exists", "path": "cache/tusz/_dataset_index.json", "severity": "error"},
            {
                "kind": "folder_absent",
                "path": "results",
                "severity": "error",
                "description": "a stray results/results/ duplicate",
            },
        ],
    },
}


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
            action="volume.preset",
            target_type=TARGET_TYPE,
            target_id=volume.name,
            message=f"imported the {preset} preset: {len(created)} rules ({replaced} earlier preset rules replaced)",
        )
    return created


# -- inspection ------------------------------------------------------------------------------


@dataclass
class WalkTotals:
    total_bytes: int = 0
    total_files: int = 0
    total_folders: int = 0
    symlinks: int = 0
    folders: dict[str, list[int]] = field(default_factory=dict)
    extensions: dict[str, list[int]] = field(default_factory=dict)
    largest: list[tuple[int, str]] = field(default_factory=list)


def volume_walk(
    *,
    backend: VolumeBackend,
    depth: int,
    evaluator: RuleEvaluator | None = None,
    progress: Progress | None = None,
    largest: int = LARGEST_FILES,
) -> WalkTotals:
    """One streaming pass: totals, per-folder sums to `depth`, extensions, the largest files
    (a bounded heap) and rule counters. Memory grows with folders, never with files.

    Backends list a folder's files one after another, so per file we only add to a running
    sum; the sum goes to the enclosing folders and the rules once per run of one folder."""
    totals = WalkTotals()
    folders, extensions, heap = totals.folders, totals.extensions, totals.largest
    evaluator = evaluator or RuleEvaluator([])
    watched_files = evaluator.files
    seen = 0
    current: str | None = None  # the folder of the run of files being summed
    run_bytes = run_files = 0
    counting: list[_RuleState] = []
    heap_floor = -1  # once the heap is full, a file must be bigger than this to get in

    def flush() -> None:
        if not run_files:
            return
        totals.total_bytes += run_bytes
        totals.total_files += run_files
        level, slash = 0, 0
        while level < depth and current:
            slash = current.find("/", slash + 1) if level else current.find("/")
            key = current if slash == -1 else current[:slash]
            pair = folders.get(key)
            if pair is None:
                pair = folders[key] = [0, 0]
            pair[0] += run_bytes
            pair[1] += run_files
            level += 1
            if slash == -1:
                break
        evaluator.run(current, run_bytes, run_files)

    next_progress = PROGRESS_EVERY if progress is not None else -1
    extension_pair = extensions.get
    for seen, entry in enumerate(backend.iter_entries(""), 1):
        if seen == next_progress:
            progress.advance(PROGRESS_EVERY)
            next_progress += PROGRESS_EVERY
        path = entry.path
        if entry.is_dir and not entry.is_symlink:
            totals.total_folders += 1
            if path.count("/") < depth and path not in folders:
                folders[path] = [0, 0]  # an empty folder is still listed
            evaluator.folder(path)
            continue
        size = entry.size
        if entry.is_symlink:
            totals.symlinks += 1
        slash = path.rfind("/")
        parent = path[:slash] if slash > 0 else ""
        if parent != current:
            flush()
            current, run_bytes, run_files = parent, 0, 0
            counting = evaluator.counting_in(parent)
        run_bytes += size
        run_files += 1
        # A dot that starts the name (".bashrc") is no extension.
        dot = path.rfind(".")
        ext = path[dot:].lower() if dot > slash + 1 else "(none)"
        pair = extension_pair(ext)
        if pair is None:
            pair = extensions[ext] = [0, 0]
        pair[0] += 1
        pair[1] += size
        if size > heap_floor:
            if len(heap) < largest:
                heapq.heappush(heap, (size, path))
            else:
                heapq.heappushpop(heap, (size, path))
            if len(heap) >= largest:
                heap_floor = heap[0][0]
        if watched_files and path in watched_files:
            evaluator.file_seen(path)
        for state in counting:
            if state.regex.fullmatch(path):
                state.matches += 1
    flush()
    if progress is not None:
        progress.advance(seen % PROGRESS_EVERY)
        progress.flush()
    return totals


def growth_between(*, before: dict[str, list[int]], after: dict[str, list[int]]) -> list[dict]:
    rows = []
    for folder in before.keys() | after.keys():
        old = before.get(folder, [0, 0])
        new = after.get(folder, [0, 0])
        if old[0] != new[0] or old[1] != new[1]:
            rows.append(
                {
                    "folder": folder,
                    "before": old[0],
                    "after": new[0],
                    "delta": new[0] - old[0],
                    "files_delta": new[1] - old[1],
                }
            )
    rows.sort(key=lambda row: (-abs(row["delta"]), -abs(row["files_delta"]), row["folder"]))
    return rows[:GROWTH_ROWS]


def volume_inspect(*, volume: Volume, actor: Actor, operation: Operation | None = None) -> Inspection:
    """Walk the volume once and store what was found. Unreachable/NotFound when the
    volume cannot be read; nothing is stored then."""
    backend = volume_backend(volume=volume)
    rules = list(volume.rules.filter(enabled=True))
    evaluator = RuleEvaluator(rules)
    progress = Progress(operation, unit="files")
    if operation is not None:
        operation_log(
            operation, f"inspecting {volume.url} ({len(rules)} rules, folders to depth {volume.folder_depth})"
        )
    started = time.monotonic()
    backend.check()
    totals = volume_walk(backend=backend, depth=volume.folder_depth, evaluator=evaluator, progress=progress)
    seconds = time.monotonic() - started
    findings, passed = evaluator.findings()
    previous = Inspection.objects.filter(volume=volume).only("folders", "total_bytes", "total_files").first()
    largest = sorted(totals.largest, key=lambda pair: (-pair[0], pair[1]))
    with transaction.atomic():
        inspection = Inspection.objects.create(
            volume=volume,
            operation=operation,
            seconds=round(seconds, 3),
            total_bytes=totals.total_bytes,
            total_files=totals.total_files,
            total_folders=totals.total_folders,
            symlinks=totals.symlinks,
            folder_depth=volume.folder_depth,
            folders=totals.folders,
            extensions=totals.extensions,
            largest=[[path, size] for size, path in largest],
            growth=growth_between(before=previous.folders, after=totals.folders) if previous else [],
            bytes_delta=totals.total_bytes - previous.total_bytes if previous else None,
            files_delta=totals.total_files - previous.total_files if previous else None,
            rules_checked=len(rules),
            rules_passed=passed,
            monthly_cost=volume_monthly_cost(url=volume.url, total_bytes=totals.total_bytes),
        )
        for finding in findings:
            finding.inspection = inspection
        Finding.objects.bulk_create(findings)
        storage_sample_record(
            domain="volumes", subject=volume.name, total_bytes=totals.total_bytes, total_files=totals.total_files
        )
        errors = sum(1 for f in findings if f.severity == Severity.ERROR)
        audit_record(
            actor=actor,
            action="volume.inspect",
            target_type=TARGET_TYPE,
            target_id=volume.name,
            message=f"{totals.total_bytes} bytes in {totals.total_files} files; "
            f"{len(findings)} findings ({errors} errors), {passed} of {len(rules)} rules hold",
            operation=operation,
        )
    if operation is not None:
        operation_log(operation, f"{totals.total_files} files, {totals.total_bytes} bytes, {len(findings)} findings")
    return inspection


def inspection_as_dict(inspection: Inspection) -> dict[str, Any]:
    return {
        "volume": inspection.volume.name,
        "url": inspection.volume.url,
        "inspection_id": inspection.pk,
        "inspected_at": inspection.inspected_at.isoformat(),
        "seconds": inspection.seconds,
        "total_bytes": inspection.total_bytes,
        "total_files": inspection.total_files,
        "total_folders": inspection.total_folders,
        "bytes_delta": inspection.bytes_delta,
        "files_delta": inspection.files_delta,
        "monthly_cost_usd": inspection.monthly_cost,
        "rules_checked": inspection.rules_checked,
        "rules_passed": inspection.rules_passed,
        "findings": [
            {"severity": f.severity, "message": f.message, "bytes": f.bytes, "rule_id": f.rule_id}
            for f in inspection.findings.all()
        ],
        "folders": inspection.folders,
        "extensions": inspection.extensions,
        "largest": inspection.largest,
        "growth": inspection.growth,
    }


def _actor_of(operation: Operation) -> Actor:
    return operation.actor_user or operation.actor_name


def volume_inspect_run(*, operation: Operation) -> dict[str, Any]:
    """The work of an inspection operation (task and CLI land here)."""
    volume = volume_get(name=operation.target_id)
    inspection = volume_inspect(volume=volume, actor=_actor_of(operation), operation=operation)
    return {
        "inspection_id": inspection.pk,
        "total_bytes": inspection.total_bytes,
        "total_files": inspection.total_files,
        "findings": inspection.findings.count(),
    }


def _inspect_operation(*, volume: Volume, actor: Actor) -> Operation:
    return operation_create(
        kind="volume.inspect", target_type=TARGET_TYPE, target_id=volume.name, actor=actor, task=INSPECT_TASK
    )


def volume_inspect_enqueue(*, volume: Volume, actor: Actor) -> Operation:
    operation = _inspect_operation(volume=volume, actor=actor)
    operation_enqueue(operation=operation)
    return operation


def volume_inspect_now(*, volume: Volume, actor: Actor) -> Inspection:
    """Synchronous inspection (CLI): the same operation, run in this process."""
    finished = operation_run_inline(
        operation=_inspect_operation(volume=volume, actor=actor), work=lambda op: volume_inspect_run(operation=op)
    )
    return Inspection.objects.get(pk=finished.result["inspection_id"])


def volumes_inspect_all(*, actor: Actor) -> list[Operation]:
    """Queue an inspection of every registered volume (the schedule); busy ones are skipped."""
    queued = []
    for volume in Volume.objects.all():
        try:
            queued.append(volume_inspect_enqueue(volume=volume, actor=actor))
        except PanelError:
            continue  # an inspection already running covers this round
    return queued


# -- S3 cross-check --------------------------------------------------------------------------


# AWS allows 3-63 lowercase characters; other S3 servers (and old us-east-1 buckets) allow more.
_S3_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix → (bucket, "prefix/"); the prefix always ends with a slash."""
    parsed = urlparse(url or "")
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidInput(f"S3 URL {url!r} is not valid: use s3://bucket/prefix")
    if not _S3_BUCKET_RE.fullmatch(parsed.netloc):
        raise InvalidInput(f"S3 URL {url!r} is not valid: the bucket name must be 3-255 letters, digits, '.', '-', '_'")
    prefix = parsed.path.strip("/")
    if prefix and ".." in prefix.split("/"):
        raise InvalidInput(f"S3 URL {url!r} is not valid: no '..' in the prefix")
    # NUL and other control characters are no key S3 stores; boto3 would fail later and less clearly.
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise InvalidInput(f"S3 URL {url!r} is not valid: no control characters in the prefix")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def s3_client():
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.AWS_ENDPOINT_URL or None,
        region_name=settings.AWS_REGION,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


def _s3_error(exc: Exception, bucket: str) -> PanelError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchBucket", "404"}:
            return NotFound(f"S3 bucket {bucket!r} does not exist")
        detail = exc.response.get("Error", {}).get("Message", "")
        return Unreachable(f"S3 bucket {bucket!r}: {code or 'error'}: {detail}")
    return Unreachable(f"S3 unreachable ({settings.AWS_ENDPOINT_URL or 'AWS'}): {str(exc).splitlines()[0][:200]}")


def _s3_objects(*, bucket: str, prefix: str) -> Iterable[tuple[str, int]]:
    """(key below the prefix, size), page by page."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"][len(prefix) :]
                if key and not key.endswith("/"):  # folder markers are not files
                    yield key, int(item["Size"])
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, bucket) from None


def _sample(samples: dict[str, list], kind: str, row: list) -> None:
    rows = samples.setdefault(kind, [])
    if len(rows) < CROSSCHECK_SAMPLES:
        rows.append(row)


def volume_crosscheck(
    *, volume: Volume, folder: str, s3_url: str, actor: Actor, operation: Operation | None = None
) -> CrossCheck:
    """Compare a volume folder with an S3 prefix. The volume side is held as one dict of
    name → size; S3 streams past it page by page, so only one side is ever in memory."""
    folder = clean_path(folder)
    bucket, prefix = parse_s3_url(s3_url)
    backend = volume_backend(volume=volume)
    backend.check()
    if folder:
        entry = backend.stat(folder)
        if entry is None or not entry.is_dir:
            raise NotFound(f"{folder}/ does not exist on volume {volume.name}")
    progress = Progress(operation, unit="files")
    on_volume: dict[str, int] = {}
    cut = len(folder) + 1 if folder else 0
    check = CrossCheck(volume=volume, operation=operation, folder=folder, s3_url=s3_url)
    for entry in backend.iter_entries(folder):
        if entry.is_dir:
            continue
        on_volume[entry.path[cut:]] = entry.size
        check.volume_files += 1
        check.volume_bytes += entry.size
        if check.volume_files % PROGRESS_EVERY == 0:
            progress.advance(PROGRESS_EVERY)
    samples: dict[str, list] = {}
    for key, size in _s3_objects(bucket=bucket, prefix=prefix):
        check.s3_files += 1
        check.s3_bytes += size
        if check.s3_files % PROGRESS_EVERY == 0:
            progress.advance(PROGRESS_EVERY)
        local_size = on_volume.pop(key, None)
        if local_size is None:
            check.only_on_s3 += 1
            check.only_on_s3_bytes += size
            _sample(samples, "only_on_s3", [key, size])
        elif local_size != size:
            check.size_mismatches += 1
            _sample(samples, "size_mismatches", [key, local_size, size])
        else:
            check.matched_files += 1
    for key in sorted(on_volume)[:CROSSCHECK_SAMPLES]:
        _sample(samples, "only_on_volume", [key, on_volume[key]])
    check.only_on_volume = len(on_volume)
    check.only_on_volume_bytes = sum(on_volume.values())
    check.samples = samples
    check.s3_monthly_cost = s3_monthly_cost(total_bytes=check.s3_bytes)
    progress.flush()
    with transaction.atomic():
        check.save()
        audit_record(
            actor=actor,
            action="volume.crosscheck",
            target_type=TARGET_TYPE,
            target_id=volume.name,
            message=f"{folder or '/'} vs {s3_url}: {check.matched_files} match, {check.only_on_volume} only on the "
            f"volume, {check.only_on_s3} only on S3, {check.size_mismatches} size mismatches",
            operation=operation,
        )
    return check


def crosscheck_as_dict(check: CrossCheck) -> dict[str, Any]:
    return {
        "crosscheck_id": check.pk,
        "volume": check.volume.name,
        "folder": check.folder,
        "s3_url": check.s3_url,
        "checked_at": check.checked_at.isoformat(),
        "in_sync": check.in_sync,
        "volume_files": check.volume_files,
        "volume_bytes": check.volume_bytes,
        "s3_files": check.s3_files,
        "s3_bytes": check.s3_bytes,
        "matched_files": check.matched_files,
        "only_on_volume": check.only_on_volume,
        "only_on_volume_bytes": check.only_on_volume_bytes,
        "only_on_s3": check.only_on_s3,
        "only_on_s3_bytes": check.only_on_s3_bytes,
        "size_mismatches": check.size_mismatches,
        "s3_monthly_cost_usd": check.s3_monthly_cost,
        "samples": check.samples,
    }


def volume_crosscheck_run(*, operation: Operation) -> dict[str, Any]:
    volume = volume_get(name=operation.target_id)
    check = volume_crosscheck(
        volume=volume,
        folder=operation.params.get("folder", ""),
        s3_url=operation.params["s3_url"],
        actor=_actor_of(operation),
        operation=operation,
    )
    return {"crosscheck_id": check.pk, "in_sync": check.in_sync}


def _crosscheck_operation(*, volume: Volume, folder: str, s3_url: str, actor: Actor) -> Operation:
    # Refuse bad input before an operation row is written.
    folder = clean_path(folder)
    parse_s3_url(s3_url)
    return operation_create(
        kind="volume.crosscheck",
        target_type=TARGET_TYPE,
        target_id=volume.name,
        actor=actor,
        task=CROSSCHECK_TASK,
        params={"folder": folder, "s3_url": s3_url},
        # Read-only on both sides: it may run beside an inspection of the same volume.
        exclusive=False,
    )


def volume_crosscheck_enqueue(*, volume: Volume, folder: str, s3_url: str, actor: Actor) -> Operation:
    operation = _crosscheck_operation(volume=volume, folder=folder, s3_url=s3_url, actor=actor)
    operation_enqueue(operation=operation)
    return operation


def volume_crosscheck_now(*, volume: Volume, folder: str, s3_url: str, actor: Actor) -> CrossCheck:
    operation = _crosscheck_operation(volume=volume, folder=folder, s3_url=s3_url, actor=actor)
    finished = operation_run_inline(operation=operation, work=lambda op: volume_crosscheck_run(operation=op))
    return CrossCheck.objects.get(pk=finished.result["crosscheck_id"])

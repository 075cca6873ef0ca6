"""Inspection: one streaming walk per inspection (sizes per folder, extensions, largest
files, layout rules) and the row it leaves. A walk never holds the list of entries: it
keeps running totals, a heap of the largest files and one counter per rule.

A walk never opens a file. Special files (FIFO, socket, device) are counted apart and
reported as a finding; folders that cannot be read are a finding too (how many, which, and
that the totals are a lower bound), and the inspection still finishes. A root that
disappears or is replaced during the walk fails the inspection and stores nothing."""

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from apps.audit.models import Operation
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import Actor, Progress, audit_record, operation_log, storage_sample_record
from apps.volumes.backends import VolumeBackend, VolumeChanged
from apps.volumes.models import Finding, Inspection, Severity, Volume
from apps.volumes.services.registry import volume_backend, volume_monthly_cost
from apps.volumes.services.rules import RuleEvaluator, RuleState
from controlpanel.formatting import humanize_bytes, plural

LARGEST_FILES = 20
GROWTH_ROWS = 50
# Progress is written per this many entries (and at most once a second by Progress itself).
PROGRESS_EVERY = 1000
# Paths named in a finding about special files or unreadable folders; the count is exact.
PROBLEM_SAMPLES = 10


@dataclass
class WalkTotals:
    total_bytes: int = 0
    total_files: int = 0
    total_folders: int = 0
    symlinks: int = 0
    folders: dict[str, list[int]] = field(default_factory=dict)
    extensions: dict[str, list[int]] = field(default_factory=dict)
    largest: list[tuple[int, str]] = field(default_factory=list)
    special_files: int = 0
    unreadable_folders: int = 0
    # The first PROBLEM_SAMPLES of each: [(path, what it is / why it could not be read)]
    special_samples: list[tuple[str, str]] = field(default_factory=list)
    unreadable_samples: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, kind: str, path: str, reason: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        samples = self.special_samples if kind == "special_files" else self.unreadable_samples
        if len(samples) < PROBLEM_SAMPLES:
            samples.append((path, reason))


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
    counting: list[RuleState] = []
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
        if entry.unreadable:
            totals.problem("unreadable_folders", path, entry.unreadable)
            continue
        if entry.special:
            totals.problem("special_files", path, entry.special)
            continue
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


def _problem_finding(severity: str, count: int, what: str, samples: list[tuple[str, str]]) -> Finding:
    """`2 folders could not be read …: secret (Permission denied), deep/er (…) and 3 more`."""
    named = ", ".join(f"{path or '/'} ({reason})" for path, reason in samples)
    more = count - len(samples)
    return Finding(severity=severity, message=f"{what}: {named}{f' and {more} more' if more else ''}"[:500])


def _problem_findings(totals: WalkTotals) -> list[Finding]:
    """Unreadable folders and special files as findings, each one line a person can act on."""
    findings = []
    if totals.unreadable_folders:
        what = (
            f"{plural(totals.unreadable_folders, 'folder')} could not be read, "
            "so the totals and rule counts are a lower bound"
        )
        findings.append(_problem_finding(Severity.ERROR, totals.unreadable_folders, what, totals.unreadable_samples))
    if totals.special_files:
        what = (
            f"{plural(totals.special_files, 'special file')} (not a file, folder or symlink; never opened, not counted)"
        )
        findings.append(_problem_finding(Severity.WARNING, totals.special_files, what, totals.special_samples))
    return findings


def volume_inspect(*, volume: Volume, actor: Actor, operation: Operation | None = None) -> Inspection:
    """Walk the volume once and store what was found. Unreachable/NotFound when the
    volume cannot be read; nothing is stored then."""
    backend = volume_backend(volume=volume)
    rules = list(volume.rules.filter(enabled=True))
    evaluator = RuleEvaluator(rules)
    progress = Progress(operation, unit="entries")
    if operation is not None:
        operation_log(
            operation, f"inspecting {volume.url} ({len(rules)} rules, folders to depth {volume.folder_depth})"
        )
    started = time.monotonic()
    backend.check()
    try:
        totals = volume_walk(backend=backend, depth=volume.folder_depth, evaluator=evaluator, progress=progress)
    except VolumeChanged as exc:
        raise VolumeChanged(f"{exc}; the inspection stored nothing") from None
    seconds = time.monotonic() - started
    findings, passed = evaluator.findings()
    findings = _problem_findings(totals) + findings
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
            special_files=totals.special_files,
            unreadable_folders=totals.unreadable_folders,
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
            action=AuditAction.VOLUME_INSPECT,
            target_type=TargetType.VOLUME,
            target_id=volume.name,
            message=f"{humanize_bytes(totals.total_bytes)} in {totals.total_files} files; "
            f"{len(findings)} findings ({errors} errors), {passed} of {len(rules)} rules hold",
            operation=operation,
        )
    if operation is not None:
        operation_log(
            operation, f"{totals.total_files} files, {humanize_bytes(totals.total_bytes)}, {len(findings)} findings"
        )
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
        "special_files": inspection.special_files,
        "unreadable_folders": inspection.unreadable_folders,
        # True when folders could not be read: every total is then a lower bound.
        "totals_are_lower_bound": inspection.unreadable_folders > 0,
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

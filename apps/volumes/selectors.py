"""Reads for the volume pages and the overview: stored inspections only, never the
volume itself (a page must not wait on Modal)."""

from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db.models import Count, OuterRef, Subquery
from django.urls import reverse

from apps.audit.models import Operation
from apps.audit.names import Kind, TargetType
from apps.audit.overview import Leak, OverviewSection
from apps.volumes.models import Finding, Inspection, LayoutRule, Severity, Volume

OVERVIEW_TITLE = "Modal volumes"


@dataclass
class VolumeRow:
    volume: Volume
    inspection_id: int | None
    inspected_at: object
    total_bytes: int | None
    total_files: int | None
    monthly_cost: float | None
    last_error: str = ""  # the newest inspection operation's error, when it failed
    findings: dict[str, int] = field(default_factory=dict)

    @property
    def findings_total(self) -> int:
        return sum(self.findings.values())

    @property
    def errors(self) -> int:
        return self.findings.get(Severity.ERROR, 0)


def volume_rows() -> list[VolumeRow]:
    """Every volume with its latest inspection, in two queries."""
    latest = Inspection.objects.filter(volume=OuterRef("pk")).order_by("-inspected_at", "-id")
    last_run = Operation.objects.filter(
        target_type=TargetType.VOLUME, target_id=OuterRef("name"), kind=Kind.VOLUME_INSPECT
    ).order_by("-created_at", "-id")
    volumes = Volume.objects.annotate(
        latest_id=Subquery(latest.values("pk")[:1]),
        latest_at=Subquery(latest.values("inspected_at")[:1]),
        latest_bytes=Subquery(latest.values("total_bytes")[:1]),
        latest_files=Subquery(latest.values("total_files")[:1]),
        latest_cost=Subquery(latest.values("monthly_cost")[:1]),
        last_run_error=Subquery(last_run.values("error")[:1]),
    )
    rows = [
        VolumeRow(
            volume=v,
            inspection_id=v.latest_id,
            inspected_at=v.latest_at,
            total_bytes=v.latest_bytes,
            total_files=v.latest_files,
            monthly_cost=v.latest_cost,
            last_error=v.last_run_error or "",
        )
        for v in volumes
    ]
    by_inspection = {row.inspection_id: row for row in rows if row.inspection_id}
    if by_inspection:
        counts = (
            Finding.objects.filter(inspection_id__in=by_inspection)
            .values("inspection_id", "severity")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for count in counts:
            by_inspection[count["inspection_id"]].findings[count["severity"]] = count["n"]
    return rows


def overview_section() -> OverviewSection:
    """Total bytes of the latest inspections, findings by severity, and error findings as
    leaks, in three queries."""
    rows = volume_rows()
    inspected = [row for row in rows if row.inspection_id]
    total = sum(row.total_bytes or 0 for row in inspected) if inspected else None
    severities = {s: sum(row.findings.get(s, 0) for row in rows) for s in Severity.values}
    cost = sum(row.monthly_cost or 0 for row in inspected)
    names = {row.inspection_id: row.volume.name for row in inspected}
    leaks = []
    if names:
        errors = Finding.objects.filter(inspection_id__in=names, severity=Severity.ERROR).select_related("rule")
        for finding in errors.order_by("-bytes", "id")[:50]:
            name = names[finding.inspection_id]
            fix_url, fix_label = reverse("volumes:detail", args=[name]), "Open the volume"
            rule = finding.rule
            if rule is not None and rule.kind == LayoutRule.Kind.FOLDER_ABSENT and rule.enabled:
                # A folder that must not exist has its own fix: remove it, previewed first.
                fix_url = f"{reverse('volumes:remove-folder', args=[name])}?{urlencode({'path': rule.path})}"
                fix_label = "Remove this folder"
            leaks.append(
                Leak(
                    label=f"{name}: {finding.message}",
                    domain="volumes",
                    bytes=finding.bytes,
                    fix_url=fix_url,
                    fix_label=fix_label,
                )
            )
    # "Modal volumes" only when every volume is one: a local:// volume is not a Modal volume.
    title = OVERVIEW_TITLE if rows and all(row.volume.url.startswith("modal://") for row in rows) else "Volumes"
    return OverviewSection(
        title=title,
        url=reverse("volumes:list"),
        bytes=total,
        rows=[
            ("volumes", len(rows)),
            ("inspected", len(inspected)),
            ("findings", " / ".join(f"{severities[s]} {s}" for s in reversed(Severity.values))),
            ("monthly cost", f"${cost:,.2f}"),
        ],
        leaks=leaks,
    )

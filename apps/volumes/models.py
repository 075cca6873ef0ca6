"""Inspected volumes: the registry, their layout rules, inspections with their findings,
and S3 cross-checks. Inspections keep aggregates only (per folder, per extension, the
largest files), never one row per file."""

from django.db import models
from django.utils import timezone


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    ERROR = "error", "error"


class Volume(models.Model):
    name = models.CharField(max_length=128, unique=True)
    # A volume-backend URL: local:///path or modal://<volume>?environment=<env>
    url = models.CharField(max_length=500)
    purpose = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    # Per-folder sizes are kept down to this many levels below the root.
    folder_depth = models.PositiveSmallIntegerField(default=3)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("inspect_volume", "Can inspect a volume"),
            ("crosscheck_volume", "Can cross-check a volume folder with S3"),
            ("remove_volume_folder", "Can remove a folder a layout rule forbids from a volume"),
        ]

    def __str__(self) -> str:
        return self.name


class LayoutRule(models.Model):
    """One expectation about a volume's layout; a rule that does not hold is a finding."""

    class Kind(models.TextChoices):
        FOLDER_EXISTS = "folder_exists", "folder must exist"
        FOLDER_ABSENT = "folder_absent", "folder must not exist"
        FILE_COUNT = "file_count", "files matching a pattern"
        FILE_EXISTS = "file_exists", "file must exist"

    class CountMode(models.TextChoices):
        EXACTLY = "exactly", "exactly"
        AT_LEAST = "at_least", "at least"

    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # A folder or file path relative to the volume root; for file_count a glob where `*`
    # and `?` stay inside one folder and `**` crosses folders (cache/tusz/train/*.npz).
    path = models.CharField(max_length=500)
    count_mode = models.CharField(max_length=10, choices=CountMode.choices, default=CountMode.EXACTLY)
    count = models.PositiveIntegerField(null=True, blank=True, help_text="for file_count rules")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.ERROR)
    description = models.CharField(max_length=300, blank=True)
    # The preset that wrote this rule ("" for a rule written by hand); importing a preset
    # replaces the rules of earlier presets and keeps hand-written ones.
    preset = models.CharField(max_length=50, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["volume", "kind", "path"]

    def __str__(self) -> str:
        if self.kind == self.Kind.FILE_COUNT:
            return f"{self.path} {self.get_count_mode_display()} {self.count}"
        return f"{self.path}: {self.get_kind_display()}"


class Inspection(models.Model):
    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="inspections")
    operation = models.ForeignKey("audit.Operation", null=True, blank=True, on_delete=models.SET_NULL)
    inspected_at = models.DateTimeField(default=timezone.now, db_index=True)
    seconds = models.FloatField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    total_files = models.BigIntegerField(default=0)
    total_folders = models.BigIntegerField(default=0)
    symlinks = models.BigIntegerField(default=0)
    # FIFOs, sockets, devices: never opened, not counted as files (a finding names them).
    special_files = models.BigIntegerField(default=0)
    # Folders the walk could not list: when non-zero every total is a lower bound.
    unreadable_folders = models.BigIntegerField(default=0)
    folder_depth = models.PositiveSmallIntegerField(default=3)
    # {"cache/tusz": [bytes, files], ...}: every folder down to folder_depth, with what is below it.
    folders = models.JSONField(default=dict, blank=True)
    # {".npz": [files, bytes], ...}
    extensions = models.JSONField(default=dict, blank=True)
    # [[path, bytes], ...] biggest first
    largest = models.JSONField(default=list, blank=True)
    # Against the previous inspection: [{"folder", "before", "after", "delta"}, ...] biggest change first
    growth = models.JSONField(default=list, blank=True)
    bytes_delta = models.BigIntegerField(null=True, blank=True)
    files_delta = models.BigIntegerField(null=True, blank=True)
    rules_checked = models.PositiveIntegerField(default=0)
    rules_passed = models.PositiveIntegerField(default=0)
    monthly_cost = models.FloatField(default=0)

    class Meta:
        ordering = ["-inspected_at", "-id"]
        indexes = [models.Index(fields=["volume", "-inspected_at"])]

    def __str__(self) -> str:
        return f"{self.volume} at {self.inspected_at:%Y-%m-%d %H:%M}"

    @property
    def totals_are_lower_bound(self) -> bool:
        return self.unreadable_folders > 0

    @property
    def folder_rows(self) -> list[dict]:
        return [
            {"path": path, "bytes": pair[0], "files": pair[1], "depth": path.count("/")}
            for path, pair in sorted(self.folders.items())
        ]

    @property
    def extension_rows(self) -> list[dict]:
        rows = [{"extension": ext, "files": pair[0], "bytes": pair[1]} for ext, pair in self.extensions.items()]
        return sorted(rows, key=lambda row: (-row["bytes"], row["extension"]))

    @property
    def largest_rows(self) -> list[dict]:
        return [{"path": path, "bytes": size} for path, size in self.largest]


class Finding(models.Model):
    inspection = models.ForeignKey(Inspection, on_delete=models.CASCADE, related_name="findings")
    rule = models.ForeignKey(LayoutRule, null=True, blank=True, on_delete=models.SET_NULL)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    message = models.CharField(max_length=500)
    # Bytes involved where the walk knows them (e.g. a folder that must not exist).
    bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["inspection", "id"]

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


class CrossCheck(models.Model):
    """A volume folder against an S3 prefix: what is on one side only, what differs in size."""

    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="crosschecks")
    operation = models.ForeignKey("audit.Operation", null=True, blank=True, on_delete=models.SET_NULL)
    checked_at = models.DateTimeField(default=timezone.now, db_index=True)
    folder = models.CharField(max_length=500, blank=True)
    s3_url = models.CharField(max_length=600)
    volume_files = models.BigIntegerField(default=0)
    volume_bytes = models.BigIntegerField(default=0)
    s3_files = models.BigIntegerField(default=0)
    s3_bytes = models.BigIntegerField(default=0)
    matched_files = models.BigIntegerField(default=0)
    only_on_volume = models.BigIntegerField(default=0)
    only_on_volume_bytes = models.BigIntegerField(default=0)
    only_on_s3 = models.BigIntegerField(default=0)
    only_on_s3_bytes = models.BigIntegerField(default=0)
    size_mismatches = models.BigIntegerField(default=0)
    # The first few names of each kind, to show on the page: {"only_on_volume": [[key, bytes]], ...}
    samples = models.JSONField(default=dict, blank=True)
    s3_monthly_cost = models.FloatField(default=0)

    class Meta:
        ordering = ["-checked_at", "-id"]

    def __str__(self) -> str:
        return f"{self.volume}:{self.folder or '/'} vs {self.s3_url}"

    @property
    def in_sync(self) -> bool:
        return not (self.only_on_volume or self.only_on_s3 or self.size_mismatches)

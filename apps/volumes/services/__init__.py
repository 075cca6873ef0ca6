"""Volume inspection, split by seam: the registry and cost (`registry`), layout rules and
presets (`rules`), the streaming walk and its stored inspection (`inspection`), and the S3
cross-check (`crosscheck`). Every public name stays importable from here.

Only the interface in `apps.volumes.backends` is used, so a local folder and a Modal
Volume are inspected by the same code. Long work runs as operations declared in
`apps.volumes.operations`.
"""

from apps.volumes.presets import PRESETS
from apps.volumes.services.crosscheck import (
    CROSSCHECK_SAMPLES,
    crosscheck_as_dict,
    parse_s3_url,
    volume_crosscheck,
)
from apps.volumes.services.inspection import (
    GROWTH_ROWS,
    LARGEST_FILES,
    PROGRESS_EVERY,
    WalkTotals,
    growth_between,
    inspection_as_dict,
    volume_inspect,
    volume_walk,
)
from apps.volumes.services.registry import (
    GB,
    s3_monthly_cost,
    volume_add,
    volume_backend,
    volume_get,
    volume_monthly_cost,
    volume_price_per_gb_month,
    volume_url_check,
)
from apps.volumes.services.rules import (
    RuleEvaluator,
    glob_literal_prefix,
    glob_regex,
    layout_preset_import,
    layout_rule_clean,
)

__all__ = [
    "CROSSCHECK_SAMPLES",
    "GB",
    "GROWTH_ROWS",
    "LARGEST_FILES",
    "PRESETS",
    "PROGRESS_EVERY",
    "RuleEvaluator",
    "WalkTotals",
    "crosscheck_as_dict",
    "glob_literal_prefix",
    "glob_regex",
    "growth_between",
    "inspection_as_dict",
    "layout_preset_import",
    "layout_rule_clean",
    "parse_s3_url",
    "s3_monthly_cost",
    "volume_add",
    "volume_backend",
    "volume_crosscheck",
    "volume_get",
    "volume_inspect",
    "volume_monthly_cost",
    "volume_price_per_gb_month",
    "volume_url_check",
    "volume_walk",
]

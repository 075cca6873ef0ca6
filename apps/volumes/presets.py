"""The layout-rule presets: the two cache plans the ML team argued about, as data.

`layout_preset_import` (a service) turns one of them into `LayoutRule` rows; the admin and
`manage.py volumes preset` offer these names.
"""

from typing import Any

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

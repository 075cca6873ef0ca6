"""Ids and paths from outside are checked here, once, before anything touches a disk."""

import os
import re
from pathlib import Path

from controlpanel.errors import InvalidInput

# Letters, digits, dash and underscore: covers slugs, uuids and the `tmp<uuid>` form.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def validate_id(value: object, *, kind: str = "id") -> str:
    """Return `value` if it is a safe single path component, else raise InvalidInput."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        shown = repr(value)[:60]
        raise InvalidInput(f"{kind} {shown} is not valid: use 1-128 letters, digits, '-' or '_'")
    return value


def resolve_inside(root: Path, *parts: str) -> Path:
    """Join `parts` under `root` and prove the result stays inside it.

    Symlinks are resolved, so a link that points out of the root is refused rather than
    followed. The root itself must exist or be creatable by the caller; it is resolved too.
    """
    root_resolved = Path(root).resolve()
    candidate = root_resolved.joinpath(*parts)
    resolved = candidate.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise InvalidInput(f"path {os.path.join(*parts)!r} is outside {root_resolved}")
    return resolved


def is_inside(root: Path, path: Path) -> bool:
    """True when `path` (not followed if it is itself a symlink) lies inside `root`."""
    root_resolved = Path(root).resolve()
    parent = Path(path).parent.resolve()
    return parent == root_resolved or root_resolved in parent.parents

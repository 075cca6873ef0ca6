"""Which folders may be a local volume: paths are normalised first, then system folders and
the panel's own data are refused, with one line that says why.

    local_root_clean("/srv/../etc")   # InvalidInput: /etc is a system folder
    local_root_clean("/srv/volumes/x/")  # "/srv/volumes/x"

Two kinds of refusal:
- system trees (`/proc`, `/sys`, `/dev`, `/etc`, `/boot`, `/run`, `/usr`, `/var/lib/docker`…):
  neither the folder nor anything inside it is a volume;
- tops that hold everything else (`/`, `/home`, `/srv`, `/tmp`, `/var`…): the folder itself is
  refused, a folder inside it is fine (`/srv/volumes/x`, a test's `/tmp/pytest-…/vol`).
The panel's own data (`VAR_DIR`, the file or dedup+file snapshot store, its key, the mix-job
folders, the SQLite database file) is refused at, above and inside it, wherever it is
configured: a volume that holds the panel's data could have it removed as a stray folder.
The one exception is a folder inside `VAR_DIR/volumes/`, where local volumes live by default
(the default sessions volume is `VAR_DIR/volumes/music-split-jobs-data`); `VAR_DIR/volumes`
itself and its parents stay refused.

Settings are read at call time: a volume is checked when it is added and again each time its
backend is opened, and `panel_data_check` refuses a folder about to be removed, so data
configured after a volume was added is never in reach.

Both the path as written (normalised) and the path its symlinks lead to are checked, so
`/srv/link-to-etc` is refused like `/etc`.
"""

import os
import posixpath
from urllib.parse import unquote, urlparse

from django.conf import settings

from controlpanel.errors import InvalidInput

SYSTEM_TREES = {
    "/proc": "the kernel's process table",
    "/sys": "the kernel's device tree",
    "/dev": "the device folder",
    "/etc": "the system's configuration",
    "/boot": "the boot folder",
    "/run": "runtime state",
    "/var/run": "runtime state",
    "/usr": "installed software",
    "/bin": "installed software",
    "/sbin": "installed software",
    "/lib": "installed software",
    "/lib32": "installed software",
    "/lib64": "installed software",
    "/libx32": "installed software",
    "/var/lib/docker": "Docker's own storage",
    "/var/lib/containerd": "containerd's own storage",
}
SYSTEM_TOPS = {
    "/",
    "/home",
    "/root",
    "/srv",
    "/mnt",
    "/media",
    "/opt",
    "/tmp",
    "/var",
    "/var/lib",
    "/var/tmp",
}


def normalise(path: str) -> str:
    """`/srv/../etc/` → `/etc`, `//etc` → `/etc`: the one spelling that is checked and stored."""
    return "/" + posixpath.normpath(path).lstrip("/") if path.startswith("/") else posixpath.normpath(path)


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _configured_paths(value) -> list[str]:
    """A path from settings (a path, or a `file://` / `dedup+file://` URL) as configured and
    where its symlinks lead, both normalised; [] for anything that is not on this machine."""
    if not value:
        return []
    text = str(value)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme not in {"file", "dedup+file", "sqlite"}:
            return []
        text = unquote(parsed.netloc + parsed.path)
    if not text.startswith("/"):
        return []
    return list(dict.fromkeys([normalise(text), normalise(os.path.realpath(text))]))


def _database_file() -> str | None:
    database = settings.DATABASES.get("default", {})
    return str(database.get("NAME") or "") if "sqlite3" in database.get("ENGINE", "") else None


def _panel_trees() -> list[tuple[str, str]]:
    """(path, what it is) for the panel's own data, read from settings at call time."""
    trees = []
    for value, label in [
        (getattr(settings, "SNAPSHOT_STORE_URL", None), "the panel's snapshot store"),
        (getattr(settings, "SNAPSHOT_KEY_FILE", None), "the panel's snapshot key"),
        (getattr(settings, "MIX_MEDIA_DIR", None), "the panel's mix-job folder"),
        (getattr(settings, "MIX_OUTPUTS_DIR", None), "the panel's mix-job outputs"),
        (_database_file(), "the panel's database"),
        (getattr(settings, "VAR_DIR", None), "the panel's own data folder (VAR_DIR)"),
    ]:
        trees.extend((path, label) for path in _configured_paths(value))
    return trees


def _why_refused(path: str) -> str | None:
    for tree, what in SYSTEM_TREES.items():
        if _inside(path, tree):
            return f"{path} is {what}" if path == tree else f"{path} is inside {tree} ({what})"
    if path in SYSTEM_TOPS:
        return f"{path} is a system folder that holds far more than one volume"
    var_dirs = _configured_paths(getattr(settings, "VAR_DIR", None))
    for tree, what in _panel_trees():
        if _inside(path, tree):
            volumes = posixpath.join(tree, "volumes")
            if tree in var_dirs and path != volumes and _inside(path, volumes):
                continue  # a folder inside VAR_DIR/volumes/ is where local volumes live by default
            return f"{path} is {what}" if path == tree else f"{path} is inside {what}, {tree}"
        if _inside(tree, path):
            return f"{path} holds {what}, {tree}"
    return None


def _refusal(path: str) -> tuple[str, str] | None:
    """(why, how a symlink leads there) when `path` is refused: checked as written
    (normalised), and where its symlinks lead (`..` after a symlink, as the kernel reads it)."""
    clean = normalise(path)
    for candidate in dict.fromkeys([clean, normalise(os.path.realpath(clean)), normalise(os.path.realpath(path))]):
        why = _why_refused(candidate)
        if why:
            return why, f" ({clean} leads there through a symlink)" if candidate != clean else ""
    return None


def panel_data_check(path: str, *, what: str) -> None:
    """InvalidInput with one line when `path` is, holds or is inside the panel's own data (or
    a system folder): the last check before a folder is removed, with settings as they are now."""
    refused = _refusal(path)
    if refused:
        why, via = refused
        raise InvalidInput(f"{what} refused: {why}{via}; nothing was removed")


def local_root_clean(path: str, *, url: str = "") -> str:
    """The normalised absolute path of a local volume, or InvalidInput with one line."""
    shown = url or path
    if "\x00" in path:
        raise InvalidInput(f"volume URL {shown!r}: the path contains a NUL character")
    if not path.startswith("/"):
        raise InvalidInput(f"volume URL {shown!r}: local:// needs an absolute path, e.g. local:///srv/volume")
    refused = _refusal(path)
    if refused:
        # The URL as written is in the message already; a symlink is the one surprise.
        why, via = refused
        raise InvalidInput(
            f"volume URL {shown!r} refused: {why}{via}; use a folder of its own, e.g. local:///srv/volumes/<name>"
        )
    return normalise(path)

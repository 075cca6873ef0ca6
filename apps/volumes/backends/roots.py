"""Which folders may be a local volume: paths are normalised first, then system folders and
the panel's own data are refused, with one line that says why.

    local_root_clean("/srv/../etc")   # InvalidInput: /etc is a system folder
    local_root_clean("/srv/volumes/x/")  # "/srv/volumes/x"

Two kinds of refusal:
- system trees (`/proc`, `/sys`, `/dev`, `/etc`, `/boot`, `/run`, `/usr`, `/var/lib/docker`…):
  neither the folder nor anything inside it is a volume;
- tops that hold everything else (`/`, `/home`, `/srv`, `/tmp`, `/var`…): the folder itself is
  refused, a folder inside it is fine (`/srv/volumes/x`, a test's `/tmp/pytest-…/vol`).
The panel's own `VAR_DIR` (database, secret key, snapshots, mix-job folders, cache) is a
refused tree too, except `VAR_DIR/volumes/` and below: that is where local volumes live by
default (the default sessions volume is `VAR_DIR/volumes/music-split-jobs-data`). The file://
snapshot store and the mix-job folders are refused wherever they are configured.

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


def _configured_folder(value) -> str | None:
    """A folder from settings (a path, or a `file://` / `dedup+file://` URL), normalised."""
    if not value:
        return None
    text = str(value)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme not in {"file", "dedup+file"}:
            return None
        text = unquote(parsed.netloc + parsed.path)
    return normalise(os.path.realpath(text)) if text.startswith("/") else None


def _panel_trees() -> list[tuple[str, str]]:
    """(folder, what it is) for the panel's own data, read from settings at call time."""
    trees = []
    for setting, label in [
        ("SNAPSHOT_STORE_URL", "the panel's snapshot store"),
        ("MIX_MEDIA_DIR", "the panel's mix-job folder"),
        ("MIX_OUTPUTS_DIR", "the panel's mix-job outputs"),
        ("VAR_DIR", "the panel's own data folder (VAR_DIR)"),
    ]:
        folder = _configured_folder(getattr(settings, setting, None))
        if folder:
            trees.append((folder, label))
    return trees


def _why_refused(path: str) -> str | None:
    for tree, what in SYSTEM_TREES.items():
        if _inside(path, tree):
            return f"{path} is {what}" if path == tree else f"{path} is inside {tree} ({what})"
    if path in SYSTEM_TOPS:
        return f"{path} is a system folder that holds far more than one volume"
    var_dir = _configured_folder(getattr(settings, "VAR_DIR", None))
    for tree, what in _panel_trees():
        if var_dir and tree == var_dir and _inside(path, posixpath.join(var_dir, "volumes")):
            continue  # VAR_DIR/volumes/ is where local volumes live by default
        if _inside(path, tree):
            return f"{path} is {what}" if path == tree else f"{path} is inside {what}, {tree}"
    return None


def local_root_clean(path: str, *, url: str = "") -> str:
    """The normalised absolute path of a local volume, or InvalidInput with one line."""
    shown = url or path
    if "\x00" in path:
        raise InvalidInput(f"volume URL {shown!r}: the path contains a NUL character")
    if not path.startswith("/"):
        raise InvalidInput(f"volume URL {shown!r}: local:// needs an absolute path, e.g. local:///srv/volume")
    clean = normalise(path)
    resolved = normalise(os.path.realpath(clean))
    for candidate in dict.fromkeys([clean, resolved]):
        why = _why_refused(candidate)
        if why:
            # The URL as written is in the message already; a symlink is the one surprise.
            via = f" ({clean} leads there through a symlink)" if candidate != clean else ""
            raise InvalidInput(
                f"volume URL {shown!r} refused: {why}{via}; use a folder of its own, e.g. local:///srv/volumes/<name>"
            )
    return clean

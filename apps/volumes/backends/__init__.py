"""Volume backends: one small interface over a folder and a Modal Volume.

    backend = backend_for_url("local:///srv/volumes/music-split-jobs-data")
    for entry in backend.iter_entries("sessions"):   # streams, never a full list
        ...
    backend.remove("sessions/abc", recursive=True)
    backend.commit()                                  # True only where a commit means something

Paths are POSIX, relative to the volume root, without a leading slash; `..`, NUL and
absolute paths are refused before any call is made. A local volume's own path is normalised
and checked against system folders and the panel's own data (`roots`) before it is used or
stored: `volume_url_clean` gives the one spelling to store. A symlink is reported as one
(`is_symlink`) and never followed; removing it removes the link only.

`base` holds the interface, `local` and `modal` one backend each; this module picks one by
URL. The separations app uses it as its named adapter (`VolumeBackend`, `backend_for_url`).
"""

from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

from .base import Entry, InvalidInput, NotFound, Unreachable, Unreadable, VolumeBackend, VolumeChanged, clean_path
from .local import LocalBackend
from .modal import ModalBackend
from .roots import local_root_clean, panel_data_check

__all__ = [
    "Entry",
    "LocalBackend",
    "ModalBackend",
    "NotFound",
    "Unreachable",
    "Unreadable",
    "VolumeBackend",
    "VolumeChanged",
    "backend_for_url",
    "clean_path",
    "removal_target_check",
    "volume_url_clean",
]


def _parse(url: str) -> tuple[str, str, dict[str, str]]:
    """(scheme, the local path or the Modal volume name, the query), checked; InvalidInput else."""
    if not isinstance(url, str):
        raise InvalidInput(f"volume URL {str(url)[:60]!r} is not supported: use local:///path or modal://volume")
    parsed = urlparse(url)
    query = {key: values[0] for key, values in parse_qs(parsed.query).items()}
    if parsed.scheme == "local":
        # NUL, a relative path, `..` and system folders are refused here, before any call.
        return "local", local_root_clean(unquote(parsed.netloc + parsed.path), url=url), query
    if parsed.scheme == "modal":
        if not parsed.netloc:
            raise InvalidInput(f"volume URL {url!r}: modal:// needs a volume name, e.g. modal://my-volume")
        if "\x00" in url:
            raise InvalidInput(f"volume URL {url!r}: the URL contains a NUL character")
        if query.get("mount"):
            # Inside a container the mount is read like a local folder: the same rules apply.
            query["mount"] = local_root_clean(query["mount"], url=url)
        return "modal", parsed.netloc, query
    raise InvalidInput(f"volume URL {url!r} is not supported: use local:///path or modal://volume")


def volume_url_clean(url: str) -> str:
    """The one spelling of a volume URL to store: `local:///srv/../x/` → `local:///x`."""
    scheme, where, query = _parse(url)
    if scheme == "local":
        return f"local://{quote(where)}"
    return f"modal://{where}" + (f"?{urlencode(query, safe='/')}" if query else "")


def backend_for_url(url: str) -> VolumeBackend:
    """`local:///path` or `modal://<volume>?environment=<env>`."""
    scheme, where, query = _parse(url)
    if scheme == "local":
        return LocalBackend(Path(where), url=url)
    return ModalBackend(where, environment=query.get("environment"), url=url, mount_path=query.get("mount"))


def removal_target_check(*, backend: VolumeBackend, path: str) -> None:
    """Right before `path` is removed from a folder on this machine (a local volume, or a Modal
    volume read through its mount): InvalidInput when it is, holds or is inside the panel's own
    data as settings say now, since they may have changed after the volume was opened."""
    # Both backends live in this package: their own path helpers say where the folder is.
    if isinstance(backend, ModalBackend):
        backend = backend._mount()
    if isinstance(backend, LocalBackend):
        relative = clean_path(path)
        panel_data_check(str(backend._local(relative)), what=f"removing {relative}/ from volume {backend.name}")

"""Volume backends: one small interface over a folder and a Modal Volume.

    backend = backend_for_url("local:///srv/volumes/music-split-jobs-data")
    for entry in backend.iter_entries("sessions"):   # streams, never a full list
        ...
    backend.remove("sessions/abc", recursive=True)
    backend.commit()                                  # True only where a commit means something

Paths are POSIX, relative to the volume root, without a leading slash; `..`, NUL and
absolute paths are refused before any call is made. A symlink is reported as one
(`is_symlink`) and never followed; removing it removes the link only.

`base` holds the interface, `local` and `modal` one backend each; this module picks one by
URL. The separations app uses it as its named adapter (`VolumeBackend`, `backend_for_url`).
"""

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from .base import Entry, InvalidInput, NotFound, Unreachable, VolumeBackend, clean_path
from .local import LocalBackend
from .modal import ModalBackend

__all__ = [
    "Entry",
    "LocalBackend",
    "ModalBackend",
    "NotFound",
    "Unreachable",
    "VolumeBackend",
    "backend_for_url",
    "clean_path",
]


def backend_for_url(url: str) -> VolumeBackend:
    """`local:///path` or `modal://<volume>?environment=<env>`."""
    parsed = urlparse(url or "")
    if parsed.scheme == "local":
        path = unquote(parsed.netloc + parsed.path)
        # A NUL would only fail later, inside an inspection, as an unexpected ValueError.
        if "\x00" in path:
            raise InvalidInput(f"volume URL {url!r}: the path contains a NUL character")
        if not path.startswith("/"):
            raise InvalidInput(f"volume URL {url!r}: local:// needs an absolute path, e.g. local:///srv/volume")
        return LocalBackend(Path(path), url=url)
    if parsed.scheme == "modal":
        if not parsed.netloc:
            raise InvalidInput(f"volume URL {url!r}: modal:// needs a volume name, e.g. modal://my-volume")
        environment = parse_qs(parsed.query).get("environment", [None])[0]
        return ModalBackend(parsed.netloc, environment=environment, url=url)
    raise InvalidInput(f"volume URL {url!r} is not supported: use local:///path or modal://volume")

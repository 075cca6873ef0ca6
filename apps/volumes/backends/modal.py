"""The Modal Volume backend (`modal://<volume>?environment=<env>[&mount=/data]`).

Two places it can run, and they persist changes differently:
- outside Modal (the panel on its own machine): the SDK's `remove_file` persists at once
  and there is nothing to commit, so `commit()` makes no call and returns False;
- inside a Modal container that mounts the volume (the `mount` query names where, e.g.
  `/data`): reads and deletions go through the mount like a local folder, and only
  `commit()` makes them durable; one commit per batch, never one per file.

Every SDK failure becomes one line for people: Unreachable (credentials, network, the
service) or NotFound (no such volume, no such path). No traceback reaches a page.
"""

import posixpath
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from django.conf import settings

from controlpanel.errors import InvalidInput, NotFound, PanelError, Unreachable
from controlpanel.formatting import first_line

from .base import Entry, clean_path
from .local import LocalBackend

# The SDK retries a first connection for about a minute; a page or an API call must not
# hang that long on an outage, so we knock on the server's port first.
CONNECT_TIMEOUT_SECONDS = 5
# Modal's entry types beyond file, folder and symlink (FileEntryType values), as the panel names them.
SPECIAL_TYPES = {0: "entry of unknown type", 4: "FIFO", 5: "socket"}


class ModalBackend:
    def __init__(self, name: str, *, environment: str | None = None, url: str = "", mount_path: str | None = None):
        if mount_path is None and url:
            mount_path = parse_qs(urlparse(url).query).get("mount", [None])[0]
        self.name = name
        # Without ?environment= the panel's MODAL_ENVIRONMENT applies, then the SDK's own default.
        self.environment = environment or getattr(settings, "MODAL_ENVIRONMENT", "") or None
        self.url = url or f"modal://{name}" + (f"?environment={environment}" if environment else "")
        self.mount_path = Path(mount_path) if mount_path else None
        self._handle = None

    # -- where we run ---------------------------------------------------------------------

    @property
    def commit_is_meaningful(self) -> bool:
        """Inside a Modal container with the volume mounted; nowhere else."""
        # modal.is_local() is True in a Function's child processes and in Sandboxes, where the
        # mount is still there; MODAL_IS_REMOTE (the SDK's own test) is set in every container.
        from modal.config import _is_remote

        return self.mount_path is not None and _is_remote() and self.mount_path.is_dir()

    def _mount(self) -> LocalBackend | None:
        if not self.commit_is_meaningful:
            return None
        return LocalBackend(self.mount_path, url=self.url, name=self.name)

    @property
    def _where(self) -> str:
        return f"Modal volume {self.name!r}" + (f" (environment {self.environment!r})" if self.environment else "")

    # -- SDK calls, with failures turned into one line ------------------------------------

    def _translate(self, exc: BaseException, path: str = "") -> PanelError:
        import modal.exception as mx

        if isinstance(exc, PanelError):
            return exc
        if isinstance(exc, mx.AuthError):
            return Unreachable(
                f"{self._where}: Modal refused the credentials ({first_line(exc)[:300]}); "
                "set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"
            )
        if isinstance(exc, mx.PermissionDeniedError):
            return Unreachable(f"{self._where}: Modal denied permission ({first_line(exc)[:300]})")
        if isinstance(exc, mx.NotFoundError | FileNotFoundError):
            if path:
                return NotFound(f"{path} does not exist on {self._where}")
            # Modal's own words repeat the name; say what to check instead.
            return NotFound(f"{self._where} not found: check the name and environment (`modal volume list`)")
        if isinstance(exc, mx.InvalidError):
            return InvalidInput(f"{self._where}: {first_line(exc)[:300]}")
        if isinstance(exc, OSError | TimeoutError | mx.Error):
            return Unreachable(f"{self._where} unreachable: {first_line(exc)[:300]}")
        return Unreachable(f"{self._where}: unexpected Modal error {type(exc).__name__}: {first_line(exc)[:300]}")

    def _probe(self) -> None:
        """Fail fast, with one line, when the Modal server does not accept connections."""
        from modal.config import config

        server = urlparse(str(config["server_url"]).split(",")[0].strip())
        if server.scheme not in {"http", "https"} or not server.hostname:
            return  # unix sockets and the like: let the SDK speak for itself
        port = server.port or (443 if server.scheme == "https" else 80)
        try:
            with socket.create_connection((server.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS):
                pass
        except OSError as exc:
            raise Unreachable(
                f"{self._where} unreachable: cannot connect to {server.hostname}:{port} ({exc})"
            ) from None

    def _volume(self):
        """The hydrated SDK handle, looked up once; an unknown volume fails here, by name."""
        if self._handle is None:
            import modal

            self._probe()
            try:
                handle = modal.Volume.from_name(self.name, environment_name=self.environment)
                handle.hydrate()
            except Exception as exc:  # every SDK failure becomes one line for people
                raise self._translate(exc) from None
            self._handle = handle
        return self._handle

    def _entry(self, item) -> Entry:
        from modal.volume import FileEntryType

        path = item.path.lstrip("/")
        is_dir = item.type == FileEntryType.DIRECTORY
        special = SPECIAL_TYPES.get(item.type, "")
        return Entry(
            path=path,
            is_dir=is_dir,
            size=0 if is_dir or special else int(item.size),
            mtime=datetime.fromtimestamp(item.mtime, tz=UTC) if item.mtime else None,
            is_symlink=item.type == FileEntryType.SYMLINK,
            special=special,
        )

    # -- the interface ----------------------------------------------------------------------

    def check(self) -> None:
        self._volume()
        mount = self._mount()
        if mount is not None:
            mount.check()

    def iter_entries(self, path: str = "", *, recursive: bool = True) -> Iterator[Entry]:
        relative = clean_path(path)
        mount = self._mount()
        if mount is not None:
            # Uncommitted deletions are visible only through the mount, so read it there.
            yield from mount.iter_entries(relative, recursive=recursive)
            return
        volume = self._volume()
        try:
            for item in volume.iterdir(relative or "/", recursive=recursive):
                entry = self._entry(item)
                if entry.path == relative:
                    continue  # a file path lists itself; the contract lists only what is below
                yield entry
        except Exception as exc:  # every SDK failure becomes one line for people
            translated = self._translate(exc, relative)
            if isinstance(translated, NotFound) and relative:
                return  # nothing below a path that is not there, as for a folder
            raise translated from None

    def stat(self, path: str) -> Entry | None:
        relative = clean_path(path)
        mount = self._mount()
        if mount is not None:
            return mount.stat(relative)
        if not relative:
            self._volume()
            return Entry(path="", is_dir=True, size=0, mtime=None)
        parent = posixpath.dirname(relative)
        # Modal has no stat call: list the parent, one level, and stop at the name.
        for entry in self.iter_entries(parent, recursive=False):
            if entry.path == relative:
                return entry
        return None

    def remove(self, path: str, *, recursive: bool = False) -> None:
        relative = clean_path(path)
        if not relative:
            raise InvalidInput("refusing to remove the volume root")
        mount = self._mount()
        if mount is not None:
            mount.remove(relative, recursive=recursive)
            return
        volume = self._volume()
        if not recursive:
            # Modal would remove an empty folder; the interface refuses any folder without
            # `recursive`, the same on both backends.
            entry = self.stat(relative)
            if entry is None:
                raise NotFound(f"{relative} does not exist on {self._where}")
            if entry.is_dir:
                raise InvalidInput(f"{relative} is a folder; remove it recursively")
        try:
            volume.remove_file(relative, recursive=recursive)
        except Exception as exc:  # every SDK failure becomes one line for people
            raise self._translate(exc, relative) from None

    def commit(self) -> bool:
        if not self.commit_is_meaningful:
            # From outside a container remove_file has persisted already; a commit here
            # would be an error from Modal, and pretending to make one would be a lie.
            return False
        try:
            self._volume().commit()
        except Exception as exc:  # every SDK failure becomes one line for people
            raise self._translate(exc) from None
        return True

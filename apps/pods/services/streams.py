"""What the threads streaming a pod's volumes share with the thread that records them: the
bytes moved and the volumes begun (`ByteCounter`), and each volume's store writer, made ahead
when writers are slow to start (`Writers`)."""

import threading

from apps.pods.snapshots import ObjectWriter, SnapshotStore


class ByteCounter:
    """Bytes moved by the streaming threads, and the volumes they began, collected by the main
    thread for progress and the phase people read ("streaming /home, 2 of 8")."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = 0
        self.began: list[str] = []
        self.changed: list[str] = []
        self.retried: list[str] = []

    def _note(self, kind: str, mount_path: str) -> None:
        with self._lock:
            getattr(self, kind).append(mount_path)

    def _taken(self, kind: str) -> list[str]:
        with self._lock:
            noted = getattr(self, kind)
            setattr(self, kind, [])
        return noted

    def begin(self, mount_path: str) -> None:
        self._note("began", mount_path)

    def take_began(self) -> list[str]:
        return self._taken("began")

    def restart(self, mount_path: str) -> None:
        """A volume compared and found changed is read again, to the store."""
        self._note("changed", mount_path)

    def take_changed(self) -> list[str]:
        return self._taken("changed")

    def retry(self, mount_path: str) -> None:
        """A running container's volume came out cut short and is read again."""
        self._note("retried", mount_path)

    def take_retried(self) -> list[str]:
        return self._taken("retried")

    def add(self, amount: int) -> None:
        with self._lock:
            self._pending += amount

    def take(self) -> int:
        with self._lock:
            amount, self._pending = self._pending, 0
        return amount


class Writers:
    """Each volume's writer, made for the next volume as soon as one begins when the store's
    writers are slow to start (a restic backup deriving its key): that time passes while the
    volume before it streams. Writers made and never used are aborted: nothing of them stays."""

    def __init__(self, store: SnapshotStore, keys: list[str]):
        self.store = store
        self.keys = keys
        self.after = dict(zip(keys, keys[1:], strict=False))
        self.made: dict[str, ObjectWriter] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> ObjectWriter:
        with self._lock:
            writer = self.made.pop(key, None)
        writer = writer or self.store.writer(key)
        following = self.after.get(key)
        with self._lock:  # a volume read again takes its key again: the next one's writer is made once
            if following in self.made:
                following = None
        if following is not None and self.store.slow_writer_start:
            try:
                prepared = self.store.writer(following)
            except Exception:
                return writer  # the next volume makes its own, and says why if it still cannot
            except BaseException:
                writer.abort()
                raise
            with self._lock:
                self.made[following] = prepared
        return writer

    def prepare(self, key: str) -> None:
        """Make `key`'s writer now when writers are slow to start (the first one to be taken)."""
        if not self.store.slow_writer_start:
            return
        writer = self.store.writer(key)
        with self._lock:
            self.made[key] = writer

    def abort_unused(self) -> None:
        with self._lock:
            unused, self.made = list(self.made.values()), {}
        for writer in unused:
            writer.abort()

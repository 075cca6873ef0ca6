"""A stop's manifest read back by a restic started before the manifest is written: restic's
key derivation (most of a small read's time) runs while the read-back of the volumes ends."""

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from apps.pods.stores.dedup import DedupStore
from controlpanel.threads import started

logger = logging.getLogger(__name__)

# The manifest's read-back starts while the volumes' read-back ends: when what is left of it
# would take this share of restic's start (its key derivation, mostly, as the manifest's reader
# will spend it), less the time writing the manifest takes.
AHEAD_SHARE = 0.6
MANIFEST_WRITE_SECONDS = 0.1
# How long the manifest's early read is waited for before it is read again the usual way.
AHEAD_WAIT_SECONDS = 5
# The pace of a read-back is told after this long.
PACE_AFTER_SECONDS = 0.05


class ManifestAhead:
    """A stop's manifest read back by a restic started before the manifest is written: its key
    derivation (most of a small read's time) runs while the volumes' read-back ends, and it
    looks for the manifest as soon as that is done, written or not. What it found counts only
    if it is the manifest as written; anything else (nothing yet, another manifest) proves
    nothing: the manifest is then read back again, after it was written, as always."""

    def __init__(self, store: DedupStore, key: str):
        self.store, self.key = store, key
        self.reading: Future | None = None

    def start(self) -> None:
        if self.reading is None:
            # Without restic's lock; whatever it meets is left to the usual read after the write.
            self.reading = started(lambda: b"".join(self.store.manifest_by_tag(self.key)), name="manifest-ahead")

    def found(self) -> dict | None:
        """The manifest the early read found, if it found one. Anything else (nothing found
        yet, a lock, a restic that could not start, no answer within AHEAD_WAIT_SECONDS) is
        None: the early read only ever saves time, the usual read decides."""
        if self.reading is None:
            return None
        try:
            found = json.loads(self.reading.result(timeout=AHEAD_WAIT_SECONDS))
        except Exception as exc:
            logger.info("the early read of %s gave nothing: %s", self.key, exc)
            return None
        return found if isinstance(found, dict) else None


def tar_bytes_about(summary: dict) -> int:
    """About how long restic's tar of a backup's folders is, from its summary: every file's
    bytes, and for each file and folder a 512-byte header and half a block of padding."""
    counted = ["total_files_processed", "dirs_new", "dirs_changed", "dirs_unmodified"]
    entries = sum(int(summary.get(name) or 0) for name in counted)
    return int(summary.get("total_bytes_processed") or 0) + 768 * entries


def near_end(*, begun: float, first: float, first_count: int, now: float, count: int, expected: int) -> bool:
    """Whether what is left of a read-back (of about `expected` bytes) would end within the
    time a restic started now takes to look for the manifest (see AHEAD_SHARE). It began at
    `begun`, gave its first `first_count` bytes at `first`, and by `now` has given `count`."""
    lead = AHEAD_SHARE * (first - begun) - MANIFEST_WRITE_SECONDS
    if count >= expected:
        return True
    if now - first < PACE_AFTER_SECONDS or count <= first_count:
        return False  # too few bytes yet to tell the pace
    return (expected - count) * (now - first) / (count - first_count) <= lead


class NearingEnd:
    """Calls `nearing()` once, as a read of about `expected` bytes begun at `begun` nears its
    end (`near_end`), and at the latest when it has ended (`ended`)."""

    def __init__(self, nearing: Callable[[], None] | None, *, expected: int, begun: float):
        self.nearing, self.expected, self.begun = nearing, expected, begun
        self.first: float | None = None
        self.first_count = 0

    def read(self, count: int) -> float:
        """`count` bytes read so far; the time now."""
        now = time.monotonic()
        if self.first is None:
            self.first, self.first_count = now, count
        pace = {"begun": self.begun, "first": self.first, "first_count": self.first_count, "now": now, "count": count}
        if self.nearing is not None and near_end(**pace, expected=self.expected):
            self.ended()
        return now

    def ended(self) -> None:
        if self.nearing is not None:
            nearing, self.nearing = self.nearing, None
            nearing()

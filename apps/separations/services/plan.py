"""Cleanup policies and the plan of a batch: what it would delete, read from the volume.

*download* and *exit* look at the N oldest sessions and delete those older than their age
limit; *manual* deletes the named sessions now. A plan is also the batch's dry run: its
`preview()` is what the confirmation page and the admin show before anything is deleted.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.audit.holds import ON_HOLD, held_ids, hold_refuse
from apps.audit.names import TargetType
from apps.separations.services.scan import SessionScan, session_scan, volume_scan
from apps.volumes.backends import VolumeBackend
from controlpanel.errors import InvalidInput
from controlpanel.formatting import plural
from controlpanel.paths import validate_id
from controlpanel.preview import Preview, PreviewItem

POLICIES = ("download", "exit", "manual")


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int | None  # how many of the oldest sessions are looked at
    min_age: timedelta | None  # only sessions older than this (strictly) are deleted

    @property
    def hours(self) -> str:
        return f"{self.min_age.total_seconds() / 3600:g} h" if self.min_age else ""

    @property
    def description(self) -> str:
        if self.name == "manual":
            return "manual: the named sessions, now"
        return f"{self.name}: the {self.limit} oldest sessions, those older than {self.hours}"


def policy_get(name: str) -> Policy:
    if name == "download":
        return Policy(
            "download",
            settings.SESSIONS_POLICY_DOWNLOAD_LIMIT,
            timedelta(minutes=settings.SESSIONS_POLICY_DOWNLOAD_AGE_MINUTES),
        )
    if name == "exit":
        return Policy(
            "exit", settings.SESSIONS_POLICY_EXIT_LIMIT, timedelta(minutes=settings.SESSIONS_POLICY_EXIT_AGE_MINUTES)
        )
    if name == "manual":
        return Policy("manual", None, None)
    raise InvalidInput(f"policy {str(name)[:40]!r} is not known: use download, exit or manual")


def clean_session_ids(session_ids: Sequence[str]) -> list[str]:
    ids = [validate_id(value, kind="session id") for value in session_ids]
    return list(dict.fromkeys(ids))


def cleanup_params_check(*, policy: str, session_ids: Sequence[str] = ()) -> tuple[Policy, list[str]]:
    """Refuse a batch that names the wrong sessions before anything is read or written."""
    chosen = policy_get(policy)
    ids = clean_session_ids(session_ids)
    if chosen.name == "manual" and not ids:
        raise InvalidInput("a manual cleanup needs at least one session id")
    if chosen.name != "manual" and ids:
        raise InvalidInput(f"the {chosen.name} policy chooses its own sessions; name sessions only with manual")
    return chosen, ids


def cleanup_check(target_id: str, params: dict[str, Any]) -> None:
    """The cleanup kind's `check`: a bad policy or id, or a named session on hold, leaves no
    operation behind."""
    _, ids = cleanup_params_check(policy=params.get("policy", ""), session_ids=params.get("session_ids") or ())
    for session_id in ids:
        hold_refuse(target_type=TargetType.SEPARATION_SESSION, target_id=session_id, what=f"session {session_id}")


def _oldest_first(session: SessionScan):
    # A session without any mtime cannot be proven old: it sorts last and is never due.
    missing = session.modified_at is None
    return (missing, session.modified_at or datetime.min, session.session_id)


HARD_LINKED_WHY = "hard-linked files: removing them frees nothing and may change a file outside the volume"
UNREADABLE_WHY = "could not be read, so what it holds is unknown: skipped"


@dataclass
class CleanupPlan:
    policy: Policy
    volume: str
    looked_at: list[SessionScan]
    to_delete: list[SessionScan]
    # Due or named, but holding hard-linked files: reported and left alone.
    hard_linked: list[SessionScan] = field(default_factory=list)
    # Names under sessions/ that are not session ids: reported, never touched.
    not_ids: list[str] = field(default_factory=list)
    # Due or named, but holding folders that could not be read: skipped with the reason.
    unreadable: list[SessionScan] = field(default_factory=list)
    # Due, but a person put them on hold: kept, and said so.
    held: list[SessionScan] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(s.total_bytes for s in self.to_delete)

    @property
    def ignored(self) -> list[str]:
        return (
            self.not_ids
            + [f"{s.session_id} ({s.hard_links} hard-linked files, left alone)" for s in self.hard_linked]
            + self.skipped
            + [f"{s.session_id} ({ON_HOLD})" for s in self.held]
        )

    @property
    def skipped(self) -> list[str]:
        """`abc: could not read 1 folder: output (Permission denied)`: what a batch skips and why."""
        return [f"{s.session_id}: {s.problems}" for s in self.unreadable]

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.name,
            "volume": self.volume,
            "looked_at": len(self.looked_at),
            "would_delete": [s.session_id for s in self.to_delete],
            "bytes": self.total_bytes,
            "skipped": self.skipped,
        }

    def why(self, session: SessionScan) -> str:
        if self.policy.name == "manual":
            reason = "named for a manual cleanup"
        else:
            reason = f"older than {self.policy.hours}"
        if session.modified_at:
            reason = f"last written {session.modified_at:%Y-%m-%d %H:%M} UTC, {reason}"
        reason += f"; {plural(session.file_count, 'file')}"
        if session.symlinks or session.is_symlink:
            reason += ", symlinks removed unfollowed"
        if session.special:
            reason += (
                f", {plural(len(session.special), 'special file')} ({', '.join(session.special)}) unlinked unopened"
            )
        return reason

    def preview(self) -> Preview:
        return Preview(
            title=f"Clean up sessions: {self.policy.name} policy",
            summary=(
                f"{self.policy.description}. Looked at {len(self.looked_at)} on {self.volume}; "
                f"{len(self.to_delete)} would be deleted, then one commit if the volume needs it."
            ),
            delete=[
                PreviewItem(name=s.session_id, bytes=s.total_bytes, why=self.why(s), path=s.path)
                for s in self.to_delete
            ],
            keep=[
                PreviewItem(
                    name=s.session_id, bytes=s.total_bytes, why=f"{s.hard_links} {HARD_LINKED_WHY}", path=s.path
                )
                for s in self.hard_linked
            ]
            + [
                PreviewItem(name=s.session_id, bytes=s.total_bytes, why=f"{UNREADABLE_WHY} ({s.problems})", path=s.path)
                for s in self.unreadable
            ]
            + [PreviewItem(name=s.session_id, bytes=s.total_bytes, why=ON_HOLD, path=s.path) for s in self.held]
            + [PreviewItem(name=name, why="not a session id: never touched") for name in self.not_ids],
        )


def _sorted_out(due: list[SessionScan]) -> dict[str, list[SessionScan]]:
    """What of `due` is deleted, and what is left alone and why."""
    held = held_ids(target_type=TargetType.SEPARATION_SESSION, target_ids=[s.session_id for s in due])
    if held:
        # A policy skips what a person put on hold (a manual batch naming one is refused earlier).
        # The rest is read again: one held meanwhile is kept in the list too, not dropped from both.
        rest = _sorted_out([s for s in due if s.session_id not in held])
        return {**rest, "held": [s for s in due if s.session_id in held] + rest.get("held", [])}
    return {
        # Unreadable sessions are skipped: what they hold (hard links?) cannot be known.
        "unreadable": [s for s in due if s.unreadable],
        # Sessions holding hard-linked files are left alone: removing them would free nothing
        # for those files and change a file that may live outside the volume.
        "hard_linked": [s for s in due if s.hard_links and not s.unreadable],
        "to_delete": [s for s in due if not s.hard_links and not s.unreadable],
    }


def cleanup_plan(
    *, backend: VolumeBackend, policy: Policy, session_ids: Sequence[str] = (), now: datetime | None = None
) -> CleanupPlan:
    """What a batch would delete, read from the volume itself (the mirror may be stale)."""
    now = now or timezone.now()
    if policy.name == "manual":
        ids = clean_session_ids(session_ids)
        if not ids:
            raise InvalidInput("a manual cleanup needs at least one session id")
        sessions = [session_scan(backend=backend, session_id=sid) for sid in ids]
        return CleanupPlan(policy=policy, volume=backend.name, looked_at=sessions, **_sorted_out(sessions))
    if session_ids:
        raise InvalidInput(f"the {policy.name} policy chooses its own sessions; name sessions only with manual")
    scan = volume_scan(backend=backend)
    looked_at = sorted(scan.sessions.values(), key=_oldest_first)[: policy.limit]
    cutoff = now - policy.min_age
    # Strictly older: a session exactly at the limit stays for this round.
    due = [s for s in looked_at if s.modified_at is not None and s.modified_at < cutoff]
    return CleanupPlan(policy=policy, volume=scan.volume, looked_at=looked_at, not_ids=scan.ignored, **_sorted_out(due))

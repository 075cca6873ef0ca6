"""What each domain app offers the overview and the leak report, as typed objects.

A domain app registers one `OverviewProvider` from its `AppConfig.ready()`; the dashboard,
on top of every app, reads `overview_providers()` and imports none of them. A provider's
`section()` reads the database only (no Docker, S3 or Modal call), so the overview stays
fast; a part that is unreachable shows as the section's `error`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Leak:
    """Storage held that should not be, with the page that fixes it."""

    label: str
    domain: str
    bytes: int | None
    fix_url: str
    fix_label: str


@dataclass(frozen=True)
class Attention:
    """One thing that needs a person, for the strip that opens the overview: a stalled job,
    a problem file, a volume unsynced, unreachable or over budget. `severity` is "error"
    (something failed or is lost) or "warning" (something to look at)."""

    label: str
    url: str = ""
    severity: str = "warning"


@dataclass
class OverviewSection:
    """One card of the overview: what a domain holds, a few figures, and its leaks."""

    title: str
    url: str
    bytes: int | None
    rows: list[tuple[str, Any]] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    error: str = ""
    attention: list[Attention] = field(default_factory=list)


@dataclass(frozen=True)
class OverviewProvider:
    app_label: str
    title: str
    section: Callable[[], OverviewSection]
    order: int = 100


_PROVIDERS: dict[str, OverviewProvider] = {}


def register_overview(provider: OverviewProvider) -> None:
    _PROVIDERS[provider.app_label] = provider


def overview_providers() -> list[OverviewProvider]:
    return sorted(_PROVIDERS.values(), key=lambda provider: (provider.order, provider.app_label))


def overview_collect() -> list[OverviewSection]:
    """Every registered section, now. A provider that raises a PanelError (a part out of
    reach) becomes a section that says so, never an exception."""
    from controlpanel.errors import PanelError

    sections = []
    for provider in overview_providers():
        try:
            sections.append(provider.section())
        except PanelError as exc:
            sections.append(OverviewSection(title=provider.title, url="", bytes=None, error=str(exc)))
    return sections


def bytes_held(sections: list[OverviewSection]) -> int:
    return sum(section.bytes or 0 for section in sections)


def bytes_leaked(sections: list[OverviewSection]) -> int:
    return sum(leak.bytes or 0 for section in sections for leak in section.leaks)

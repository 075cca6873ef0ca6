"""The one shape every destructive dry run returns, and the one page that confirms it.

A service's preview names what would go (with bytes and why) and what stays (and why);
`confirm_page` renders any of them the same way, from the pages and the admin alike, and
`is_confirmed` is the one test that the person pressed the confirm button.
"""

from dataclasses import dataclass, field

from django.shortcuts import render

from controlpanel.errors import PanelError, http_status
from controlpanel.formatting import humanize_bytes, plural


@dataclass(frozen=True)
class PreviewItem:
    name: str
    bytes: int | None = None
    why: str = ""
    path: str = ""


@dataclass
class Preview:
    """What an action would do. `destructive=False` for work that deletes nothing (start):
    it still confirms, without a red button."""

    title: str
    summary: str
    delete: list[PreviewItem] = field(default_factory=list)
    keep: list[PreviewItem] = field(default_factory=list)
    destructive: bool = True

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes or 0 for item in self.delete)

    @property
    def has_work(self) -> bool:
        """False when confirming would do nothing: the page then offers no button."""
        return bool(self.delete) or not self.destructive

    @property
    def sentence(self) -> str:
        if not self.delete:
            return self.summary
        return f"{self.summary} {plural(len(self.delete), 'item')}, {humanize_bytes(self.total_bytes)} in all."


@dataclass(frozen=True)
class Alternative:
    """A second button on a confirmation page (always red): what it does, its label, the
    fields it adds to the page's own, or why it is refused now."""

    summary: str
    label: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""


def is_confirmed(request) -> bool:
    return request.method == "POST" and request.POST.get("confirm") == "yes"


def confirm_page(
    request,
    *,
    title: str,
    preview: Preview | None = None,
    error: PanelError | None = None,
    action_url: str = "",
    cancel_url: str = "/",
    confirm_label: str = "Confirm",
    fields: list[tuple[str, str]] | tuple = (),
    kind: str = "",
    alternative: Alternative | None = None,
):
    """The confirmation page. A preview that was refused shows its one line with the status
    its error calls for (400 bad input, 404 unknown, 409 not now, 503 unreachable). An
    `alternative` is a second, destructive way to confirm the same work, posted to the same
    action with its own fields; offer it only to people who may use it."""
    context = {
        "title": title,
        "preview": preview,
        "error": str(error) if error else "",
        "action_url": action_url,
        "cancel_url": cancel_url,
        "confirm_label": confirm_label,
        "fields": list(fields),
        # The kind of work the button asks for: a person who may not ask for it sees no
        # live button (the page says why). Without it, the page goes by the person's role.
        "kind": str(kind),
        "alternative": alternative,
    }
    status = http_status(error) if error else 200
    return render(request, "confirm.html", context, status=status)

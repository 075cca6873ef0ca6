"""Errors meant for people.

A `PanelError` carries one line a human can act on. Views show it on the page, the CLI
prints it and exits non-zero, an Operation records it as *failed* (an expected refusal).
Anything else that escapes a service is a bug: the Operation is *errored* and the
traceback goes to the log only.
"""


class PanelError(Exception):
    """An expected refusal or failure, with a message for the person who asked."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(PanelError):
    """Input that was rejected before anything was touched (bad id, path outside a root)."""


class NotFound(PanelError):
    """The named object does not exist."""


class Busy(PanelError):
    """Another operation holds the object; try again when it finishes."""


class Unreachable(PanelError):
    """A part (Docker host, S3, Modal) could not be reached."""


class Forbidden(PanelError):
    """The person asking lacks the permission the action needs."""


class IllegalTransition(PanelError):
    """A status change the state machine does not allow; nothing was changed."""


def http_status(exc: PanelError) -> int:
    """The one rule for the status a refusal is shown with, on every page."""
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Unreachable):
        return 503
    return 409  # busy, an illegal move, any other refusal: the request is fine, not now

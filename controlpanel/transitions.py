"""One state-machine mechanism for every model with a status (pods, snapshots, sessions).

A model lists its legal moves in `TRANSITIONS` and calls `self.transition(to)`; an illegal
move raises `IllegalTransition` with a line a person understands and changes nothing.
A model that stamps times or reasons on a move overrides `on_transition`.
"""

from typing import ClassVar

from controlpanel.errors import IllegalTransition


class StateMachine:
    """Mixin for a Django model with a `status` field. Saving stays the caller's job."""

    TRANSITIONS: ClassVar[dict[str, set[str]]] = {}

    def state_label(self) -> str:
        """How the object is named in a refusal ("pod 'abc'")."""
        return f"{type(self).__name__.lower()} #{self.pk}"

    def can_transition(self, to: str) -> bool:
        return to in self.TRANSITIONS.get(self.status, set())

    def transition(self, to: str, **details) -> None:
        """Move to `to` or refuse; `details` (who, why) reach `on_transition`."""
        if not self.can_transition(to):
            raise IllegalTransition(f"{self.state_label()} is {self.status}; it cannot go to {to}")
        before = self.status
        self.status = to
        self.on_transition(before, to, **details)

    def on_transition(self, before: str, to: str, **details) -> None:
        """Stamp what a move changes besides the status (times, who, why)."""

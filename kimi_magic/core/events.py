"""What a session tells its views after each change: a list of observers and one notify."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Receives (event, detail) after every change: "turn", "pin", "snapshot", "rollback",
#: "compact", "reset", "notice", "map".
Observer = Callable[[str, Any], None]


class Events:
    """Observers of one session; a failing observer never breaks the conversation.

    >>> seen = []
    >>> events = Events()
    >>> stop = events.subscribe(lambda event, detail: seen.append((event, detail)))
    >>> events.notify("reset")
    >>> stop(); events.notify("turn", 1)
    >>> seen
    [('reset', None)]
    """

    def __init__(self) -> None:
        self.observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event, detail)`` after every change; returns an unsubscribe."""
        self.observers.append(observer)
        return lambda: self.observers.remove(observer) if observer in self.observers else None

    def notify(self, event: str, detail: Any = None) -> None:
        for observer in list(self.observers):
            try:
                observer(event, detail)
            except Exception:  # a broken view must never break the conversation
                pass

"""A session's pins, kept within their budget: ``Pinning``.

Pins sit after the system prompt, so they are part of the cached prefix: a pin replaced keeps
its place (the prefix before it stays cached), and all pins together stay within the pin
budget, a share of the model's window, so the history keeps room.
"""

from __future__ import annotations

from dataclasses import replace

from . import hints
from .context import Pin
from .conversation import Conversation
from .errors import SessionError


class Pinning:
    """Adds, replaces and drops the pins of one conversation; observers hear ``"pin"``."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    def set(self, pin: Pin) -> None:
        """Add or replace a pin (in place, so the order and the cache prefix stay stable)."""
        c = self.conversation
        with c.lock:
            pins = list(c.context.pins)
            for i, p in enumerate(pins):
                if p.name == pin.name:
                    pins[i] = pin
                    break
            else:
                pins.append(pin)
            self.check_budget(pins)
            c.commit(replace(c.context, pins=tuple(pins)))
            # Counted by the server at once (before any view shows it), so the first estimate
            # after a pin is the server's figure, not the local tokenizer's guess (which is far
            # off on CSV and numbers).
            c.count_prefix()
            c.events.notify("pin", pin)

    def check_budget(self, pins: list[Pin]) -> None:
        """A one-line error if ``pins`` would take more than the pin budget."""
        c = self.conversation
        limit = c.settings.pin_limit(c.model().context_length)
        size = {p.name: c.accounting.pin_tokens(p) for p in pins}
        total = sum(size.values())
        if total > limit:
            biggest = ", ".join(f"{p.name} ({size[p.name]:,})"
                                for p in sorted(pins, key=lambda p: -size[p.name])[:3])
            raise SessionError(f"pins would take ~{total:,} tokens, over the pin budget of "
                               f"{limit:,} ({hints.setting('pin_budget')}); biggest: {biggest}")

    def drop(self, name: str | None = None, *, all: bool = False) -> list[str]:
        """Remove the pin ``name`` (or every pin with ``all``); the names removed."""
        c = self.conversation
        with c.lock:
            if all:
                names = [p.name for p in c.context.pins]
                pins: tuple[Pin, ...] = ()
            else:
                if c.context.pin(name or "") is None:
                    known = ", ".join(p.name for p in c.context.pins) or "none"
                    raise SessionError(f"no pin named {name!r} (pins: {known})")
                names = [name or ""]
                pins = tuple(p for p in c.context.pins if p.name != name)
            c.commit(replace(c.context, pins=pins))
            c.events.notify("pin", None)
            return names

"""The errors the core raises for the user's mistakes and for the store: one line each."""

from __future__ import annotations


class SessionError(Exception):
    """A user mistake or refused operation: one line, nothing changed."""


class StoreError(Exception):
    """The store could not be opened or written (one line for the user)."""


class SettingError(SessionError, ValueError):
    """A setting refused where it is declared (one line; the old value stays)."""

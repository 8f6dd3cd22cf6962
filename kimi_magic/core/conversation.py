"""What the parts of a session (turn, compaction, snapshots) use of it: ``Conversation``.

The parts are written against this protocol rather than ``Session`` itself, so none of them
imports the façade that composes them, and each can be driven by anything that has these
few members.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..wire.client import KimiClient
from .context import Context, Message, Snapshot
from .models import Model
from .settings import Settings
from .store import Store

if TYPE_CHECKING:
    from .accounting import Accounting
    from .choice import ModelChoice
    from .events import Events
    from .guard import Guard


class Conversation(Protocol):
    """The shared state of one session and the few operations every part needs."""

    name: str
    settings: Settings
    store: Store
    lock: threading.RLock
    clock: Callable[[], float]
    context: Context
    accounting: Accounting
    choice: ModelChoice
    events: Events
    guard: Guard
    last_call: float | None
    current_snapshot: int | None
    refresh_pins: Callable[[Context], tuple[Context, list[str]]] | None

    @property
    def client(self) -> KimiClient: ...

    def tokens(self) -> int: ...

    def cache_seconds_left(self) -> float: ...

    def model(self, model_id: str | None = None) -> Model: ...

    def state(self) -> dict[str, Any]: ...

    def commit(self, ctx: Context, *, call: dict[str, Any] | None = None,
               archive: tuple[str, list[list[Message]]] | None = None,
               new_history: bool = False) -> Context: ...

    def snapshot(self, label: str | None = None, *, auto: bool = False) -> Snapshot: ...

    def compact(self, model: Model | None = None, reason: str = "") -> str: ...

    def count_prefix(self) -> None: ...

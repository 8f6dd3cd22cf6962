"""kimi_magic: a Jupyter notebook as the place to run long work with Moonshot's Kimi.

``%load_ext kimi_magic`` adds ``%%kimi`` (ask, streaming), ``%kimi`` (snapshot, rollback,
compress, recall, pin, status, ...) and ``%%kimi_pin``; ``%config KimiMagic`` configures it.
From plain Python: ``kimi_magic.Session("name", kimi_magic.Settings(...)).ask("...")``.
"""

from __future__ import annotations

from typing import Any

from .core.context import Context, Message, Pin
from .core.errors import SessionError, SettingError
from .core.session import CompressResult, Session, Snapshot, Turn
from .core.settings import Settings
from .core.store import Store
from .fanout import Fanout, MapFailure, map_prompts
from .tools import tool
from .wire.client import KimiClient
from .wire.errors import KimiError
from .wire.request import Options

__all__ = ["Context", "CompressResult", "Fanout", "KimiClient", "KimiError", "MapFailure",
           "Message", "Options", "Pin", "Session", "SessionError", "SettingError", "Settings",
           "Snapshot", "Store", "Turn", "load_ipython_extension", "map_prompts", "tool",
           "unload_ipython_extension"]
__version__ = "0.1.0"


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext kimi_magic``: register the magics and the ``KimiMagic`` configurable."""
    from .notebook import extension

    extension.load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext kimi_magic``: remove the magics, the configurable and open sessions."""
    from .notebook import extension

    extension.unload(ip)

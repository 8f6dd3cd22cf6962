"""The extension hooks: what ``%load_ext kimi_magic`` registers and ``%unload_ext`` removes."""

from __future__ import annotations

import re
import warnings
from typing import Any

from traitlets import TraitError

from ..core import hints
from .magics import KimiMagic


def load(ip: Any) -> None:
    """``%load_ext kimi_magic``: register the magics and the ``KimiMagic`` configurable."""
    magic = _build(KimiMagic, ip)
    ip.register_magics(magic)
    if magic not in ip.configurables:  # some IPython versions register it already
        ip.configurables.append(magic)
    magic.cells.start()
    hints.use(hints.NOTEBOOK)


def _build(cls: Any, ip: Any) -> Any:
    """The configurable, dropping bad values a failed ``%config`` left in the shell's config.

    ``%config KimiMagic.x = bad`` reports the error but keeps ``bad`` in ``ip.config``; without
    this, every later ``%load_ext``/``%reload_ext`` would fail with a traceback.
    """
    while True:
        try:
            return cls(shell=ip, config=ip.config)
        except TraitError as err:
            found = re.search(r"(?:The '|KimiMagic\.)(\w+)", str(err))
            section = ip.config.get("KimiMagic", {})
            if not found or found.group(1) not in section:
                raise
            del section[found.group(1)]
            warnings.warn(f"kimi_magic: ignoring the setting KimiMagic.{found.group(1)} ({err})",
                          stacklevel=3)


def unload(ip: Any) -> None:
    """``%unload_ext kimi_magic``: remove the magics, the configurable and open sessions."""
    magic = ip.magics_manager.registry.pop("KimiMagic", None)
    if magic is None:
        return
    hints.use(hints.PYTHON)
    for kind, names in (("line", ("kimi",)), ("cell", ("kimi", "kimi_pin"))):
        for name in names:
            ip.magics_manager.magics[kind].pop(name, None)
    ip.configurables[:] = [c for c in ip.configurables if c is not magic]
    magic.cells.stop()
    magic.close_dashboards()
    magic.sessions.close()

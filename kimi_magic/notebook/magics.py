"""``%%kimi``, ``%kimi`` and ``%%kimi_pin``: parse what the user typed, call the core, show it.

Configure with ``%config KimiMagic.model = "kimi-k3"`` (``%config KimiMagic`` lists every
setting; the API key is never shown). Defaults come from ``MOONSHOT_API_KEY``,
``MOONSHOT_BASE_URL`` and ``MOONSHOT_MODEL``.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display
from traitlets import observe

from ..core.errors import SessionError, StoreError
from ..core.redact import KEY_HIDDEN, redact
from ..core.session import Session
from ..core.sessions import Sessions
from ..core.settings import PRESETS, SETTINGS, SETTINGS_BY_NAME, Settings
from ..core.store import Store
from ..wire.errors import KimiError
from . import commands
from .commands import ask
from .commands import pins as pin_commands
from .config import SettingTraits

#: Errors that are the user's or the network's, not ours: shown as one line, no traceback.
USER_ERRORS = (KimiError, SessionError, StoreError)


@magics_class
class KimiMagic(Magics, SettingTraits):
    """Chat with Kimi from a notebook; the kernel keeps and manages the context.

    Its settings (``%config KimiMagic``) are generated from the core's declarations
    (``core/settings.py``, ``notebook/config.py``): each carries its help, its default and
    the validation plain ``Settings`` applies.
    """

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        #: What the current preset replaced, restored when the preset is set to None.
        self._before_preset: dict[str, Any] = {}
        super().__init__(shell=shell, **kwargs)
        self.sessions = Sessions(self._settings())
        self.sessions.on_open.append(self._wire_session)
        self._widget_shown = False
        #: One dashboard per session, shown again (a second view of the same widget) by
        #: every %kimi widget, so views never pile up observers.
        self._dashboards: dict[str, Any] = {}
        self.last_turn: Any = None
        from .agent import CellLog

        #: Every executed cell, for --agent's read_cells and the note of what ran.
        self.cells = CellLog(shell)

    # -- configuration ------------------------------------------------------------------
    @observe("preset")
    def _apply_preset(self, change: Any) -> None:
        # Only what still holds the old preset's value goes back: a setting the user changed
        # after applying the preset keeps the user's value.
        old = PRESETS.get(change["old"] or "", {})
        for name, value in self._before_preset.items():
            if getattr(self, name) == old.get(name):
                setattr(self, name, value)
        new = PRESETS.get(change["new"] or "", {})
        self._before_preset = {name: getattr(self, name) for name in new}
        for name, value in new.items():
            setattr(self, name, value)

    @observe(*[s.name for s in SETTINGS], "store_path")
    def _settings_changed(self, change: Any) -> None:
        if not hasattr(self, "sessions"):
            return
        if change["name"] == "store_path":
            self.sessions.use_store(Store(change["new"]) if change["new"] else Store())
            return
        spec = SETTINGS_BY_NAME[change["name"]]
        setattr(self.sessions.settings, spec.name, change["new"])
        if spec.reconnect:
            self.sessions.reconnect()
        if spec.name == "system":
            self._follow_default_system(change["old"], change["new"])

    def _follow_default_system(self, old: str, new: str) -> None:
        """Open sessions not started yet take the new default; started ones keep theirs.

        Without this, ``%kimi status`` before ``%config KimiMagic.system = ...`` would leave
        the first conversation on the old prompt. A session holding its own prompt (set with
        ``--system``) is never touched.
        """
        kept = []
        for session in self.sessions.open.values():
            context = session.context
            if (context.system.text if context.system else "") != old:
                continue
            if context.history or context.summary is not None:
                kept.append(session.name)
            else:
                session.set_system(new)
        if kept:
            print(f"KimiMagic.system is the prompt of sessions opened from now on; "
                  f"{', '.join(map(repr, kept))} already started and keep theirs "
                  "(%%kimi -s NAME --system TEXT changes one).")

    def _settings(self) -> Settings:
        return Settings(**{s.name: getattr(self, s.name) for s in SETTINGS})

    def _wire_session(self, session: Session) -> None:
        from .. import pins
        from . import progress

        session.refresh_pins = pins.refresher(lambda: self.shell.user_ns)
        session.progress = progress.bar

    @property
    def session(self) -> Session:
        return self.sessions.current

    def _open_store(self) -> None:
        if self.store_path and not self.sessions.has_store:
            self.sessions.use_store(Store(self.store_path))

    # -- the magics: parse with the commands' grammar, run under one error guard --------------
    @no_var_expand
    @cell_magic("kimi")
    def kimi_cell(self, line: str, cell: str) -> Any:
        return self.guard(ask.run, self, ask.CELL.parse(line), cell)

    @no_var_expand
    @line_magic("kimi")
    def kimi(self, line: str) -> Any:
        return self.guard(commands.dispatch, self, line)

    @no_var_expand
    @cell_magic
    def kimi_pin(self, line: str, cell: str) -> None:
        return self.guard(pin_commands.pin_cell, self, pin_commands.PIN_CELL.parse(line), cell)

    kimi_cell.__doc__ = ask.CELL.full_help()
    kimi.__doc__ = commands.line_help()
    kimi_pin.__doc__ = pin_commands.PIN_CELL.full_help()

    def guard(self, fn: Any, *args: Any) -> Any:
        """Run ``fn``; a user's or the network's error becomes one line, nothing changed."""
        self._open_store()
        try:
            return fn(*args)
        except USER_ERRORS as err:
            raise UsageError(self._redact(str(err))) from None
        except KeyboardInterrupt:
            raise UsageError("Interrupted: the reply was not recorded; the conversation is "
                             "as it was before this cell.") from None

    def _redact(self, text: str) -> str:
        return redact(text, [str(self.api_key or "")], mark=KEY_HIDDEN)

    # -- the dashboard ----------------------------------------------------------------------
    def show_widget(self, session: Session, *, auto: bool = False) -> None:
        """Show ``session``'s dashboard (one per session; a second view of the same widget).

        ``auto``: after a reply, only the first time and only with ``KimiMagic.auto_widget``.
        """
        from .widget import Dashboard

        if auto and (not self.auto_widget or self._widget_shown):
            return
        self._widget_shown = True
        board = self._dashboards.get(session.name)
        if board is None or board.is_closed:
            board = Dashboard(self.sessions, session.name, magic=self)
            self._dashboards[session.name] = board
        display(board)

    def close_dashboards(self) -> None:
        """Close every dashboard (on unload): their observers and front-end views go too."""
        for board in self._dashboards.values():
            board.close()
        self._dashboards.clear()

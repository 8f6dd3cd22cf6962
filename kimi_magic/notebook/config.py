"""The ``%config KimiMagic`` traits, generated from the core's setting declarations.

Each trait carries its declaration's help, default (from the environment where one is
named) and validation: a value ``Settings`` would refuse is refused by ``%config`` with the
same one line, and the old value stays. A few settings belong to the notebook only (which
store file, a preset, the dashboard); they are declared here in the same form.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, TraitError, TraitType, Unicode
from traitlets.config import Configurable

from ..core.errors import SettingError
from ..core.settings import PRESETS, SETTINGS, Setting

#: Settings of the notebook layer only: the magic holds them, ``Settings`` does not.
NOTEBOOK_SETTINGS: tuple[Setting, ...] = (
    Setting("preset", str, optional=True, choices=tuple(PRESETS), help=(
        "Apply a named group of settings at once: 'economy' (compact past 32K tokens, keep 2 "
        "rounds, 1-hour cache; about 80% cheaper on long sessions, every fact kept). None "
        "restores what the preset changed.")),
    Setting("store_path", str, optional=True, env="KIMI_MAGIC_STORE", help=(
        "SQLite store (default: $KIMI_MAGIC_STORE or the user data directory).")),
    Setting("auto_widget", bool, default=False, help=(
        "Show the dashboard after the first %%kimi cell.")),
    Setting("agent_approval", str, default="ask", choices=("ask", "yes", "never"), help=(
        "--agent: 'ask' before each run_python call, 'yes' to approve every call, 'never' "
        "to offer no code running at all.")),
    Setting("agent_timeout", float, default=60.0, more_than=0, help=(
        "--agent: seconds a run_python call may run before it is stopped.")),
    Setting("notebook_context", int, default=1000, at_least=0, help=(
        "Tokens of each %%kimi prompt's note of what ran in the notebook since the last "
        "turn (0: no note).")),
)


class HiddenStr(str):
    """A string whose repr never shows it: what ``%config KimiMagic`` prints for the key."""

    def __repr__(self) -> str:
        return "'<set, hidden>'" if self else "''"


class Secret(Unicode):
    """A string trait whose value always reprs as hidden, however it was set.

    Wrapping in ``validate`` (not a cross-validator, which traitlets defers while loading
    config) means no path — constructor, ``%config``, ``update_config`` — stores a bare str.
    """

    def validate(self, obj: Any, value: Any) -> HiddenStr:
        return HiddenStr(super().validate(obj, value) or "")


_BASES: dict[type, type[TraitType]] = {str: Unicode, int: Int, float: Float, bool: Bool,
                                       dict: Dict}
_CHECKED: dict[type[TraitType], type[TraitType]] = {}


def _checked(base: type[TraitType]) -> type[TraitType]:
    """``base`` validating through a declaration first (named like ``base`` for %config)."""
    if base not in _CHECKED:
        def validate(self: Any, obj: Any, value: Any) -> Any:
            try:
                value = self.setting.validate(value)
            except SettingError as err:
                raise TraitError(f"{type(obj).__name__}.{err}") from None
            return base.validate(self, obj, value)

        def default(self: Any, obj: Any = None) -> Any:
            # A bad environment variable must not stop the extension from loading.
            try:
                return self.setting.initial(os.environ)
            except SettingError as err:
                warnings.warn(f"kimi_magic: ignoring {err}", stacklevel=2)
                return self.setting.initial()

        _CHECKED[base] = type(base.__name__, (base,), {"validate": validate, "default": default,
                                                       "__module__": __name__})
    return _CHECKED[base]


def trait(spec: Setting) -> TraitType:
    """The configurable trait for one declared setting."""
    if spec.secret:
        base: type[TraitType] = Secret
    elif spec.choices:
        base = Enum
    else:
        base = _BASES[spec.kind]
    args = (list(spec.choices),) if base is Enum else ()
    made = _checked(base)(*args, default_value=spec.default, allow_none=spec.optional,
                          help=spec.help)
    made.setting = spec
    return made.tag(config=True)


def configurable(name: str, specs: tuple[Setting, ...] = SETTINGS + NOTEBOOK_SETTINGS) -> type:
    """A ``Configurable`` base class holding one trait per declared setting."""
    return type(name, (Configurable,), {s.name: trait(s) for s in specs})


#: The traits of ``KimiMagic``: every core setting plus the notebook's own.
SettingTraits = configurable("SettingTraits")

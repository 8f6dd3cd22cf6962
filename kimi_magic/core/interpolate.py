"""``{name}`` in a prompt becomes that variable's value — and nothing else changes.

Braces that do not name a defined variable (JSON, code, f-strings, ``{}``) stay exactly as
typed, so a prompt with code in it never fails to send.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}(?!\})")


def interpolate(text: str, namespace: Mapping[str, Any], keep: Collection[str] = ()) -> str:
    """Replace ``{name}`` / ``{name.attr}`` with values from ``namespace``; keep the rest.

    Names in ``keep`` stay as typed (``--map`` fills ``{item}`` later, per item).
    """

    def value(m: re.Match[str]) -> str:
        head, *attrs = m.group(1).split(".")
        if head not in namespace or head.startswith("_") or head in keep:
            return m.group(0)
        obj = namespace[head]
        for a in attrs:
            if a.startswith("_") or not hasattr(obj, a):
                return m.group(0)
            obj = getattr(obj, a)
        return str(obj)

    return _FIELD.sub(value, text)

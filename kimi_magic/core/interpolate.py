"""``{name}`` in a prompt becomes that variable's value — and nothing else changes.

Braces that do not name a defined variable (JSON, code, f-strings, ``{}``) stay exactly as
typed, so a prompt with code in it never fails to send.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

# No lookarounds: a pattern that starts with ``{`` lets re jump from brace to brace (a pasted
# 250 KB log without braces costs one ``str`` scan), where a leading look-behind made it try a
# match at every character. Doubled braces (``{{x}}``) are recognised in ``value`` instead.
_FIELD = re.compile(r"\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}")


def interpolate(text: str, namespace: Mapping[str, Any], keep: Collection[str] = ()) -> str:
    """Replace ``{name}`` / ``{name.attr}`` with values from ``namespace``; keep the rest.

    Names in ``keep`` stay as typed (``--map`` fills ``{item}`` later, per item); so do
    doubled braces (``{{name}}``).
    """
    if "{" not in text:
        return text

    def value(m: re.Match[str]) -> str:
        start, end = m.span()
        if text[start - 1: start] == "{" or text[end: end + 1] == "}":
            return m.group(0)
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

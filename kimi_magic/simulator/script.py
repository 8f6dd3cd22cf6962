"""Scripted tool calls: a test writes, in its prompt, exactly which calls the model makes.

A line of the last user message of the form::

    sim:call NAME {"json": "arguments"}

is one tool call. The lines are made in order, one per step: the first reply calls the first
line's tool, the reply after its result calls the second, and once every scripted call has a
result the answer quotes the results (``Tool results: NAME -> RESULT; ...``), as for tools
named in a prompt. The arguments are sent exactly as written (a line whose JSON does not parse
is sent verbatim, the way a model's malformed arguments arrive). Calls to tools the request
does not offer are left out: a model cannot call what it was not given. A prompt with script
lines calls nothing else, so a script is the whole plan of its turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^\s*sim:call\s+([A-Za-z_$][\w$-]*)\s*(.*?)\s*$", re.M)


@dataclass(frozen=True)
class ScriptedCall:
    """One ``sim:call`` line: the tool's name and its arguments as sent."""

    name: str
    arguments: str


def scripted_calls(text: str, offered: set[str] | None = None) -> list[ScriptedCall]:
    """The ``sim:call`` lines of ``text`` in order, only for tools in ``offered`` if given.

    >>> scripted_calls('sim:call run_python {"code": "1 + 1"}')
    [ScriptedCall(name='run_python', arguments='{"code": "1 + 1"}')]
    """
    calls = [ScriptedCall(m.group(1), m.group(2) or "{}") for m in _LINE.finditer(text)]
    return [c for c in calls if offered is None or c.name in offered]


def has_script(text: str) -> bool:
    return _LINE.search(text) is not None

"""What ran in the notebook since the last turn, as a short note inside the next user message.

The notebook layer records each plain code cell it runs as a ``CellRun`` (source, error,
variables created or changed); ``note`` turns the runs since a session's previous turn into
one ``<notebook>`` block within a token budget, most recent cells first to survive, and says
what it left out. ``with_note`` puts it in front of the prompt, inside the new user message:
never in the cached prefix, so prompt-cache hits are unchanged.

>>> note([CellRun(3, "x = 1", None, (Change("x", "int", ""),))], 500)[:10]
'<notebook>'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import tokens
from .text import clip, counted

#: A cell's source is cut to this many lines and characters before budgeting.
MAX_SOURCE_LINES = 40
MAX_SOURCE_CHARS = 2000
#: Variables listed at most (the most recently changed first).
MAX_VARIABLES = 30
OPEN, CLOSE = "<notebook>", "</notebook>"


@dataclass(frozen=True)
class Change:
    """A variable a cell created, rebound or deleted: its name, type and shape or length."""

    name: str
    kind: str
    shape: str = ""
    deleted: bool = False

    def describe(self) -> str:
        if self.deleted:
            return f"{self.name} (deleted)"
        return f"{self.name} ({self.kind}{', ' + self.shape if self.shape else ''})"


@dataclass(frozen=True)
class CellRun:
    """One executed code cell: its number (``In[n]``), source, error line and changes."""

    number: int
    source: str
    error: str | None = None
    changes: tuple[Change, ...] = ()
    output: str = ""


def note(runs: Sequence[CellRun], budget: int) -> str:
    """The ``<notebook>`` block for ``runs`` (oldest first) in ``budget`` tokens; "" if none.

    Sources go from the newest cell back while they fit; older cells are named with their
    error only, then counted; the variables' final state is listed last.
    """
    if budget <= 0 or not runs:
        return ""
    variables = _variables(runs)
    # The variables' state may take a third of the budget; the cells get the rest.
    tail = ([_fit(f"Variables created or changed: {', '.join(variables)}", budget // 3)]
            if variables else [])
    head = f"{OPEN}\nCells run since your last reply (oldest first):"
    used = tokens.count("\n".join([head, *tail, CLOSE])) + 8
    kept: list[str] = []
    left_out = 0
    for i in range(len(runs) - 1, -1, -1):
        run = runs[i]
        full = _cell_text(run, with_source=True)
        short = _cell_text(run, with_source=False)
        for text in (full, short):
            cost = tokens.count(text) + 1
            if used + cost <= budget:
                kept.append(text)
                used += cost
                break
        else:
            left_out = i + 1
            break
    if not kept and not tail:
        return ""
    kept.reverse()
    if left_out:
        kept.insert(0, f"({counted(left_out, 'earlier cell')} left out)")
    return "\n".join([head, *kept, *tail, CLOSE])


def _fit(text: str, budget: int) -> str:
    """``text`` cut (at a word, with "…") to at most ``budget`` tokens."""
    if tokens.count(text) <= budget:
        return text
    lo, hi = 0, len(text)
    while lo < hi - 1:
        mid = (lo + hi) // 2
        if tokens.count(text[:mid] + "…") <= budget:
            lo = mid
        else:
            hi = mid
    return text[:lo].rsplit(" ", 1)[0] + " …"


def with_note(prompt: str | list[dict[str, Any]], text: str) -> str | list[dict[str, Any]]:
    """``prompt`` with the note in front (a text part first for a multi-part prompt)."""
    if not text:
        return prompt
    if isinstance(prompt, str):
        return f"{text}\n\n{prompt}"
    return [{"type": "text", "text": text}, *prompt]


def _cell_text(run: CellRun, *, with_source: bool) -> str:
    lines = [f"[{run.number}]"]
    if with_source:
        lines.append(_bounded_source(run.source))
    else:
        lines[0] += f" {clip(run.source, 80)}"
    if run.output and with_source:
        lines.append("output: " + clip(run.output, 300))
    if run.error:
        lines.append(f"-> error: {clip(run.error, 300)}")
    return "\n".join(lines)


def _bounded_source(source: str) -> str:
    lines = source.strip("\n").splitlines()
    text = "\n".join(lines[:MAX_SOURCE_LINES])
    more = len(lines) - MAX_SOURCE_LINES
    if len(text) > MAX_SOURCE_CHARS:
        text = text[:MAX_SOURCE_CHARS] + "…"
    if more > 0:
        text += f"\n… ({more} more lines)"
    return text


def _variables(runs: Sequence[CellRun]) -> list[str]:
    final: dict[str, Change] = {}
    for run in runs:
        for change in run.changes:
            final.pop(change.name, None)
            final[change.name] = change
    latest = list(final.values())[::-1][:MAX_VARIABLES]
    names = [c.describe() for c in reversed(latest)]
    if len(final) > MAX_VARIABLES:
        names.append(f"… {len(final) - MAX_VARIABLES} more")
    return names

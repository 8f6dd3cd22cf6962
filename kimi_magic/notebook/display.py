"""What the user sees while a reply streams: one Markdown display updated in place.

Updates are throttled (a full re-render per token would cost a core at 100 tokens/s);
reasoning streams into a collapsed section above the answer; tool calls show as one line
each. After the reply, one compact status line.

JupyterLab typesets ``$…$`` in Markdown *and* HTML outputs as LaTeX (MathJax 3, with
``processEscapes``). Two rules keep dollar figures intact: everything we render ourselves
(status lines, tables, the dashboard) sits in an element with MathJax's ``mathjax_ignore``
class (``tex2jax_ignore`` for MathJax 2 front-ends), and in a reply's Markdown each currency
``$`` becomes ``<span class="mathjax_ignore">\\$</span>`` (a bare ``\\$`` is not enough: the
Markdown renderer unescapes it before MathJax runs), so real math such as ``$x^2$`` still
renders.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core.text import clip, counted
from ..core.turn import Turn
from ..wire.errors import KimiError
from ..wire.events import (
    ContentDelta,
    ReasoningDelta,
    Reset,
    StreamEvent,
    ToolCallStarted,
    ToolResult,
)

#: Seconds between re-renders while streaming.
THROTTLE = 0.15

#: The classes MathJax 3 (JupyterLab, Notebook 7) and MathJax 2 (classic Notebook) skip.
NO_MATH = "mathjax_ignore tex2jax_ignore"

#: A currency amount: ``$36,050``, ``$0.0044``, ``$1.2M``; not ``$x^2$``, ``$2^n$`` or ``$5$``.
_CURRENCY = re.compile(
    r"(?<![\w$\\])\\?\$(?=\d[\d,]*(?:\.\d+)?(?:[kKMB]|bn)?(?![\w^_{}\\$]))")
#: Code (fences, also one still streaming, and inline spans): its dollars are shown as typed.
_CODE = re.compile(r"(^[ \t]*(`{3,}|~{3,})[^\n]*\n[\s\S]*?(?:^[ \t]*\2[`~]*[ \t]*$|\Z)"
                   r"|(`+)[^`]*?\3(?!`))", re.MULTILINE)
#: The opening line of a pin's block, as the model sees it (see ``core.context.block``).
_PIN = re.compile(r'<pinned name="([^"]*)" kind="([^"]*)" source="[^"]*">')


def dollars(usd: float | None, digits: int = 4, unknown: str = "unknown") -> str:
    """A dollar figure as every view shows it: ``dollars(0.00437)`` is ``'$0.0044'``.

    Show it inside a ``NO_MATH`` element (``table_bundle`` and ``status_bundle`` do) or
    through ``currency_markdown`` so JupyterLab never typesets it.
    """
    return f"${usd:.{digits}f}" if usd is not None else unknown


def spent(total: float, priced: bool) -> str:
    """What was spent, as every view shows it: ``"unpriced"`` when nothing had a price (a
    model the price table lacks), never a misleading ``$0.0000``."""
    return dollars(total) if priced or total else "unpriced"


def currency_markdown(text: str) -> str:
    """Reply Markdown with currency dollars shielded from MathJax; math and code untouched.

    >>> currency_markdown("revenue was $36,050, and $x^2$ is math")
    'revenue was <span class="mathjax_ignore tex2jax_ignore">\\\\$</span>36,050, and $x^2$ is math'
    """
    out, last = [], 0
    for code in _CODE.finditer(text):
        out.append(_CURRENCY.sub(_shielded, text[last:code.start()]))
        out.append(code.group(0))
        last = code.end()
    out.append(_CURRENCY.sub(_shielded, text[last:]))
    return "".join(out)


def _shielded(_: re.Match[str]) -> str:
    # The backslash keeps JupyterLab's math finder from pairing this "$" with a later one.
    return f'<span class="{NO_MATH}">\\$</span>'


def _pre(text: str, css: str, style: str) -> str:
    """Text shown as typed. ``<pre>`` keeps Markdown off it up to ``</pre>`` (blank lines
    included); "$" as an entity keeps the Markdown renderer's math finder off it too."""
    body = html.escape(text).replace("$", "&#36;")
    return f'<pre class="{css} {NO_MATH}" style="{style}">{body}</pre>'


#: The reasoning reads as secondary prose: muted, proportional, wrapped between words.
REASONING_STYLE = ("font-family: var(--jp-content-font-family, sans-serif); font-size: 0.92em; "
                   "color: var(--jp-content-font-color2, #616161); white-space: pre-wrap; "
                   "word-break: normal; overflow-wrap: break-word; background: none; "
                   "border: none; padding: 0 0 0 0.8em; margin: 0.3em 0; "
                   "border-left: 2px solid var(--jp-border-color2, #e0e0e0)")
TEXT_STYLE = "white-space: pre-wrap; word-break: normal; overflow-wrap: break-word"


def fenced(text: str, lang: str) -> str:
    """``text`` in a Markdown code fence longer than any backtick run inside it."""
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text}\n{ticks}"


def code_markdown(text: str, lang: str = "python") -> str:
    """A code reply as one fenced block with a language tag (the reply's own, if it has one)."""
    stripped = text.strip()
    first, _, rest = stripped.partition("\n")
    if first.startswith("```"):
        tag = first.strip("`").strip()
        if tag:
            return stripped
        return f"```{lang}\n{rest}"
    return fenced(text, lang)


#: The mark under a reply that arrived only in part, or was interrupted: nothing was kept.
CUT_OFF = "*— cut off: not recorded*"
INTERRUPTED = "*— interrupted: not recorded*"


class StreamView:
    """Receives a turn's stream events and renders them with ``display`` handles.

    ``fmt`` is ``markdown``, ``code``, ``text`` or ``json``; ``prefix`` (partial mode) is
    shown before the reply, as history and ``--out`` hold it.
    """

    def __init__(self, fmt: str = "markdown", display: Callable[..., Any] | None = None,
                 throttle: float = THROTTLE, clock: Callable[[], float] = time.monotonic,
                 prefix: str = "") -> None:
        if display is None:
            from IPython.display import display as ipy_display

            display = ipy_display
        self._display = display
        self.fmt = fmt
        self.prefix = prefix
        self.throttle = throttle
        self.clock = clock
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tools: list[str] = []
        self.footer = ""
        self._handle: Any = None
        self._last = 0.0
        self._dirty = False

    def __call__(self, event: StreamEvent) -> None:
        if isinstance(event, ContentDelta):
            self.content.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, ToolCallStarted):
            self.tools.append(f"🔧 calling `{event.name}`")
        elif isinstance(event, ToolResult):
            self.tools.append(f"↳ `{event.name}` → {clip(event.result, 120)}")
        elif isinstance(event, Reset):
            # A retried tool step or a fresh attempt: start the answer text again.
            self.content.clear()
        self._dirty = True
        now = self.clock()
        if now - self._last >= self.throttle:
            self.render()
            self._last = now

    def bundle(self) -> dict[str, str]:
        answer = self.prefix + "".join(self.content)
        parts = []
        if self.reasoning:
            thought = "".join(self.reasoning)
            words = len(thought.split())
            parts.append(f"<details><summary>Reasoning ({words:,} words)</summary>\n\n"
                         f"{_pre(thought, 'kimi-reasoning', REASONING_STYLE)}\n\n</details>\n")
        if self.tools:
            parts.append(currency_markdown("\n\n".join(self.tools)) + "\n")
        if self.fmt == "code":
            parts.append(code_markdown(answer))
        elif self.fmt == "json":
            parts.append(fenced(answer, "json"))
        elif self.fmt == "text":
            parts.append(_pre(answer, "kimi-text", TEXT_STYLE))
        else:
            parts.append(currency_markdown(answer))
        if self.footer:
            parts.append(f"\n\n{self.footer}")
        return {"text/markdown": "\n".join(parts), "text/plain": answer + (
            f"\n[{self.footer.strip('*_ ')}]" if self.footer else "")}

    def render(self) -> None:
        data = self.bundle()
        if self._handle is None:
            self._handle = self._display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)
        self._dirty = False

    def detach(self) -> None:
        """Leave what is shown as it is; later deltas go to a new display below it (so
        something displayed in between, like code awaiting approval, reads in order)."""
        if self._dirty or (self._handle is None and (self.content or self.tools
                                                     or self.reasoning)):
            self.render()
        self._handle = None
        self.content, self.reasoning, self.tools = [], [], []
        self._dirty = False

    @contextmanager
    def unrecorded_on_failure(self) -> Iterator[StreamView]:
        """Around a call streaming into this view (a turn, a compress): when it fails or is
        interrupted, what was shown stays, marked as not recorded."""
        try:
            yield self
        except KimiError as err:
            if err.partial or self.content or self.reasoning or self.tools:
                self.close(CUT_OFF)
            raise
        except KeyboardInterrupt:
            self.close(INTERRUPTED)
            raise

    def close(self, footer: str = "") -> None:
        """Final render (always, so the last tokens are never left unshown)."""
        self.footer = footer
        if self._dirty or footer or self._handle is None:
            self.render()


def status_bundle(line: str, notices: list[str] | None = None) -> dict[str, str]:
    """The compact line under a reply (plus any notices, e.g. auto-compaction)."""
    notes = "".join(f"<div>ℹ️ {html.escape(n)}</div>" for n in notices or ())
    return {
        "text/html": f'<div class="kimi-status {NO_MATH}" style="font-size: 0.85em; '
                     f'opacity: 0.75">{notes}{html.escape(line)}</div>',
        "text/plain": "\n".join([*(notices or ()), line]),
    }


#: Table cells wrap between words; a word too long for any column (a path, a URL) may break
#: anywhere, so it never pushes the table out sideways.
_WRAP = "overflow-wrap:break-word;word-break:normal"
_BREAK = "overflow-wrap:anywhere;word-break:normal"
_LONG_WORD = re.compile(r"\S{21,}")

#: Tables wider than this many columns stack in a narrow output (a 420 px window, a side
#: panel): each row becomes one wrapped line of "label value" pairs. A container query does
#: it, so it follows the output's width, not the window's; where a front-end drops the
#: ``<style>`` (an untrusted notebook) the table is a plain table again.
STACK_ABOVE = 4
STACK_BELOW = "32em"
_STACK_CSS = (
    "<style>@container kimi-table (max-width: " + STACK_BELOW + ") {"
    " .kimi-stack thead { display: none; }"
    " .kimi-stack, .kimi-stack tbody, .kimi-stack caption { display: block; }"
    " .kimi-stack tr { display: flex; flex-wrap: wrap; gap: 0 0.9em; padding: 0.35em 0.5em; }"
    " .kimi-stack td { display: block; padding: 0 !important; text-align: left !important; }"
    " .kimi-stack td::before { content: attr(data-label); margin-right: 0.35em;"
    " color: var(--jp-ui-font-color2, #616161); }"
    " .kimi-stack td[data-label='']::before { margin: 0; }"
    "}</style>")

#: A cell that reads as a number (counts, tokens, money, percentages): right-aligned.
_NUMBER = re.compile(r"[~≈]?-?\$?[\d,]+(?:\.\d+)?\s*%?")


def _is_number(cell: Any) -> bool:
    if isinstance(cell, bool):
        return False
    return isinstance(cell, int | float) or bool(_NUMBER.fullmatch(str(cell).strip()))


def table_bundle(headers: list[str], rows: list[list[Any]], title: str = "") -> dict[str, str]:
    """A small table as HTML (notebook) and aligned text (terminal, logs).

    Text columns are left-aligned (JupyterLab right-aligns table cells by default); a
    column whose every cell is a number stays right-aligned and whole. Cells wrap between
    words and break a long path or URL anywhere, so in a narrow column the table shrinks
    instead of overflowing; one of more than ``STACK_ABOVE`` columns stacks its rows there.
    """
    numeric = [bool(rows) and all(_is_number(r[i]) for r in rows if str(r[i]) != "")
               for i in range(len(headers))]
    stack = len(headers) > STACK_ABOVE

    def cell(tag: str, i: int, value: Any) -> str:
        text = str(value)
        wrap = ("white-space:nowrap" if numeric[i] and tag == "td"
                else _BREAK if _LONG_WORD.search(text) else _WRAP)
        label = (f' data-label="{html.escape(str(headers[i]), quote=True)}"'
                 if stack and tag == "td" else "")
        return (f'<{tag}{label} style="text-align:{"right" if numeric[i] else "left"};'
                f'{wrap}">{html.escape(text)}</{tag}>')

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    caption = (f'<caption style="text-align:left;{_BREAK}">{html.escape(title)}</caption>'
               if title else "")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    table = (f'<table class="kimi-table{" kimi-stack" * stack} {NO_MATH}" '
             f'style="max-width:100%">{caption}<thead><tr>{head}</tr></thead>'
             f"<tbody>{body}</tbody></table>")
    if stack:
        table = (f'{_STACK_CSS}<div style="container: kimi-table / inline-size; '
                 f'max-width:100%">{table}</div>')
    return {"text/html": table, "text/plain": "\n".join(lines)}


def message_summary(text: str, limit: int = 100) -> str:
    """One history row's text: a pin as ``📌 df (dataframe)``, anything else clipped."""
    pins = [f"📌 {html.unescape(name)} ({html.unescape(kind)})"
            for name, kind in _PIN.findall(text)]
    if pins:
        return ", ".join(pins)
    return clip(text, limit)


def history_bundle(name: str, messages: Iterable[Any],
                   sizes: Iterable[int] | None = None) -> dict[str, str]:
    """``%kimi history``: one row per message, pins by name, reasoning and tool calls noted.

    ``sizes`` are the messages' tokens as the session counts them (``history_tokens``);
    without them, the local estimates."""
    rows = []
    messages = list(messages)
    counts = list(sizes) if sizes is not None else [m.tokens for m in messages]
    for i, (m, n) in enumerate(zip(messages, counts, strict=True)):
        text = message_summary(m.text)
        if text.startswith("📌 ") and text.count("📌") == 1:
            text = text[:-1] + f", ~{n:,} tokens)"
        extra = " [reasoning]" if m.reasoning else ""
        extra += f" [{len(m.tool_calls)} tool calls]" if m.tool_calls else ""
        rows.append([i, m.role, text + extra, f"~{n:,}"])
    return table_bundle(["#", "role", "content", "tokens"], rows, f"History of {name}")


def status_line(turn: Turn) -> str:
    """The compact status line shown under a reply: model, tokens, cost, context fill, time.

    Estimated figures (the server sent no usage) are marked with ``~``.
    """
    u = turn.usage
    mark = "" if u.exact else "~"
    cached = f" ({mark}{u.cached_tokens:,} cached)" if u.cached_tokens else ""
    cost = f"${turn.cost:.4f}" if turn.cost is not None else "unpriced"
    kind = "exact" if u.exact else "estimated"
    return (f"{turn.model} · in {mark}{u.prompt_tokens:,}{cached} / out "
            f"{mark}{u.completion_tokens:,} tokens · {mark}{cost} · context "
            f"{turn.fill:.{1 if turn.fill < 0.1 else 0}%} of {turn.window:,} · {kind} · "
            f"{turn.seconds:.1f}s")


def snapshot_line(session: Any, snap: Any, *, rolled_back: bool = False) -> str:
    """"Snapshot #3 'label': 4 rounds, 2,296 tokens." (or "Rolled back to ..."): one sentence
    for the magic and the dashboard, its size marked ``~`` unless the server counted it."""
    label = "" if unlabelled_snapshot(snap.label) else f" {snap.label!r}"
    here = session.here()
    exact = here is not None and here.id == snap.id and session.accounting.is_exact(
        session.context)
    return (f"{'Rolled back to snapshot' if rolled_back else 'Snapshot'} #{snap.id}{label}: "
            f"{counted(snap.rounds, 'round')}, {'' if exact else '~'}"
            f"{session.snapshot_tokens(snap):,} tokens.")


def unlabelled_snapshot(label: str) -> bool:
    """The core names unlabelled snapshots "#N": nothing worth showing twice."""
    return label.startswith("#") and label[1:].isdigit()

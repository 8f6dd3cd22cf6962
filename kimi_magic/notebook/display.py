"""What the user sees while a reply streams: one Markdown display updated in place.

Updates are throttled (a full re-render per token would cost a core at 100 tokens/s);
reasoning streams into a collapsed section above the answer; tool calls show as one line
each. After the reply, one compact status line.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from typing import Any

from ..core.turn import Turn

#: Seconds between re-renders while streaming.
THROTTLE = 0.15


class StreamView:
    """Receives ``(kind, text)`` deltas and renders them with ``display`` handles."""

    def __init__(self, fmt: str = "markdown", display: Callable[..., Any] | None = None,
                 throttle: float = THROTTLE, clock: Callable[[], float] = time.monotonic) -> None:
        if display is None:
            from IPython.display import display as ipy_display

            display = ipy_display
        self._display = display
        self.fmt = fmt
        self.throttle = throttle
        self.clock = clock
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tools: list[str] = []
        self.footer = ""
        self._handle: Any = None
        self._last = 0.0
        self._dirty = False

    def __call__(self, kind: str, text: str) -> None:
        if kind == "content":
            self.content.append(text)
        elif kind == "reasoning":
            self.reasoning.append(text)
        elif kind == "tool_call":
            self.tools.append(f"🔧 calling `{text}`")
        elif kind == "tool_result":
            data = json.loads(text)
            self.tools.append(f"↳ `{data['name']}` → {_clip(data['result'], 120)}")
        elif kind == "reset":
            # A retried tool step or a fresh attempt: start the answer text again.
            self.content.clear()
        self._dirty = True
        now = self.clock()
        if now - self._last >= self.throttle:
            self.render()
            self._last = now

    def bundle(self) -> dict[str, str]:
        answer = "".join(self.content)
        parts = []
        if self.reasoning:
            thought = html.escape("".join(self.reasoning))
            words = len(thought.split())
            parts.append(f"<details><summary>Reasoning ({words:,} words)</summary>\n\n"
                         f"<pre style=\"white-space: pre-wrap\">{thought}</pre>\n\n</details>\n")
        if self.tools:
            parts.append("\n\n".join(self.tools) + "\n")
        if self.fmt == "code":
            parts.append(f"```\n{answer}\n```")
        elif self.fmt == "text":
            parts.append(f"<pre style=\"white-space: pre-wrap\">{html.escape(answer)}</pre>")
        else:
            parts.append(answer)
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

    def close(self, footer: str = "") -> None:
        """Final render (always, so the last tokens are never left unshown)."""
        self.footer = footer
        if self._dirty or footer or self._handle is None:
            self.render()


def status_bundle(line: str, notices: list[str] | None = None) -> dict[str, str]:
    """The compact line under a reply (plus any notices, e.g. auto-compaction)."""
    notes = "".join(f"<div>ℹ️ {html.escape(n)}</div>" for n in notices or ())
    return {
        "text/html": f'<div class="kimi-status" style="font-size: 0.85em; opacity: 0.75">'
                     f"{notes}{html.escape(line)}</div>",
        "text/plain": "\n".join([*(notices or ()), line]),
    }


def table_bundle(headers: list[str], rows: list[list[Any]], title: str = "") -> dict[str, str]:
    """A small table as HTML (notebook) and aligned text (terminal, logs)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return {"text/html": f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}"
                         f"</tbody></table>", "text/plain": "\n".join(lines)}


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


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

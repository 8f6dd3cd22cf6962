"""Context editing without a model call: large pasted blocks and tool results become stubs.

In rounds old enough to compact, a tool result or a pasted block (a log, a data dump, a code
listing) of at least ``mask_tokens`` tokens is replaced in place by a one-line stub naming
what was there, its size and how to get it back; the full text goes to the archive that
``recall`` searches. The prose around a paste stays (that is where a user states decisions,
names and figures), and a tool message keeps its ``tool_call_id`` and ``name``, so the
assistant's tool calls stay paired with their results on the wire.

>>> log = "\\n".join(f"2026-11-01 09:00:{i:02d} INFO step {i} ok" for i in range(60))
>>> text = f"Why is the job slow? Here is the log:\\n\\n{log}"
>>> [(kind, text[a:b][:10]) for a, b, kind in pasted_blocks(text)]
[('log', '2026-11-01')]
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from . import hints, tokens
from .context import Message

#: The start of every stub: what ``is_stub`` (and a reader) recognises.
STUB_START = "[masked by kimi_magic:"
_MASK_ID = re.compile(r"\bmask-[0-9a-f]{10}\b")

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE = re.compile(r"[{}=;<>]|^\s*(?:def|class|import|from|return|for|if|elif|else|try|except|"
                   r"with|while|SELECT|\$|>>>|#|//|@)\b|^\s{4,}\S|^\s*[\]\)]")
_LOG = re.compile(r"^\s*\[?\d{4}-\d{2}-\d{2}[ T]\d|\b(?:DEBUG|INFO|WARN|WARNING|ERROR|CRITICAL|"
                  r"TRACE|FATAL)\b|^\s*Traceback \(most recent|^\s*File \"")
_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class Masked:
    """One block that left the context: where it was, what it was, its stub and its text."""

    mask_id: str
    round: int
    role: str
    what: str
    tokens: int
    lines: int
    text: str
    stub: str

    def archive_message(self) -> Message:
        """What the archive keeps: a header ``recall`` can find by the id, then the text."""
        return Message.of(self.role, f"Masked as {self.mask_id} (round {self.round}, "
                                     f"{self.what}, {self.tokens:,} tokens):\n{self.text}")


def names(query: str, hit_text: str) -> bool:
    """Whether ``query`` names the masked block that archive text ``hit_text`` holds."""
    return any(hit_text.startswith(f"{role}: Masked as {ident} ")
               for ident in _MASK_ID.findall(query) for role in ("user", "tool"))


def is_stub(text: str) -> bool:
    return text.lstrip().startswith(STUB_START)


def _prose(line: str) -> bool:
    """A sentence a person wrote: words, not code or log syntax."""
    words = _WORD.findall(line)
    return (len(words) >= 4 and sum(map(len, words)) >= 0.5 * len(line.strip())
            and not _CODE.search(line) and not _LOG.search(line))


def _repetitive(lines: list[str]) -> bool:
    """Many lines, most starting with the same word: a log or listing, however wordy
    ("log line 7: request req-00007 took 49 ms"); typed prose varies its first words."""
    if len(lines) < 8:
        return False
    firsts = [ln.split(maxsplit=1)[0] for ln in lines]
    return max(firsts.count(w) for w in set(firsts)) * 2 >= len(lines)


def kind_of(text: str) -> str:
    """What a block looks like: a log, code, data (tables, numbers) or text."""
    lines = [ln for ln in text.splitlines() if ln.strip()] or [text]
    log = sum(bool(_LOG.search(ln)) for ln in lines)
    code = sum(bool(_CODE.search(ln)) for ln in lines)
    digits = sum(map(str.isdigit, text))  # map: a genexpr per character was most of a mask
    letters = sum(map(str.isalpha, text))
    if log >= 0.3 * len(lines):
        return "log"
    if code >= 0.3 * len(lines):
        return "code"
    if digits >= letters:
        return "data"
    return "text"


def pasted_blocks(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` character spans of the pasted (non-prose) blocks of ``text``."""
    return [(a, b, kind_of(text[a:b])) for a, b in _pasted_spans(text)]


def _pasted_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the pasted (non-prose) blocks of ``text``.

    Paragraphs (split at blank lines) whose lines are mostly not prose are pasted material;
    neighbouring ones merge into one block (a listing has blank lines between functions), and
    a fenced block is one block whatever it holds, apart from the lines around it.
    """
    spans: list[tuple[int, int, bool, bool]] = []  # (start, end, pasted, fenced) per paragraph
    pos, fence, para_start, para_lines = 0, False, None, []

    def close(end: int) -> None:
        nonlocal para_start, para_lines
        if para_start is not None:
            body = [ln for ln in para_lines if ln.strip()]
            fenced = any(_FENCE.match(ln) for ln in para_lines)
            pasted = (fenced or sum(not _prose(ln) for ln in body) * 2 > len(body)
                      or _repetitive(body))
            spans.append((para_start, end, pasted, fenced))
        para_start, para_lines = None, []

    for line in text.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        if _FENCE.match(line):
            # A fence is a paragraph of its own: the sentence typed right above it ("Here
            # is the log:") is prose, not part of the paste, and so is the text after it.
            if not fence:
                close(start)
                para_start = start
            para_lines.append(line)
            fence = not fence
            if not fence:
                close(pos)
            continue
        if not line.strip() and not fence:
            close(start)
            continue
        if para_start is None:
            para_start = start
        para_lines.append(line)
    close(pos)
    blocks: list[tuple[int, int, bool]] = []  # (start, end, fenced)
    for start, end, pasted, fenced in spans:
        if not pasted:
            continue
        if (blocks and not fenced and not blocks[-1][2]
                and not text[blocks[-1][1]:start].strip()):
            blocks[-1] = (blocks[-1][0], end, False)
        else:
            blocks.append((start, end, fenced))
    return [(a, b) for a, b, _ in blocks]


def mask_id(text: str) -> str:
    """A short, stable name for a masked text (the same text always gets the same id)."""
    return "mask-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def stub(what: str, n_tokens: int, n_lines: int, first_line: str, ident: str) -> str:
    """The one line that stands in for a masked block."""
    first = first_line.strip()
    first = first if len(first) <= 60 else first[:57] + "..."
    lines = f", {n_lines:,} lines" if n_lines > 1 else ""
    return (f"{STUB_START} {what} ({n_tokens:,} tokens{lines}, starting {first!r}) moved to "
            f"the archive as {ident}; {hints.command('recall', ident)} or the recall_archive tool "
            "returns it in full]")


def mask_message(m: Message, round_no: int, min_tokens: int,
                 factor: float = 1.0) -> tuple[Message, list[Masked]]:
    """``m`` with its large tool result or pasted blocks stubbed, and what was masked.

    Only user messages (pastes) and tool results are edited: assistant messages go back to
    the API unchanged, reasoning and tool calls included. ``factor`` (server tokens per local
    token, the history's calibration) puts sizes in the units every other view shows.
    """
    if not isinstance(m.content, str) or m.role not in ("user", "tool"):
        return m, []
    text = m.content
    if m.role == "tool":
        name = m.data.get("name") or "a tool"
        n = None if name.startswith("$") or is_stub(text) else _large(text, min_tokens, factor)
        if n is None:
            # A builtin's message ($web_search) echoes its arguments for the server to use.
            return m, []
        found = _masked(text, n, round_no, m.role, f"the result of {name}")
        return Message({**m.data, "content": found.stub}, m.meta), [found]
    out, done, last = [], [], 0
    for start, end in _pasted_spans(text):
        block = text[start:end].strip("\n")
        n = None if is_stub(block) else _large(block, min_tokens, factor)
        if n is None:
            continue
        found = _masked(block, n, round_no, m.role, f"a pasted {kind_of(block)}")
        out.append(text[last:start])
        out.append(found.stub + ("\n" if text[start:end].endswith("\n") else ""))
        last = end
        done.append(found)
    if not done:
        return m, []
    out.append(text[last:])
    return Message({**m.data, "content": "".join(out)}, m.meta), done


def _large(text: str, min_tokens: int, factor: float = 1.0) -> int | None:
    """The tokens of ``text`` (local count times ``factor``) when at least ``min_tokens``,
    else None; what is plainly short is not tokenised (a local token is at least one UTF-8
    byte), and a large text is tokenised once, for the decision and its stub."""
    if len(text.encode("utf-8", "surrogatepass")) * max(factor, 1.0) < min_tokens:
        return None
    n = int(tokens.count(text) * factor)
    return n if n >= min_tokens else None


def _masked(text: str, n: int, round_no: int, role: str, what: str) -> Masked:
    ident = mask_id(text)
    lines = text.count("\n") + 1
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return Masked(ident, round_no, role, what, n, lines, text, stub(what, n, lines, first, ident))

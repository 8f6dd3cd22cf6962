"""Compression that keeps every fact: a structured summary, then a check against the source.

Models drop and alter numbers when they summarise. After the model writes its summary we
extract the facts of the compressed rounds — numbers, identifiers, paths, URLs, error lines —
and every one that the summary lacks (missing, or altered into another value) is restored
verbatim, in the sentence it came from, under "Kept verbatim", within a token budget.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import tokens
from .context import Message
from .text import counted

SECTIONS = ("Current goal", "Facts and figures", "Decisions", "Errors and fixes",
            "Code state", "Open items")

_SECTIONS_TEXT = ", ".join(f"'## {s}'" for s in SECTIONS)
_FAITHFUL = ("Copy every number, identifier, file path, URL and error message exactly as "
             "written. Write only the summary.")

SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below so that it can replace it in the context of a long "
    "task. Aim for at most {target:,} tokens. Use these Markdown sections: "
    + _SECTIONS_TEXT + ". " + _FAITHFUL
)

IN_CONTEXT_INSTRUCTIONS = (
    "Summarise the conversation above{scope}, including any earlier summary in it, so that "
    "your summary can replace it in the context of this long task. The system prompt and the "
    "pinned blocks stay as they are: leave them out. Aim for at most {target:,} tokens. Use "
    "these Markdown sections: " + _SECTIONS_TEXT + ". " + _FAITHFUL
)

#: Output tokens a model that always thinks needs for its reasoning before the summary.
REASONING_ROOM = 16_384

SUMMARY_HEADER = "[Summary of earlier conversation, compressed by kimi_magic]"
VERBATIM_HEADER = "## Kept verbatim (restored by the fact check)"
ALTERED_LINE = "- Not in the original (the summary may have altered them): "

# What counts as a fact, tuned on notebook text (prose, pasted code, logs, tracebacks,
# dataframe output): too greedy and the verbatim section swallows the summary's savings,
# too shy and a figure is lost. Role labels, log levels and bare acronyms (USER, INFO, GPU)
# are not facts; codes with digits (E501, RUN-1000) and constants (MAX_RETRIES) are.
_FACT = re.compile(
    r"https?://[^\s)>\]\"'`]+"                                   # URLs
    r"|\d{4}-\d{2}-\d{2}"                                       # dates (not the time of day)
    r"|(?<![\w.])(?:~|\.{1,2})?/[\w.\-/]*[A-Za-z][\w.\-/]*"      # absolute / relative paths
    r"|\b[\w\-]+(?:/[\w.\-]+)+\.\w+"                            # dir/file.ext
    r"|\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b"                     # dotted names (pd.read_csv)
    r"|\b[a-z]+_\w+\b|\b[a-z]+[A-Z]\w*\b|\b[A-Z][a-z]{2,}[A-Z]\w*\b"  # snake, camel, Pascal
    r"|\b[A-Z]+_[A-Z0-9_]+\b"                                   # CONSTANTS
    r"|\b[A-Z][A-Z0-9]*\d[A-Z0-9]*\b|\b[A-Z][A-Za-z]*-\d+(?:\.\d+)*\b"  # E501, RUN-1000, OVN-2.4.1
    r"|(?<![\w.\-/])[-+]?\$?\d[\d,]*(?:\.\d+)*(?:[eE][-+]?\d+)?%?(?!\w)"  # numbers, 2.4.1
)
_TIME_OF_DAY = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?\b")
_NOT_FACTS = {"e.g", "i.e", "etc", "vs"}
_ERROR_LINE = re.compile(
    r"^.*(?:\b\w*(?:Error|Exception)\b|\bFAILED\b|\bfailed\b|\b[Ee]rror:).*$", re.M)
#: Every line ``_ERROR_LINE`` matches holds one of these.
_ERROR_WORD = re.compile(r"Error|Exception|FAILED|failed|rror:")
#: A run of non-space characters holding one that every ``_FACT`` match needs: a digit, a
#: capital, "/", "." or "_" (possessive, so a run without one is rejected in one pass).
_MAY_HOLD_FACT = re.compile(r"(?<!\S)[^\s\dA-Z/._]*+[\dA-Z/._]\S*+")
#: A sentence ends at . ! ? followed by a space, or at a line end ("0.5" and "a/b.py" don't).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class CheckResult:
    facts: int = 0
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    #: Fact-in-text tests the check made (near-linear in the source, never facts × sentences).
    comparisons: int = 0

    @property
    def retained(self) -> float:
        """Share of source facts present in the final summary."""
        if not self.facts:
            return 1.0
        return 1 - len(self.dropped) / self.facts


def facts(text: str) -> list[str]:
    """Facts worth keeping exactly, in order of first appearance, without duplicates.

    >>> facts("loss was 0.023 at /data/run0/log.txt on 2024-05-01 (RUN-1000)")
    ['0.023', '/data/run0/log.txt', '2024-05-01', 'RUN-1000']
    """
    found: dict[str, None] = {}
    for line in _error_lines(text):
        line = line.strip()
        if line and not line.startswith("Traceback (most recent call last)"):
            found.setdefault(line[:240], None)
    # No fact holds whitespace, and a run's whitespace edges look to ``_FACT`` like the ends
    # of the text: so the runs that can hold one, joined by spaces, give the same matches
    # as the whole text, at a fraction of its length (prose words are most of a transcript).
    runs = " ".join(_MAY_HOLD_FACT.findall(_TIME_OF_DAY.sub(_blank, text)))
    for m in _FACT.finditer(runs):
        value = m.group(0).rstrip(".,;:")
        if value not in found and _worth_keeping(value):
            found.setdefault(value, None)
    return list(found)


def _error_lines(text: str) -> list[str]:
    """``_ERROR_LINE.findall(text)``, testing only the lines holding one of its keywords."""
    lines: dict[int, str] = {}
    for m in _ERROR_WORD.finditer(text):
        start = text.rfind("\n", 0, m.start()) + 1
        if start not in lines:
            end = text.find("\n", m.end())
            line = text[start: end if end >= 0 else len(text)]
            lines[start] = line if _ERROR_LINE.match(line) else ""
    return [line for line in lines.values() if line]


def _blank(m: re.Match[str]) -> str:
    # Same length, so positions and neighbouring tokens stay as they were.
    return " " * len(m.group(0))


def _worth_keeping(value: str) -> bool:
    if value.lower() in _NOT_FACTS or len(value) < 2:
        return False
    bare = value.lstrip("+-$").rstrip("%").replace(",", "")
    if bare.isdigit() and len(bare) < 2:
        return False  # lone digits ("1", "3") are list markers more often than facts
    return True


def present(fact: str, text: str) -> bool:
    """Whether ``fact`` occurs in ``text`` as a whole token ("0.5" is not in "0.55").

    Exactly ``_token_pattern(fact).search(text)``, without compiling a pattern per fact (a
    check tests thousands of distinct facts once each: compiling them was most of its time).
    """
    guard_before, guard_after = fact[:1].isalnum(), fact[-1:].isalnum()
    before = ".-/" if fact[:1].isdigit() else "."
    n, end = len(fact), len(text)
    i = text.find(fact)
    while i >= 0:
        c = text[i - 1] if guard_before and i else ""
        if not (c and (c.isalnum() or c == "_" or c in before)):
            j = i + n
            c = text[j] if guard_after and j < end else ""
            if not c or not (c.isalnum() or c == "_"
                             or (c == "." and j + 1 < end and text[j + 1].isdecimal())):
                return True
        i = text.find(fact, i + 1)
    return False


@functools.lru_cache(maxsize=1024)
def _token_pattern(fact: str) -> re.Pattern[str]:
    # The same test as ``present``, as a pattern, for substituting a fact's occurrences.
    before = r"(?<![\w.\-/])" if fact[:1].isdigit() else r"(?<![\w.])"
    return re.compile((before if fact[:1].isalnum() else "") + re.escape(fact) + (
        r"(?![\w]|\.\d)" if fact[-1:].isalnum() else ""))


def transcript(messages: Iterable[Message]) -> str:
    """The text the summariser reads: roles, reasoning left out, tool results included."""
    parts = []
    for m in messages:
        text = m.text
        if m.tool_calls:
            calls = ", ".join(f"{c['function']['name']}({c['function']['arguments']})"
                              for c in m.tool_calls)
            text = f"{text}\n[called {calls}]".strip()
        if text:
            parts.append(f"{m.role.upper()}: {text}")
    return "\n\n".join(parts)


def target_tokens(source_tokens: int, limit: int) -> int:
    """How long the summary should be: about 4:1, never more than ``limit`` tokens."""
    return max(256, min(source_tokens // 4, limit))


def output_cap(target: int, thinks: bool) -> int:
    """Output cap for a summary of ``target`` tokens, plus reasoning for thinking models.

    Without a cap a weak model can write until the window is full (minutes on a CPU server).
    """
    return int(target * 1.5) + 256 + (REASONING_ROOM if thinks else 0)


def source(previous_summary: Message | None, messages: list[Message]) -> str:
    """The text a summary replaces, as the fact check reads it (earlier summary first)."""
    text = transcript(messages)
    if previous_summary is not None:
        text = f"EARLIER SUMMARY:\n{earlier(previous_summary.text)}\n\n{text}"
    return text


def in_context(context: list[dict], keep_rounds: int, target: int) -> list[dict]:
    """The summary request as the conversation itself plus one instruction.

    The conversation is byte-identical to the prefix the last turn sent, so Kimi's prompt
    cache serves it at the cache-hit price: compressing a long context reads it for about a
    sixth of what a fresh transcript would cost.
    """
    scope = ""
    if keep_rounds:
        # A count, not a quote: notebook prompts often start alike, a count cannot be misread.
        scope = (f" except my last {counted(keep_rounds, 'message')} and "
                 "your replies to them (they stay in the context verbatim)")
    instruction = IN_CONTEXT_INSTRUCTIONS.format(scope=scope, target=target)
    return [*context, {"role": "user", "content": instruction}]


def standalone(text: str, target: int) -> list[dict]:
    """The summary request as a transcript, for when the whole context would not fit."""
    return [{"role": "system", "content": SUMMARY_INSTRUCTIONS.format(target=target)},
            {"role": "user", "content": f"Please summarise this conversation:\n\n{text}"}]


def earlier(summary: str) -> str:
    """A previous summary as material for the next one: its verbatim section kept, the values
    its check flagged as altered blanked out (so they are neither repeated nor "restored")."""
    text = summary.replace(SUMMARY_HEADER, "").strip()
    kept, altered = [], []
    for line in text.splitlines():
        if line.startswith(ALTERED_LINE):
            altered += re.findall(r"`([^`]+)`", line)
        else:
            kept.append(line)
    text = "\n".join(kept)
    if VERBATIM_HEADER in text:
        # Verified lines first, so the check restores a fact from them, not from the prose.
        body, verbatim = text.split(VERBATIM_HEADER, 1)
        text = f"{VERBATIM_HEADER}{verbatim}\n\n{body.strip()}"
    for value in sorted(altered, key=len, reverse=True):
        text = _token_pattern(value).sub("(?)", text)
    return text


def check(source: str, summary: str, budget: int) -> tuple[str, CheckResult]:
    """Restore every fact of ``source`` that ``summary`` lacks, within ``budget`` tokens."""
    wanted = facts(source)
    result = CheckResult(facts=len(wanted))
    in_summary = _Tokens([summary])
    result.missing = [f for f in wanted if in_summary.first(f) is None]
    source_facts = set(wanted)
    # Values in the summary that the source never had: a model's typo of a real figure.
    result.altered = [f for f in facts(summary) if f not in source_facts and f not in source]
    if not result.missing and not result.altered:
        return summary, result
    # Rank before spending the budget: what the user said in prose first, then error lines,
    # then other prose, then values inside pasted code and logs (a log holds hundreds of
    # numbers; the one figure a user stated is the one they will ask about).
    sentences = _sentences(source)
    index_of = _Tokens([s for _, s in sentences], {_key(f) for f in result.missing} - {None})
    candidates = []
    for order, fact in enumerate(result.missing):
        i = index_of.first(fact)
        index, line = (i, sentences[i][1]) if i is not None else (len(sentences) + order, fact)
        role = sentences[index][0] if index < len(sentences) else ""
        candidates.append((_tier(fact, line, role), index, fact, line))
    candidates.sort(key=lambda c: (c[0], c[1]))
    chosen: dict[tuple[int, str], None] = {}  # (where it was said, the line restored)
    spent = tokens.count(VERBATIM_HEADER)
    covered: set[str] = set()
    by_key = _Facts(result.missing)
    # Several missing facts often share a sentence that did not fit: count it once.
    count = functools.lru_cache(maxsize=None)(tokens.count)
    for _, index, fact, line in candidates:
        if fact in covered:
            continue
        if len(line) > 400:
            i = line.index(fact)
            line = "..." + line[max(0, i - 150): i + len(fact) + 150] + "..."
        if (index, line) in chosen:
            cost = 0
        elif budget - spent < 3:
            # Nothing costs less than 3 tokens (a value and its bullet): no need to count.
            result.dropped.append(fact)
            continue
        else:
            cost = count(line) + 2
        if spent + cost > budget:
            # Past the budget, keep the bare value rather than nothing.
            line, cost, index = fact, count(fact) + 2, len(sentences) + len(chosen)
            if spent + cost > budget:
                result.dropped.append(fact)
                continue
        spent += cost
        chosen[(index, line)] = None
        now_covered = [f for f in by_key.facts_in(line)
                       if f not in covered and f in line and present(f, line)]
        covered.update(now_covered)
        result.restored.extend(now_covered)
    # Read back in the order they were said (bare values last).
    lines = [f"- {line}" for _, line in sorted(chosen, key=lambda k: k[0])]
    if result.altered:
        lines.append(ALTERED_LINE + ", ".join(f"`{v}`" for v in result.altered[:40]))
    result.comparisons = index_of.comparisons + by_key.comparisons + in_summary.comparisons
    fixed = summary.rstrip() + "\n\n" + VERBATIM_HEADER + "\n" + "\n".join(lines)
    return fixed, result


_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=16_384)  # a check asks twice per missing fact
def _key(fact: str) -> str | None:
    """A word of ``fact`` that is a whole word of any text the fact is ``present`` in.

    ``present`` wants an alphanumeric edge of the fact not to touch a word character, and
    inside the fact a run of word characters ends where a non-word character does; so the
    longest such run (the rarest, usually) is a word of the text too. None when no run is
    bounded on both sides (a fact like ``_x_``): those are searched the slow way.
    """
    best = None
    for m in _WORD.finditer(fact):
        start_ok = m.start() > 0 or fact[:1].isalnum()
        end_ok = m.end() < len(fact) or fact[-1:].isalnum()
        if start_ok and end_ok and (best is None or len(m.group()) > len(best)):
            best = m.group()
    return best


class _Tokens:
    """Texts indexed by their words, so a fact is tested only against texts holding its key.

    ``first`` gives exactly what scanning every text in order for ``present`` would give.
    """

    def __init__(self, texts: list[str], keys: set[str] | None = None) -> None:
        """``keys``: the only words that will be looked up (None: any), the rest not indexed."""
        self.texts = texts
        self.comparisons = 0
        self.where: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            words = set(_WORD.findall(text))
            for word in words if keys is None else words & keys:
                self.where.setdefault(word, []).append(i)

    def _candidates(self, fact: str) -> Iterable[int]:
        key = _key(fact)
        return range(len(self.texts)) if key is None else self.where.get(key, ())

    def first(self, fact: str) -> int | None:
        """The index of the first text ``fact`` is present in."""
        for i in self._candidates(fact):
            self.comparisons += 1
            text = self.texts[i]
            if fact in text and present(fact, text):
                return i
        return None


class _Facts:
    """Facts indexed by their key word, to find which ones a line may hold."""

    def __init__(self, facts: list[str]) -> None:
        self.comparisons = 0
        self.order = {f: i for i, f in enumerate(facts)}
        self.by_word: dict[str, list[str]] = {}
        self.unkeyed: list[str] = []
        for f in facts:
            key = _key(f)
            if key is None:
                self.unkeyed.append(f)
            else:
                self.by_word.setdefault(key, []).append(f)

    def facts_in(self, line: str) -> list[str]:
        """Facts that may be present in ``line``, in their original order (a superset)."""
        found = list(self.unkeyed)
        for word in set(_WORD.findall(line)):
            found += self.by_word.get(word, ())
        self.comparisons += len(found)
        return sorted(found, key=self.order.__getitem__)


_ROLE = re.compile(r"^(USER|ASSISTANT|TOOL|SYSTEM|EARLIER SUMMARY):\s*")
_CODE_OR_LOG = re.compile(
    r"[{}=;<>]|^\s*(?:def|class|import|from|return|for|if|\$|>>>|#)\b"
    r"|^\s*\[?\d{4}-\d{2}-\d{2}|\b(?:DEBUG|INFO|WARN|WARNING|ERROR|CRITICAL)\b")


_BULLET = re.compile(r"^[-*]\s+")


def _sentences(text: str) -> list[tuple[str, str]]:
    """``(role, sentence)`` pairs of a transcript; a role label starts a block of that role."""
    out, role = [], ""
    for block in _SENTENCE_END.split(text):
        block = block.strip()
        if not block:
            continue
        label = _ROLE.match(block)
        if label:
            role, block = label.group(1).lower(), block[label.end():]
        # Bullets of an earlier summary's verbatim section come back without their "- ".
        out.append((role, _BULLET.sub("", block, 1) if block[:1] in "-*" else block))
    return out


def _tier(fact: str, line: str, role: str) -> int:
    """0: the user's prose; 1: an error line; 2: other prose; 3: code, logs, bare values."""
    if fact == line and _ERROR_LINE.match(fact):
        return 1
    words = re.findall(r"[A-Za-z]{2,}", line)
    prose = (len(words) >= 4 and not _CODE_OR_LOG.search(line)
             and sum(map(len, words)) >= 0.5 * len(line))
    if prose:
        # An earlier summary's lines were kept for the user before: they keep that rank, or
        # facts planted early would lose out to newer material at every later compression.
        return 0 if role in ("user", "earlier summary") else 2
    return 3


def summary_message(text: str) -> Message:
    return Message.of("system", f"{SUMMARY_HEADER}\n\n{text.strip()}")

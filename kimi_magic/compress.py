"""Compression that keeps every fact: a structured summary, then a check against the source.

Models drop and alter numbers when they summarise. After the model writes its summary we
extract the facts of the compressed rounds — numbers, identifiers, paths, URLs, error lines —
and every one that the summary lacks (missing, or altered into another value) is restored
verbatim, in the sentence it came from, under "Kept verbatim", within a token budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import tokens
from .context import Message

SECTIONS = ("Current goal", "Facts and figures", "Decisions", "Errors and fixes",
            "Code state", "Open items")

SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below so that it can replace it in the context of a long task. "
    "Aim for about a quarter of its length. Use these Markdown sections: "
    + ", ".join(f"'## {s}'" for s in SECTIONS)
    + ". Copy every number, identifier, file path, URL and error message exactly as written. "
    "Write only the summary."
)

SUMMARY_HEADER = "[Summary of earlier conversation, compressed by kimi_magic]"
VERBATIM_HEADER = "## Kept verbatim (restored by the fact check)"

_FACT = re.compile(
    r"https?://[^\s)>\]\"'`]+"                      # URLs
    r"|(?:~|\.{1,2})?/[\w.\-/]+|[\w\-]+(?:/[\w.\-]+)+\.\w+"  # paths
    r"|\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b"            # dotted names
    r"|\b[a-z]+_\w+\b|\b[a-z]+[A-Z]\w*\b|\b[A-Z][a-z]+[A-Z]\w*\b"  # snake_case, camelCase
    r"|\b[A-Z][A-Z0-9]{2,}(?:-\d+)?\b"                 # CODES, TICKET-12
    r"|[-+]?\$?\d[\d,]*(?:\.\d+)?%?"                  # numbers, money, percentages
)
_ERROR_LINE = re.compile(r"^.*\b(?:Error|Exception|Traceback|FAILED|failed|error:)\b.*$", re.M)
_SENTENCE = re.compile(r"[^\n.!?]*(?:[.!?](?=\s|$)|\n|$)")


@dataclass
class CheckResult:
    facts: int = 0
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def retained(self) -> float:
        """Share of source facts present in the final summary."""
        if not self.facts:
            return 1.0
        return 1 - len(self.dropped) / self.facts


def facts(text: str) -> list[str]:
    """Facts worth keeping exactly, in order of first appearance, without duplicates."""
    found: dict[str, None] = {}
    for line in _ERROR_LINE.findall(text):
        found.setdefault(line.strip()[:240], None)
    for m in _FACT.finditer(text):
        value = m.group(0).rstrip(".,;:")
        if _worth_keeping(value):
            found.setdefault(value, None)
    return list(found)


def _worth_keeping(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    if value.replace(",", "").replace(".", "").isdigit() and digits < 2 and "." not in value:
        return False  # lone digits ("1", "3") are list markers more often than facts
    return len(value) >= 2


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


def request(previous_summary: Message | None, messages: list[Message]) -> list[dict]:
    """The messages sent to ask for a summary of ``messages`` (and the summary they extend)."""
    source = transcript(messages)
    if previous_summary is not None:
        source = f"EARLIER SUMMARY:\n{previous_summary.text}\n\n{source}"
    return [{"role": "system", "content": SUMMARY_INSTRUCTIONS},
            {"role": "user", "content": f"Please summarise this conversation:\n\n{source}"}]


def check(source: str, summary: str, budget: int) -> tuple[str, CheckResult]:
    """Restore every fact of ``source`` that ``summary`` lacks, within ``budget`` tokens."""
    wanted = facts(source)
    result = CheckResult(facts=len(wanted))
    result.missing = [f for f in wanted if f not in summary]
    if not result.missing:
        return summary, result
    source_facts = set(wanted)
    result.altered = [f for f in facts(summary) if f not in source_facts and f not in source]
    lines: list[str] = []
    spent = tokens.count(VERBATIM_HEADER)
    covered: set[str] = set()
    sentences = _sentences(source)
    for fact in result.missing:
        if fact in covered:
            continue
        line = next((s for s in sentences if fact in s), fact)
        if len(line) > 400:
            i = line.index(fact)
            line = "..." + line[max(0, i - 150): i + len(fact) + 150] + "..."
        cost = tokens.count(line) + 2
        if spent + cost > budget:
            # Past the budget, keep the bare value rather than nothing.
            line, cost = fact, tokens.count(fact) + 2
            if spent + cost > budget:
                result.dropped.append(fact)
                continue
        spent += cost
        lines.append(f"- {line}")
        now_covered = [f for f in result.missing if f in line]
        covered.update(now_covered)
        result.restored.extend(now_covered)
    fixed = summary.rstrip() + "\n\n" + VERBATIM_HEADER + "\n" + "\n".join(lines) if lines else summary
    return fixed, result


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def summary_message(text: str) -> Message:
    return Message.of("system", f"{SUMMARY_HEADER}\n\n{text.strip()}")

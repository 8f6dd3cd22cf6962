"""Deterministic replies built from the request, so tests can check what the client sent.

* A question in the last user message ("?" at the end, or starting with what/which/who/when/
  how/remind/recall) is answered by quoting the earlier sentence that shares the most content
  words with it: ``You told me earlier: "<sentence>".`` That is how tests see whether a fact
  survived compaction, pinning or retrieval.
* A request to summarise (the verb in the leading system message or the last user message) gets a
  Markdown summary with fixed sections, built from the conversation's own sentences.
* Tools mentioned by name in the last user message are called one at a time, with arguments
  drawn from the prompt; once all have results the answer quotes them. ``sim:call NAME {...}``
  lines script the calls exactly instead (see :mod:`.script`).
* A leading ``<notebook>...</notebook>`` block of a user message (what ran in the notebook
  since the last turn) is context, as it is to a model: the heuristics read the text after it.
* Anything else gets ``Noted. (simulated kimi reply #N to: "<start of the prompt>")``.

Same request, same reply: nothing here depends on time or randomness.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from itertools import repeat
from operator import add, contains
from typing import Any

from .script import has_script, scripted_calls
from .tokens import content_text

QUESTION_STARTS = ("what", "which", "who", "when", "how", "remind", "recall")
#: Only the end of a long question message, and this many of its words, drive recall.
QUESTION_CHARS = 400
QUESTION_WORDS = 24
#: Tool arguments are drawn from the start of the prompt only.
ARGUMENT_SOURCE_CHARS = 100_000

#: Words too common to tell two sentences apart.
STOPWORDS = frozenset("""
    the and for are was were what which who whom whose when where why how remind recall you your
    yours did does doing done have has had tell told earlier about that this these those with
    from into there their they them then than can could would should will shall please again
    our ours its not any all some just also know said say remember mentioned mention been being
    here out let may might must very more most such only own same too okay yes get got
    """.split())

_WORD = re.compile(r"[a-z0-9_]{3,}")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|\u201c([^\u201d\n]{1,200})\u201d")
_BULLET = re.compile(r"^[\s#>*+-]+")


@dataclass
class Reply:
    """What the model "said", before any max-token truncation."""

    content: str = ""
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"


_NOTE = re.compile(r"\A\s*<notebook\b[^>]*>.*?</notebook>\s*", re.S)


def prompt_text(content: Any) -> str:
    """A user message's text without a leading ``<notebook>`` note (context, not the ask)."""
    text = content_text(content)
    return _NOTE.sub("", text, count=1) if text.lstrip().startswith("<notebook") else text


def excerpt(text: str, limit: int = 60) -> str:
    """The first ``limit`` characters of ``text`` with whitespace collapsed (cheap on 1 MB)."""
    return " ".join(text[: limit * 4].split())[:limit]


def is_question(text: str) -> bool:
    stripped = text.strip()
    if not stripped:
        return False
    return stripped.endswith("?") or stripped[:8].lower().startswith(QUESTION_STARTS)


def content_words(text: str) -> list[str]:
    """Distinct lowercase content words, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


# --- recall -------------------------------------------------------------------------------

def _whole_word_count(low: str, words: list[str]) -> int:
    """How many of ``words`` occur in ``low`` as whole words, not inside longer words."""
    count = 0
    for word in words:
        n, i = len(word), low.find(word)
        while i != -1:
            before = low[i - 1] if i else " "
            after = low[i + n] if i + n < len(low) else " "
            if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
                count += 1
                break
            i = low.find(word, i + n)
    return count


def split_sentences(text: str) -> list[str]:
    """Sentences end at ". ", "? ", "! " or a newline.

    Done with str.replace and str.split (C loops) rather than a regex with a lookbehind: on a
    megabyte of text that is a few milliseconds instead of tens. Lowercasing a text keeps the
    same split points, so the pieces of ``text`` and ``text.lower()`` line up one to one.
    """
    for mark in (". ", "? ", "! "):
        text = text.replace(mark, mark[0] + "\n")
    return text.split("\n")


def _best_in(text: str, words: list[str]) -> tuple[int, int] | None:
    """``(matching words, sentence index)`` of the best sentence of one text.

    Substring tests (run by ``map`` in C, no Python loop per sentence) give an upper bound for
    each sentence; exact whole-word counts are taken in falling order of that bound until no
    remaining sentence can win.
    """
    low = text.lower()
    if not any(word in low for word in words):
        return None
    if len(low) != len(text):  # a case mapping changed lengths: the split would not line up
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    sentences = split_sentences(low)
    bound: list[int] = [0] * len(sentences)
    for word in words:
        bound = list(map(add, bound, map(contains, sentences, repeat(word))))
    # Falling bound, and falling index among equal bounds (sorted is stable).
    candidates = sorted(reversed(range(len(sentences))), key=bound.__getitem__, reverse=True)
    best: tuple[int, int] | None = None
    for i in candidates:
        # Once the bound cannot beat the best exact count (or tie it with a later sentence),
        # nothing after this candidate can either.
        if not bound[i] or best is not None and (
                bound[i] < best[0] or (bound[i] == best[0] and i < best[1])):
            break
        if sentences[i].rstrip().endswith("?"):
            continue  # an earlier question is not an answer
        key = (_whole_word_count(sentences[i], words), i)
        if key[0] and (best is None or key > best):
            best = key
    return best


def recall(question: str, sources: list[tuple[str, bool]]) -> str | None:
    """The earlier sentence sharing the most content words with ``question``.

    ``sources`` are ``(text, from_assistant)`` in conversation order. Ties go to what the
    user or system said over the assistant's own words, then to the most recent sentence.
    Earlier questions are skipped so asking twice does not quote the first asking.
    """
    # The question is the end of the message (a pasted document may precede it); a bounded
    # word list keeps the search linear in the size of the conversation.
    words = content_words(question[-QUESTION_CHARS:])[:QUESTION_WORDS]
    if not words:
        return None
    best_key: tuple[int, int, int, int] | None = None
    for order, (text, from_assistant) in enumerate(sources):
        found = _best_in(text, words) if text else None
        if found is None:
            continue
        key = (found[0], 0 if from_assistant else 1, order, found[1])
        if best_key is None or key > best_key:
            best_key = key
    if best_key is None:
        return None
    sentence = split_sentences(sources[best_key[2]][0])[best_key[3]]
    return _BULLET.sub("", sentence).strip() or None


# --- summaries ----------------------------------------------------------------------------

_FACTISH = re.compile(
    r"https?://\S+|(?:[\w.-]+/)+[\w.-]+|\b\w*\d[\w.:-]*|\b[A-Za-z]+_\w+|\b\w+\.[A-Za-z]\w*"
    r"|\b[a-z]+[A-Z]\w*"
)
#: A cheap test for "has a number, identifier, path or URL", run on every sentence.
_FACTISH_HINT = re.compile(r"[\d_/]|\w\.\w|[a-z][A-Z]")
_ERRORS = ("error", "exception", "traceback", "fail", " fix", " bug", "crash", "warning")
# Section keywords are plain substrings of " " + lowercased sentence: much faster than
# case-insensitive regex alternations on a megabyte of text.
_SECTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Errors and fixes", _ERRORS),
    ("Decisions", (" decid", "decision", " chose", " choose", " agreed", "going with",
                   " settled", "we will", "we'll", " prefer")),
    ("Code state", ("`", ".py", ".js", ".ts", "def ", "class ", "import ", "()", "function",
                    "commit", "branch")),
    ("Open items", ("todo", "to do", " next", "pending", "open question", " later",
                    "remaining", "still need", "not yet")),
]
_GOAL = re.compile(r"\b(?:goal|want|need|trying|task|aim|plan|objective)\b", re.I)
SECTION_ORDER = ("Current goal", "Facts and figures", "Decisions", "Errors and fixes",
                 "Code state", "Open items")


# The verb, not the noun: a pinned table's "numeric summary" or an earlier compressed
# "Summary of ..." block in the context is material, not a request to summarise.
_SUMMARISE = re.compile(r"\bsummari[sz]e\b", re.I)


def asks_for_summary(messages: list[dict[str, Any]], last_user_text: str) -> bool:
    """A request to summarise: the user asks for it, or the leading instructions do."""
    if _SUMMARISE.search(last_user_text):
        return True
    first = messages[0] if messages else {}
    return first.get("role") == "system" and bool(
        _SUMMARISE.search(content_text(first.get("content"))))


def _summary_sentences(messages: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], int]:
    """``(role, sentence)`` pairs of the material to summarise, and its length in characters.

    The summarising instructions themselves (system prompts and sentences that mention
    summaries) and headings of earlier summaries are left out.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    length = 0
    for message in messages:
        text = content_text(message.get("content"))
        role = str(message.get("role", ""))
        if (role == "system" and "summar" in text.lower()) or _SUMMARISE.search(text):
            continue  # the instructions, not material
        length += len(text)
        for raw in split_sentences(text):
            if raw.lstrip().startswith("#"):
                continue  # a heading, e.g. of an earlier summary
            sentence = _BULLET.sub("", raw).strip()
            if (len(sentence) < 3 or "summar" in sentence.lower() or sentence in seen
                    or sentence == "(none)"):
                continue
            seen.add(sentence)
            out.append((role, sentence))
    return out, length


def _score(sentence: str) -> int:
    """Rank facts (numbers, identifiers, paths) and error lines first."""
    low = " " + sentence.lower()
    return (2 if _FACTISH_HINT.search(sentence) else 0) + (
        3 if any(k in low for k in _ERRORS) else 0)


def _section(sentence: str) -> str:
    low = " " + sentence.lower()
    for name, keywords in _SECTIONS:
        if any(k in low for k in keywords):
            return name
    return "Open items" if sentence.endswith("?") else "Facts and figures"


def _lossy(text: str) -> str:
    """Drop every third number/identifier and alter a digit of every third other one."""
    counter = iter(range(1_000_000))

    def damage(match: re.Match[str]) -> str:
        token = match.group(0)
        i = next(counter)
        if i % 3 == 0:
            return "some"
        if i % 3 == 1 and any(c.isdigit() for c in token):
            return re.sub(r"\d", lambda d: str((int(d.group(0)) + 1) % 10), token, count=1)
        return token

    return _FACTISH.sub(damage, text)


_TARGET = re.compile(r"at most ([\d,]+) tokens", re.I)


_SCOPE = re.compile(r"except my last (\d+) messages?")


def _in_scope(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the instructions ask to summarise: all but the last N user rounds."""
    instruction = content_text(messages[-1].get("content")) if messages else ""
    scope = _SCOPE.search(instruction)
    if not scope:
        return messages
    keep = int(scope.group(1))
    users = [i for i, m in enumerate(messages[:-1]) if m.get("role") == "user"]
    if keep > len(users):
        return messages[-1:]
    cut = users[len(users) - keep]
    return messages[:cut] + messages[-1:]


def summarize(messages: list[dict[str, Any]], fidelity: str = "faithful") -> str:
    """A Markdown summary about a quarter as long as the material it summarises, or as short
    as the instructions ask ("at most N tokens")."""
    messages = _in_scope(messages)
    sentences, length = _summary_sentences(messages)
    budget = max(length // 4, 400)
    for m in messages:
        asked = _TARGET.search(content_text(m.get("content")))
        if asked and _SUMMARISE.search(content_text(m.get("content"))):
            budget = min(budget, max(int(asked.group(1).replace(",", "")) * 4, 400))
    goal = next((s for role, s in reversed(sentences) if role == "user" and _GOAL.search(s)),
                None)
    if goal is None:
        goal = next((s for role, s in reversed(sentences) if role == "user"),
                    sentences[0][1] if sentences else "(unknown)")
    scores = [_score(sentence) for _, sentence in sentences]
    ranked = sorted(range(len(sentences)), key=lambda i: -scores[i])
    chosen: set[int] = set()
    used = len(goal)
    for i in ranked:
        sentence = sentences[i][1]
        if sentence == goal or used + len(sentence) > budget:
            continue
        chosen.add(i)
        used += len(sentence) + 3
    sections: dict[str, list[str]] = {name: [] for name in SECTION_ORDER}
    sections["Current goal"].append(goal)
    for i in sorted(chosen):
        sentence = sentences[i][1]
        sections[_section(sentence)].append(sentence)
    parts = []
    for name in SECTION_ORDER:
        lines = sections[name] or ["(none)"]
        body = "\n".join(f"- {line}" for line in lines)
        if fidelity == "lossy":
            body = _lossy(body)
        parts.append(f"## {name}\n{body}")
    return "\n\n".join(parts)


# --- tools --------------------------------------------------------------------------------

WEB_SEARCH = "$web_search"


class _Prompt:
    """Numbers and quoted strings of a prompt, handed out in order to tool arguments."""

    def __init__(self, text: str) -> None:
        text = text[:ARGUMENT_SOURCE_CHARS]
        self.numbers = iter(_NUMBER.findall(text))
        self.strings = iter(a or b for a, b in _QUOTED.findall(text))

    def value(self, schema: Any) -> Any:
        if not isinstance(schema, dict):
            return "test"
        if schema.get("enum"):
            return schema["enum"][0]
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if kind == "integer":
            number = next(self.numbers, None)
            return int(float(number)) if number is not None else 1
        if kind == "number":
            number = next(self.numbers, None)
            if number is None:
                return 1
            return float(number) if "." in number else int(number)
        if kind == "boolean":
            return True
        if kind == "array":
            return [self.value(schema.get("items"))] if schema.get("items") else []
        if kind == "object":
            return self.arguments(schema)
        return next(self.strings, "test")

    def arguments(self, schema: Any) -> dict[str, Any]:
        properties = (schema or {}).get("properties") or {}
        return {name: self.value(sub) for name, sub in properties.items()}


def _tool_results(after_user: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(tool name, result text)`` for each tool message after the last user message."""
    names: dict[str, str] = {}
    for message in after_user:
        for call in message.get("tool_calls") or ():
            names[str(call.get("id"))] = str(((call.get("function") or {}).get("name")) or "")
    return [
        (str(m.get("name") or names.get(str(m.get("tool_call_id")), "tool")),
         content_text(m.get("content")))
        for m in after_user if m.get("role") == "tool"
    ]


def _mentioned_tools(tools: list[dict[str, Any]], text: str, tool_choice: Any) -> list[str]:
    """Tools the user asked for, in order of mention (``tool_choice`` can force one)."""
    positions: dict[str, int] = {}
    low = text.lower()
    for tool in tools:
        name = str((tool.get("function") or {}).get("name", ""))
        if tool.get("type") == "builtin_function":
            hits = [p for p in (low.find("search"), low.find("web")) if p != -1]
            if name == WEB_SEARCH and hits:
                positions[name] = min(hits)
        elif name and (pos := text.find(name)) != -1:
            positions[name] = pos
    mentioned = sorted(positions, key=positions.__getitem__)
    if isinstance(tool_choice, dict):
        forced = str((tool_choice.get("function") or {}).get("name", ""))
        return [forced] if forced else mentioned
    if tool_choice == "required" and not mentioned and tools:
        return [str((tools[0].get("function") or {}).get("name", ""))]
    return mentioned


def _web_search_arguments(text: str) -> str:
    search_id = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    return json.dumps({"search_result": {"search_id": f"ws-{search_id}"},
                       "usage": {"total_tokens": 800 + len(text) % 400}})


def plan_tools(body: dict[str, Any], messages: list[dict[str, Any]]) -> Reply | None:
    """A tool call, a tool-results answer, or None when tools play no part in this turn."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
    tool_choice = body.get("tool_choice", "auto")
    if not tools or tool_choice == "none":
        return None
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last_user < 0 or messages[-1].get("role") not in ("user", "tool"):
        return None
    text = prompt_text(messages[last_user].get("content"))
    results = _tool_results(messages[last_user + 1:])
    n_calls = sum(len(m.get("tool_calls") or ()) for m in messages)
    if has_script(text):
        offered = {str((t.get("function") or {}).get("name", "")) for t in tools}
        script = scripted_calls(text, offered)[len(results):]
        if script:
            call = {"id": f"call_{n_calls + 1}", "type": "function",
                    "function": {"name": script[0].name, "arguments": script[0].arguments}}
            return Reply(tool_calls=[call], finish_reason="tool_calls")
        pending: list[str] = []
    else:
        called = {name for name, _ in results}
        pending = [n for n in _mentioned_tools(tools, text, tool_choice) if n not in called]
    if pending:
        name = pending[0]
        if name == WEB_SEARCH:
            arguments = _web_search_arguments(text)
        else:
            schema = next((t.get("function", {}).get("parameters") for t in tools
                           if (t.get("function") or {}).get("name") == name), None)
            arguments = json.dumps(_Prompt(text).arguments(schema), ensure_ascii=False)
        call = {"id": f"call_{n_calls + 1}", "type": "function",
                "function": {"name": name, "arguments": arguments}}
        return Reply(tool_calls=[call], finish_reason="tool_calls")
    if not results:
        return None
    parts = []
    web = [content for name, content in results if name == WEB_SEARCH]
    if web:
        parts.append(f'According to a web search: simulated results for "{excerpt(text)}".')
    others = [f"{name} -> {content}" for name, content in results if name != WEB_SEARCH]
    if others:
        parts.append("Tool results: " + "; ".join(others))
    return Reply(content=" ".join(parts))


# --- putting it together ------------------------------------------------------------------

def _reasoning(text: str, n_earlier: int, plan: str, effort: str | None) -> str:
    sentences = [
        f'The user asks about "{excerpt(text, 40)}".',
        f"I will look at the {n_earlier} earlier messages for anything relevant.",
        f"The best reply is {plan}.",
        "I will keep the reply short and exact.",
        "Let me double-check the earlier messages once more.",
        "Every number and name must match what the user said.",
        "Nothing in the request contradicts this plan.",
        "Now I will write the answer.",
    ]
    count = {"low": 2, "max": 8}.get(effort or "high", 4)
    return " ".join(sentences[:count])


def _numbers(text: str) -> list[int | float]:
    return [float(n) if "." in n else int(n) for n in _NUMBER.findall(text[:20_000])][:20]


def build_reply(body: dict[str, Any], *, thinks: bool, effort: str | None = None,
                fidelity: str = "faithful") -> Reply:
    """The full reply (reasoning, content or tool call) for a validated chat request."""
    messages: list[dict[str, Any]] = body["messages"]
    partial = messages[-1].get("role") == "assistant" and bool(messages[-1].get("partial"))
    conversation = messages[:-1] if partial else messages
    last_user = max((i for i, m in enumerate(conversation) if m.get("role") == "user"),
                    default=-1)
    text = prompt_text(conversation[last_user].get("content")) if last_user >= 0 else ""

    reply = None if partial else plan_tools(body, conversation)
    if reply is not None:
        plan = (f"a call to {reply.tool_calls[0]['function']['name']}"
                if reply.tool_calls else "an answer quoting the tool results")
    elif asks_for_summary(conversation, text):
        reply, plan = Reply(content=summarize(conversation, fidelity)), "a structured summary"
    else:
        found = None
        if is_question(text):
            sources = [(content_text(m.get("content")), m.get("role") == "assistant")
                       for m in conversation[:last_user]]
            found = recall(text, sources)
        if found:
            content = f'You told me earlier: "{found}". That is what I have on record.'
            plan = "to quote what the user said earlier"
        else:
            n_user = sum(1 for m in conversation if m.get("role") == "user")
            content = f'Noted. (simulated kimi reply #{n_user} to: "{excerpt(text)}")'
            plan = "a short acknowledgement"
        reply = Reply(content=content)

    if not reply.tool_calls and _json_mode(body):
        reply.content = json.dumps({"answer": reply.content, "prompt": excerpt(text),
                                    "numbers": _numbers(text)}, ensure_ascii=False)
        plan = "a JSON object"
    if partial:
        prefix = content_text(messages[-1].get("content"))
        glue = "" if not prefix or prefix[-1].isspace() else " "
        reply.content = glue + reply.content
        plan = "to continue the given prefix"
    if thinks:
        reply.reasoning = _reasoning(text, max(len(conversation) - 1, 0), plan, effort)
    return reply


def _json_mode(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object", "json_schema")


def split_deltas(text: str, words_per_delta: int = 2, max_chars: int = 32) -> list[str]:
    """Cut text into stream deltas of a couple of words, as a real server streams tokens."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    out: list[str] = []
    for i in range(0, len(pieces), words_per_delta):
        chunk = "".join(pieces[i:i + words_per_delta])
        out.extend(chunk[j:j + max_chars] for j in range(0, len(chunk), max_chars))
    return out


__all__ = ["Reply", "build_reply", "split_deltas", "recall", "summarize", "is_question"]

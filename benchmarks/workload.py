"""The scripted 50-round notebook session, and what it costs under each context strategy.

One deterministic workload (seeded): a pinned dataframe, pasted code and logs, questions, nine
facts planted in the first rounds (figures, ids and a path, and prose: two decisions with
their reasons and a person's name, reported per kind), and think time between cells
(median about two minutes, a third of the gaps over five) applied to the simulator's cache
clock. The same workload is
sent under each strategy; each call is priced from the simulator's usage (cached and
cache-write tokens) with the model table's rates.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, NamedTuple

import openai

from kimi_magic import Message, Pin, Session, Settings, Store
from kimi_magic.core import models as model_table
from kimi_magic.simulator import Simulator

ROUNDS = 50
#: Tokens the user's cells add across the session (seed 000: "总 token:224K").
TOTAL_TOKENS = 224_000
SEED = 20261101

class Fact(NamedTuple):
    """A planted fact: its sentence, the exact phrases that must survive, a recall query,
    and its kind (reported separately: figures and ids are what a fact check sees; a
    decision's reason or a person's name is prose it does not)."""

    sentence: str
    must: tuple[str, ...]
    query: str
    kind: str

    @property
    def value(self) -> str:
        return self.must[0]

    def kept_in(self, text: str) -> bool:
        return all(phrase in text for phrase in self.must)


FACTS = [
    Fact("For the record, the staging DB port is 54321 and nothing else works.", ("54321",),
         "staging DB port", "number"),
    Fact("The model run id RUN-8841 is the baseline we compare against.", ("RUN-8841",),
         "model run id baseline", "id"),
    Fact("We decided the threshold is 0.375 for flagging churners.", ("0.375",),
         "threshold flagging churners", "number"),
    Fact("The clean training set lives at /srv/data/churn_v3.parquet on the shared disk.",
         ("/srv/data/churn_v3.parquet",), "clean training set", "path"),
    Fact("Keep the feature flag enable_fast_join switched off in production.",
         ("enable_fast_join",), "feature flag production", "id"),
    Fact("The pilot customer is ACME-2207, so use their data for the demo.", ("ACME-2207",),
         "pilot customer demo", "id"),
    Fact("We chose gradient boosting over the neural network because the auditors must see "
         "feature importances.", ("gradient boosting", "auditors must see feature importances"),
         "gradient boosting auditors", "decision and reason"),
    Fact("Priya Raman owns the churn model, so send her the questions, not the data team.",
         ("Priya Raman",), "who owns the churn model", "person"),
    Fact("We will not retrain on weekends, since the warehouse is frozen for backups then.",
         ("not retrain on weekends", "frozen for backups"), "retrain weekends warehouse",
         "decision and reason"),
]

#: The questions of the last rounds: the user asks for what was planted at the start.
QUESTIONS = ["What is the staging DB port?", "Which model run id is our baseline?",
             "What threshold did we decide for flagging churners?",
             "Who owns the churn model?", "Why did we choose gradient boosting?"]

SYSTEM = Settings.system
DEFAULT_MODEL = model_table.DEFAULT_MODEL
#: Output cap of every call, the same for every strategy (room for the full history to fit).
MAX_OUTPUT = 8_192


@dataclass
class Round:
    kind: str
    prompt: str
    gap: float  # seconds of think time before this cell


@dataclass
class Workload:
    rounds: list[Round]
    pin: Message

    @property
    def gaps(self) -> list[float]:
        return [r.gap for r in self.rounds[1:]]


def _code(rng: random.Random, tokens: int, n: int) -> str:
    names = ["load_frame", "clean_columns", "join_events", "score_batch", "fit_model",
             "plot_lift", "write_report", "split_folds", "encode_labels", "merge_accounts"]
    lines = [f"# cell {n}: refactor of the scoring pipeline", "import pandas as pd", ""]
    while len("\n".join(lines)) < tokens * 4:
        fn = rng.choice(names) + f"_{rng.randint(10, 99)}"
        lines += [f"def {fn}(df: pd.DataFrame, limit: int = {rng.randint(100, 900)}) -> "
                  "pd.DataFrame:",
                  f'    """Step {rng.randint(1, 40)} of the pipeline; keeps rows under the '
                  'limit."""',
                  "    out = df[df['tenure'] < limit].copy()",
                  f"    out['score'] = out['spend'] * {rng.random():.3f} + out['visits']",
                  "    return out.sort_values('score', ascending=False)", ""]
    return "\n".join(lines)


def _log(rng: random.Random, tokens: int, n: int) -> str:
    levels = ["INFO", "INFO", "INFO", "WARNING", "DEBUG", "ERROR"]
    lines = []
    t = 3600 * 9 + n * 60
    while len("\n".join(lines)) < tokens * 4:
        t += rng.randint(1, 30)
        level = rng.choice(levels)
        msg = (f"worker-{rng.randint(1, 8)} processed batch {rng.randint(1000, 9999)} in "
               f"{rng.randint(20, 900)} ms ({rng.randint(100, 5000)} rows)")
        if level == "ERROR":
            msg = (f"TimeoutError: query to warehouse took {rng.randint(30, 90)} s, retrying "
                   f"(attempt {rng.randint(1, 3)})")
        lines.append(f"2026-11-0{1 + n % 9} {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d} "
                     f"{level:<7} {msg}")
    return "\n".join(lines)


def _dataframe() -> str:
    rng = random.Random(SEED + 1)
    head = f"{'':>3} {'account':>10} {'tenure':>7} {'spend':>9} {'visits':>7} {'churned':>8}"
    rows = [f"{i:>3} {f'AC-{rng.randint(10000, 99999)}':>10} {rng.randint(1, 60):>7} "
            f"{rng.uniform(10, 900):>9.2f} {rng.randint(0, 80):>7} {rng.random() < 0.2!s:>8}"
            for i in range(60)]
    return "\n".join([head, *rows, "", "[60 rows x 5 columns]"])


def think_times(n: int, seed: int = SEED) -> list[float]:
    """Seconds between cells: lognormal, median 2 minutes, P(> 5 minutes) = 1/3."""
    # Evenly spaced quantiles in a seeded order: the sample has exactly the intended median and
    # tail (a plain random draw of 49 gaps can miss the median by a minute).
    sigma = math.log(300 / 120) / NormalDist().inv_cdf(2 / 3)
    gaps = [math.exp(math.log(120) + sigma * NormalDist().inv_cdf((k + 0.5) / n))
            for k in range(n)]
    random.Random(seed).shuffle(gaps)
    return gaps


def build(rounds: int = ROUNDS, total: int = TOTAL_TOKENS, seed: int = SEED) -> Workload:
    """The scripted session: sizes drawn with ``seed``, scaled so the cells add up to ``total``."""
    rng = random.Random(seed)
    kinds = []
    for i in range(rounds):
        if i < len(FACTS):
            kinds.append("fact")
        elif i >= rounds - len(QUESTIONS):
            kinds.append("question")
        else:
            kinds.append(rng.choice(["code", "code", "log", "question", "log"]))
    weights = {"fact": 1200, "code": 6000, "log": 7000, "question": 120}
    sizes = [weights[k] * rng.uniform(0.5, 1.5) for k in kinds]
    scale = total / sum(sizes)
    gaps = [0.0, *think_times(rounds - 1, seed)]
    out = []
    for i, (kind, size) in enumerate(zip(kinds, sizes, strict=True)):
        size = int(size * scale)
        if kind == "fact":
            body = _code(rng, size, i) if i % 2 else _log(rng, size, i)
            prompt = (f"Context for the task, round {i + 1}. {FACTS[i].sentence} Here is what I "
                      f"have so far:\n\n{body}\n\nPlease keep this in mind.")
        elif kind == "code":
            prompt = f"Refactor this so it is easier to test:\n\n{_code(rng, size, i)}"
        elif kind == "log":
            prompt = f"Why is the job slow? Here is the log:\n\n{_log(rng, size, i)}"
        elif i >= rounds - len(QUESTIONS):
            prompt = QUESTIONS[i - (rounds - len(QUESTIONS))]
        else:
            prompt = ("Next step: " + " ".join(rng.choice(
                ["add", "tests", "for", "the", "scoring", "pipeline", "and", "plot", "lift"])
                for _ in range(max(size // 2, 10))) + ".")
        out.append(Round(kind, prompt, gaps[i]))
    block = f'<pinned name="df" kind="dataframe" source="df">\n{_dataframe()}\n</pinned>'
    return Workload(out, Message.of("system", block))


@dataclass
class Result:
    """What one strategy paid and kept."""

    strategy: str
    model: str
    costs: list[float] = field(default_factory=list)  # per round, compaction included
    prompt_tokens: int = 0
    cached_tokens: int = 0
    final_request: str = ""
    recalled: set[str] = field(default_factory=set)
    calls: int = 0
    compactions: int = 0

    @property
    def cost(self) -> float:
        return sum(self.costs)

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def facts_retained(self) -> float:
        return sum(f.kept_in(self.final_request) for f in FACTS) / len(FACTS)

    @property
    def facts_recallable(self) -> float:
        found = sum(f.kept_in(self.final_request) or f.sentence in self.recalled
                    for f in FACTS)
        return found / len(FACTS)

    @property
    def facts_by_kind(self) -> dict[str, dict[str, int]]:
        """Per kind of fact: how many are in the final request (kept), how many are not
        (lost), and of those how many recall finds."""
        out: dict[str, dict[str, int]] = {}
        for f in FACTS:
            row = out.setdefault(f.kind, {"kept": 0, "lost": 0, "recallable": 0})
            kept = f.kept_in(self.final_request)
            row["kept" if kept else "lost"] += 1
            row["recallable"] += kept or f.sentence in self.recalled
        return out

    def summary(self) -> dict[str, Any]:
        return {"cost_usd": round(self.cost, 4), "cache_hit_rate": round(self.cache_hit_rate, 4),
                "facts_retained": round(self.facts_retained, 4),
                "facts_recallable": round(self.facts_recallable, 4),
                "facts_by_kind": self.facts_by_kind,
                "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "calls": self.calls, "compactions": self.compactions,
                "cumulative_cost": [round(c, 5) for c in _cumulative(self.costs)]}


def _cumulative(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _price(model: str, usage: dict[str, Any], long_ttl: bool) -> float:
    m = model_table.resolve(model)
    details = usage.get("prompt_tokens_details") or {}
    cached = usage.get("cached_tokens") or details.get("cached_tokens") or 0
    writes = usage.get("cache_write_tokens") or details.get("cache_write_tokens") or 0
    return m.cost(usage["prompt_tokens"], cached, usage.get("completion_tokens", 0), writes,
                  long_ttl=long_ttl) or 0.0


def run_session(work: Workload, model: str, settings: Settings, name: str) -> Result:
    """Drive a ``Session`` through the workload (our policy, or ``compact_mode="off"``)."""
    result = Result(name, model)
    with Simulator(port=0, record=False) as sim, tempfile.TemporaryDirectory() as tmp:
        settings.base_url, settings.api_key, settings.model = sim.url, "sk-bench", model
        settings.retry_base = 0.01
        settings.max_completion_tokens = MAX_OUTPUT
        store = Store(Path(tmp) / "store.sqlite")
        s = Session(name, settings, store=store, clock=sim.clock.now)
        s.set_pin(Pin("df", "dataframe", "df", work.pin, frozen=True))
        long_ttl = bool(settings.cache_ttl)
        seen = 0
        for i, r in enumerate(work.rounds):
            sim.advance(r.gap)
            if i == len(work.rounds) - 1:
                result.final_request = json.dumps(s.context.wire(), ensure_ascii=False)
            s.ask(r.prompt)
            spent = 0.0
            for row in s.calls[seen:]:
                usage = {"prompt_tokens": row["prompt_tokens"] or 0,
                         "cached_tokens": row["cached_tokens"] or 0,
                         "cache_write_tokens": row["cache_write_tokens"] or 0,
                         "completion_tokens": row["completion_tokens"] or 0}
                spent += _price(row["model"], usage, long_ttl)
                result.prompt_tokens += usage["prompt_tokens"]
                result.cached_tokens += usage["cached_tokens"]
                result.calls += 1
                result.compactions += row["kind"] != "chat"
            seen = len(s.calls)
            result.costs.append(spent)
        for f in FACTS:
            if any(f.kept_in(hit["text"]) for hit in s.recall(f.query, limit=5)):
                result.recalled.add(f.sentence)
        # Compress calls are counted above; masks and truncations call no model.
        result.compactions += sum(1 for snap in s.snapshots
                                  if "truncate" in snap.label or "before mask" in snap.label)
        store.close()
    return result


def run_raw(work: Workload, model: str, name: str,
            window: Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]) -> Result:
    """Drive the raw openai SDK the way a seed does: ``window(history, last_prompt_tokens)``
    returns the history kept for the next request (system messages are always sent)."""
    result = Result(name, model)
    with Simulator(port=0, record=False) as sim:
        sdk = openai.OpenAI(base_url=sim.url, api_key="sk-bench", max_retries=0)
        system = [{"role": "system", "content": SYSTEM}, work.pin.data]
        history: list[dict[str, Any]] = []
        last_total = 0
        for i, r in enumerate(work.rounds):
            sim.advance(r.gap)
            history.append({"role": "user", "content": r.prompt})
            history = window(history, last_total)
            messages = system + history
            if i == len(work.rounds) - 1:
                result.final_request = json.dumps(messages, ensure_ascii=False)
            reply = sdk.chat.completions.create(model=model, messages=messages,
                                                max_completion_tokens=MAX_OUTPUT)
            usage = reply.usage.model_dump()
            extra = reply.usage.model_extra or {}
            usage.update({k: v for k, v in extra.items() if v is not None})
            message = reply.choices[0].message
            kept = {"role": "assistant", "content": message.content or ""}
            reasoning = (message.model_extra or {}).get("reasoning_content")
            if reasoning:
                kept["reasoning_content"] = reasoning
            history.append(kept)
            last_total = usage["total_tokens"]
            result.costs.append(_price(model, usage, long_ttl=False))
            result.prompt_tokens += usage["prompt_tokens"]
            details = usage.get("prompt_tokens_details") or {}
            result.cached_tokens += usage.get("cached_tokens") or details.get(
                "cached_tokens") or 0
            result.calls += 1
            before = len(history)
            history = window(history, last_total)
            result.compactions += len(history) < before - 1
    return result


def last_messages(n: int = 20) -> Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]:
    """Seed 001: keep only the latest ``n`` messages (plus the system messages)."""
    return lambda history, _total: history[-n:]


def rolling_snapshot(limit: int = 180_000, keep_rounds: int = 3
                     ) -> Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]:
    """Seed 000: past ``limit`` tokens, keep the system prompt and the last rounds."""
    def window(history: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
        if total <= limit or history[-1]["role"] != "assistant":
            return history
        users = [i for i, m in enumerate(history) if m["role"] == "user"]
        return history[users[-keep_rounds]:] if len(users) > keep_rounds else history
    return window


def strategies(work: Workload, model: str, economy: Settings | None = None,
               default: Settings | None = None) -> dict[str, Result]:
    """The four strategies of the comparison, plus our economy preset and, to show what the
    mask stage buys, our default without it."""
    return {
        "full_history": run_session(work, model, Settings(compact_mode="off"), "full_history"),
        "last_20_messages": run_raw(work, model, "last_20_messages", last_messages(20)),
        "seed_rolling_snapshot": run_raw(work, model, "seed_rolling_snapshot",
                                         rolling_snapshot()),
        "kimi_magic": run_session(work, model, default or Settings(), "kimi_magic"),
        "kimi_magic_no_mask": run_session(work, model, Settings(mask_tokens=None),
                                          "kimi_magic_no_mask"),
        "kimi_magic_economy": run_session(work, model, economy or Settings.from_preset("economy"),
                                          "kimi_magic_economy"),
    }

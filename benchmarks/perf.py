"""Client-side costs of kimi_magic, each as a ratio to the raw openai SDK on the same server.

* per-turn overhead: ``Session.ask`` streaming through the real ``StreamView`` and committing
  the turn to SQLite, against one raw streaming SDK call with the same messages;
* snapshots: time of one at 200K tokens, memory of 1,000 of them;
* streaming CPU at 100 tokens/s through IPython's real display machinery;
* ``%load_ext kimi_magic`` against ``import openai``, in fresh interpreters.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import openai

from kimi_magic import Message, Pin, Session, Settings, Store
from kimi_magic.core.interpolate import interpolate
from kimi_magic.notebook.display import StreamView, status_line
from kimi_magic.simulator import Simulator, count_prompt_tokens
from kimi_magic.wire.events import StreamEvent

PROMPT = "question {i}: which function handles the join, and what does it return?"
CONTEXTS = {"1k": 1_000, "32k": 32_000, "128k": 128_000, "200k": 200_000}


class _Handle:
    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


def _no_display(*args: Any, **kwargs: Any) -> _Handle:
    return _Handle()


def _paste(i: int, tokens: int) -> str:
    line = f"    total_{i} = sum(row.spend for row in rows if row.tenure > {i})  # step {i}\n"
    return f"Cell {i}, pasted code:\n" + line * max(1, tokens * 4 // len(line))


def _grow(s: Session, target: int, sim: Simulator) -> None:
    """Ask with pasted code until the server counts about ``target`` prompt tokens."""
    i = len(s.context.rounds)
    while True:
        have = count_prompt_tokens(s.context.wire())
        if have >= target * 0.97:
            return
        s.ask(_paste(i, min(20_000, max(50, target - have - 120))))
        i += 1


def _log(i: int, tokens: int) -> str:
    """A pasted log of about ``tokens`` tokens (no braces: a log rarely has any)."""
    line = (f"2026-12-01 12:{i % 60:02d}:07,412 INFO worker-3 step={i} loss=0.{i % 997:03d} "
            f"path=/srv/runs/r{i}/metrics.csv elapsed=41.2s\n")
    per_line = count_prompt_tokens([{"role": "user", "content": line * 20}]) / 20
    return f"Here is the log of run {i}; what failed?\n" + line * max(1, int(tokens / per_line))


def _pairs(s: Session, raw: openai.OpenAI, label: str, prompts: list[str],
           namespace: dict[str, Any]) -> tuple[float, float]:
    """Median seconds of our turn and of the raw SDK call, interleaved, one per prompt.

    Ours is what a ``%%kimi`` cell runs: ``{name}`` interpolation, ``Session.ask`` through
    the real ``StreamView`` and its commit. The first pair warms connections and the cache.
    """
    base = s.snapshot(f"base {label}")
    messages = s.context.wire()
    ours, theirs = [], []
    for i, prompt in enumerate(prompts):
        gc.collect()
        view = StreamView(display=_no_display)
        t = time.perf_counter()
        turn = s.ask(interpolate(prompt, namespace), on_delta=view)
        view.close(status_line(turn))
        spent = time.perf_counter() - t
        # Back to the fixed context (untimed): a new snapshot of the state left, then
        # rollback, so every repetition sends the same number of tokens.
        s.snapshot(f"rep {label} {i}")
        s.rollback(base.id)
        gc.collect()
        t = time.perf_counter()
        stream = raw.chat.completions.create(
            model=s.settings.model, messages=[*messages, {"role": "user", "content": prompt}],
            max_completion_tokens=32_768, stream=True, stream_options={"include_usage": True})
        text = [c.choices[0].delta.content for c in stream
                if c.choices and c.choices[0].delta.content]
        raw_spent = time.perf_counter() - t
        assert text
        if i:
            ours.append(spent)
            theirs.append(raw_spent)
    return statistics.median(ours), statistics.median(theirs)


def overhead(reps: int = 15) -> dict[str, Any]:
    """Median seconds per turn, ours vs raw SDK, interleaved, at each context size.

    Two turns at each size: a short question on a context of that size, and a big paste (a
    log that is a third of what is sent) on a context of two thirds of it. Then a short
    question after 1,000 short rounds (2,000 messages), and, reported apart, one paste turn
    that passes the compaction threshold and so compacts (its compress call on the wire).
    """
    out: dict[str, Any] = {"overhead_ratio_by_context": {}, "raw_sdk_seconds_by_context": {},
                           "ours_seconds_by_context": {}, "context_tokens": {},
                           "overhead_paste_ratio_by_context": {},
                           "raw_sdk_paste_seconds_by_context": {},
                           "ours_paste_seconds_by_context": {}, "paste_tokens_by_context": {}}
    namespace = {"df_name": "churn", "rows": list(range(50))}  # a notebook's namespace
    stops = sorted([(size * 2 // 3, "paste", label) for label, size in CONTEXTS.items()]
                   + [(size, "small", label) for label, size in CONTEXTS.items()])
    with Simulator(port=0, record=False) as sim, tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite")
        settings = Settings(base_url=sim.url, api_key="sk-bench", compact_mode="off",
                            retry_base=0.01)
        s = Session("overhead", settings, store=store)
        raw = openai.OpenAI(base_url=sim.url, api_key="sk-bench", max_retries=0)
        for size, kind, label in stops:
            _grow(s, size, sim)
            if kind == "small":
                out["context_tokens"][label] = count_prompt_tokens(s.context.wire())
                prompts = [PROMPT.format(i=i) for i in range(reps + 1)]
                key = ""
            else:
                paste = CONTEXTS[label] - count_prompt_tokens(s.context.wire())
                prompts = [_log(i, paste) for i in range(reps + 1)]
                out["paste_tokens_by_context"][label] = count_prompt_tokens(
                    [{"role": "user", "content": prompts[0]}])
                key = "paste_"
            ours, theirs = _pairs(s, raw, f"{kind} {label}", prompts, namespace)
            out[f"overhead_{key}ratio_by_context"][label] = round(ours / theirs, 3)
            out[f"raw_sdk_{key}seconds_by_context"][label] = round(theirs, 5)
            out[f"ours_{key}seconds_by_context"][label] = round(ours, 5)
        out["compaction_turn"] = _compaction_turn(s, settings, reps=1 if reps < 8 else 3)
        store.close()
        out.update(_long_session(sim, raw, Path(tmp), namespace, reps))
    out["overhead_ratio_200k"] = out["overhead_ratio_by_context"]["200k"]
    return out


def _long_session(sim: Simulator, raw: openai.OpenAI, tmp: Path, namespace: dict[str, Any],
                  reps: int) -> dict[str, Any]:
    """A short question after 1,000 short rounds, ours vs raw SDK."""
    from benchmarks import scale

    path = tmp / "long.sqlite"
    scale.build(path, 1000, 0)
    store = Store(path)
    s = Session(scale.NAME, Settings(base_url=sim.url, api_key="sk-bench",
                                     compact_mode="off", retry_base=0.01), store=store)
    tokens = count_prompt_tokens(s.context.wire())
    ours, theirs = _pairs(s, raw, "1000 rounds", [PROMPT.format(i=i) for i in range(reps + 1)],
                          namespace)
    store.close()
    return {"overhead_ratio_1000_rounds": round(ours / theirs, 3),
            "raw_sdk_seconds_1000_rounds": round(theirs, 5),
            "ours_seconds_1000_rounds": round(ours, 5), "context_tokens_1000_rounds": tokens,
            "messages_1000_rounds": len(s.context.wire())}


def _compaction_turn(s: Session, settings: Settings, reps: int) -> dict[str, Any]:
    """A paste turn that takes the context past the compaction threshold, with compaction on:
    its time, the two calls' time on the wire, and ours (the rest)."""
    threshold = s.settings.threshold(s.model().context_length, s.model().compact_at)
    # The largest of the paste turns' contexts still under the threshold: the paste (at
    # least a third of what is sent) takes it past.
    under = [b for b in s.snapshots if b.label.startswith("base paste ") and b.tokens < threshold]
    base = s.rollback(max(under, key=lambda b: b.tokens).id)
    settings.compact_mode = "compress"
    have = count_prompt_tokens(s.context.wire())
    paste = max(have // 2, threshold - have + 10_000)
    runs = []
    for i in range(reps):
        calls = len(s.calls)
        gc.collect()
        view = StreamView(display=_no_display)
        t = time.perf_counter()
        turn = s.ask(_log(1000 + i, paste), on_delta=view)
        view.close(status_line(turn))
        spent = time.perf_counter() - t
        new = s.calls[calls:]
        wire = {kind: sum(c["seconds"] for c in new if c["kind"] == kind)
                for kind in ("chat", "compress")}
        runs.append({"seconds": spent, "chat_wire_seconds": wire["chat"],
                     "compress_wire_seconds": wire["compress"],
                     "ours_seconds": spent - wire["chat"] - wire["compress"],
                     "compacted": bool(turn.notices), "notice": " ".join(turn.notices)[:160]})
        s.rollback(base.id)
    settings.compact_mode = "off"
    keys = ("seconds", "chat_wire_seconds", "compress_wire_seconds", "ours_seconds")
    return {"context_tokens": base.tokens, "paste_tokens": paste, "threshold": threshold,
            "compacted": all(r["compacted"] for r in runs), "notice": runs[-1]["notice"],
            "reps": reps,
            **{k: round(statistics.median(r[k] for r in runs), 4) for k in keys}}


def snapshots(count: int = 1000, reps: int = 20) -> dict[str, Any]:
    """Seconds per snapshot at 200K tokens; memory with ``count`` snapshots over none.

    Two ratios: snapshots of the same context (the cost of a snapshot itself), and snapshots
    each after a small pin change (each holds a different context; the changed pins count).
    """
    with Simulator(port=0, record=False) as sim, tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite")
        s = Session("snapshots", Settings(base_url=sim.url, api_key="sk-bench",
                                          compact_mode="off", retry_base=0.01), store=store)
        _grow(s, 200_000, sim)
        tokens = s.tokens()
        times: list[float] = []
        ratios = {}
        for kind in ("same", "distinct"):
            gc.collect()
            tracemalloc.start()
            # The session's own memory is its context (measured directly); what snapshots
            # add is whatever they allocate, traced from here on.
            before = _size(s)
            for i in range(count):
                if kind == "distinct":
                    s.set_pin(Pin("step", "text", "benchmark",
                                  Message.of("system", f"step {i} of {count}")))
                t = time.perf_counter()
                s.snapshot(f"{kind} {i}")
                if kind == "same" and (i < reps or i % 50 == 0):
                    times.append(time.perf_counter() - t)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0] + _size(s)
            tracemalloc.stop()
            ratios[kind] = (before, after)
        store.close()
    same, distinct = ratios["same"], ratios["distinct"]
    return {"snapshot_seconds": round(statistics.median(times), 6),
            "snapshot_memory_ratio_1000": round(same[1] / same[0], 4),
            "snapshot_memory_ratio_1000_distinct": round(distinct[1] / distinct[0], 4),
            "snapshot_memory_mb": {"session": round(same[0] / 2**20, 2),
                                   "with_1000": round(same[1] / 2**20, 2),
                                   "with_1000_distinct": round(
                                       (distinct[1] - distinct[0] + same[0]) / 2**20, 2)},
            "snapshot_context_tokens": tokens}


def _size(s: Session) -> int:
    """Bytes of the session's context: every message's text and dict (deep, shared once)."""
    seen: set[int] = set()
    total = 0
    for m in s.context.messages():
        for obj in (m, m.data, m.meta, *m.data.values()):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += sys.getsizeof(obj)
    return total


def stream_cpu(seconds: float = 6.0, tps: float = 100.0) -> dict[str, Any]:
    """CPU of the asking thread per second of a 100 tokens/s stream, through IPython display."""
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.display_pub = CapturingDisplayPublisher()
    with Simulator(port=0, record=False) as sim:
        s = Session("stream", Settings(base_url=sim.url, api_key="sk-bench", compact_mode="off",
                                       retry_base=0.01, think=False), store=Store(":memory:"))
        # A summary reply is about a quarter of the material: size the material so the reply
        # streams for about ``seconds`` at ``tps``.
        material = " ".join(f"Sentence {i} mentions value {i * 7} and file src/mod_{i}.py."
                            for i in range(int(seconds * tps * 4 / 12)))
        s.ask(material)
        sim.configure(tps=tps)
        display_cpu = [0.0]
        view = StreamView()

        def on_delta(event: StreamEvent) -> None:
            t = time.thread_time()
            view(event)
            display_cpu[0] += time.thread_time() - t

        cpu = time.thread_time()
        wall = time.perf_counter()
        turn = s.ask("Please summarise what I told you.", on_delta=on_delta)
        t = time.thread_time()
        view.close(status_line(turn))
        display_cpu[0] += time.thread_time() - t
        wall = time.perf_counter() - wall
        cpu = time.thread_time() - cpu
        sim.configure(tps=None)
    outputs = len(shell.display_pub.outputs)
    shell.display_pub = shell.display_pub.__class__()
    return {"stream_cpu_fraction_100tps": round(display_cpu[0] / wall, 4),
            "stream_cpu_fraction_client_thread": round(cpu / wall, 4),
            "stream_seconds": round(wall, 2), "stream_tokens": turn.usage.completion_tokens,
            "stream_display_updates": outputs}


_LOAD_EXT = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t = time.perf_counter()
shell.run_line_magic("load_ext", "kimi_magic")
print(time.perf_counter() - t)
"""
_IMPORT_OPENAI = """
import time
t = time.perf_counter()
import openai
print(time.perf_counter() - t)
"""


def imports(reps: int = 5) -> dict[str, Any]:
    """``%load_ext kimi_magic`` over ``import openai``, each in fresh interpreters."""
    env = {"KIMI_MAGIC_STORE": ":memory:", "PATH": "/usr/bin:/bin",
           "HOME": tempfile.gettempdir()}

    def run(code: str) -> float:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env)
        return float(out.stdout.strip().splitlines()[-1])

    ours, theirs = [], []
    for _ in range(reps):
        ours.append(run(_LOAD_EXT))
        theirs.append(run(_IMPORT_OPENAI))
    return {"import_ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
            "load_ext_seconds": round(statistics.median(ours), 4),
            "import_openai_seconds": round(statistics.median(theirs), 4)}


def nodelay() -> dict[str, Any]:
    """Whether the simulator's sockets have TCP_NODELAY (else replies stall ~40 ms)."""
    import socket

    with Simulator(port=0, record=False) as sim:
        host, port = sim.url.split("//")[1].split("/")[0].split(":")
        found: dict[str, Any] = {}
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk\r\n\r\n")
            conn.recv(65536)
            for server_conn in list(sim._connections):
                found["server_nodelay"] = bool(server_conn.getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return found

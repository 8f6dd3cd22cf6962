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


def overhead(reps: int = 15) -> dict[str, Any]:
    """Median seconds per turn, ours vs raw SDK, interleaved, at each context size."""
    out: dict[str, Any] = {"overhead_ratio_by_context": {}, "raw_sdk_seconds_by_context": {},
                           "ours_seconds_by_context": {}, "context_tokens": {}}
    with Simulator(port=0, record=False) as sim, tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite")
        settings = Settings(base_url=sim.url, api_key="sk-bench", compact_mode="off",
                            retry_base=0.01)
        s = Session("overhead", settings, store=store)
        raw = openai.OpenAI(base_url=sim.url, api_key="sk-bench", max_retries=0)
        for label, size in CONTEXTS.items():
            _grow(s, size, sim)
            base = s.snapshot(f"base {label}")
            messages = s.context.wire()
            out["context_tokens"][label] = count_prompt_tokens(messages)
            ours, theirs = [], []
            for i in range(reps + 1):
                prompt = PROMPT.format(i=i)
                gc.collect()
                view = StreamView(display=_no_display)
                t = time.perf_counter()
                turn = s.ask(prompt, on_delta=view)
                view.close(status_line(turn))
                spent = time.perf_counter() - t
                # Back to the fixed context (untimed): a new snapshot of the state left, then
                # rollback, so every repetition sends the same number of tokens.
                s.snapshot(f"rep {label} {i}")
                s.rollback(base.id)
                gc.collect()
                t = time.perf_counter()
                stream = raw.chat.completions.create(
                    model=settings.model, messages=[*messages, {"role": "user", "content": prompt}],
                    max_completion_tokens=32_768, stream=True,
                    stream_options={"include_usage": True})
                text = [c.choices[0].delta.content for c in stream
                        if c.choices and c.choices[0].delta.content]
                raw_spent = time.perf_counter() - t
                assert text
                if i:  # the first pair warms connections and the prompt cache
                    ours.append(spent)
                    theirs.append(raw_spent)
            ratio = statistics.median(ours) / statistics.median(theirs)
            out["overhead_ratio_by_context"][label] = round(ratio, 3)
            out["raw_sdk_seconds_by_context"][label] = round(statistics.median(theirs), 5)
            out["ours_seconds_by_context"][label] = round(statistics.median(ours), 5)
        store.close()
    out["overhead_ratio_200k"] = out["overhead_ratio_by_context"]["200k"]
    return out


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

"""Facts kept by compress with a real (small) model: llama.cpp's server with gemma-3 270M.

The early rounds of the scripted session (the six planted facts, with short pasted code and
logs, a few thousand tokens) are compressed by the real model. ``without_check`` is the share
of planted facts in the model's own summary; ``with_check`` the share after the fact check.
"""

from __future__ import annotations

import importlib.util
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from kimi_magic import Session, Settings, Store
from kimi_magic.wire.events import ContentDelta

from . import workload

ROOT = Path(__file__).resolve().parent.parent
#: Where the llama venv lives on the development machine when KIMI_LLAMA_PYTHON is unset.
DEV_PYTHON = "/tmp/llvenv/bin/python"


def _server_module() -> Any:
    spec = importlib.util.spec_from_file_location("llama_server", ROOT / "scripts" /
                                                  "llama_server.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("scripts/llama_server.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def facts_retained(rounds: int = 6, filler_tokens: int = 120,
                   window: int = 3072) -> dict[str, Any]:
    """``{"with_check", "without_check", ...}``, or nulls and a ``reason``.

    The first six planted facts are the figures, ids and path the fact check looks for.
    """
    if not os.environ.get("KIMI_LLAMA_PYTHON") and Path(DEV_PYTHON).exists():
        os.environ["KIMI_LLAMA_PYTHON"] = DEV_PYTHON
    try:
        llama = _server_module()
        python = llama.find_python()
    except Exception as exc:  # the helper itself is missing or broken
        return {"with_check": None, "without_check": None, "reason": str(exc)}
    if python is None:
        return {"with_check": None, "without_check": None,
                "reason": "llama_cpp is not installed (set KIMI_LLAMA_PYTHON)"}
    cache = Path(tempfile.gettempdir()) / "kimi_magic_llama"
    started = time.perf_counter()
    try:
        server = llama.LlamaServer(python, llama.model_file(python, cache),
                                   log=cache / "server.log").start()
    except Exception as exc:
        return {"with_check": None, "without_check": None, "reason": f"llama server: {exc}"}
    try:
        model_id = next(iter(server.models()["data"]))["id"]
        # A small window bounds the summary's length (the cap is what is left of the window):
        # a 270M model on two cores otherwise writes for minutes.
        settings = Settings(base_url=server.url, api_key="sk-local", model=model_id,
                            server="llama.cpp", compact_mode="off", max_completion_tokens=48,
                            retry_base=0.1, timeout=300,
                            model_overrides={model_id: {"context_length": window}})
        s = Session("llama", settings, store=Store(":memory:"))
        rng = random.Random(workload.SEED)
        for i in range(rounds):
            body = workload._code(rng, filler_tokens, i) if i % 2 else workload._log(
                rng, filler_tokens, i)
            s.ask(f"Context for the task, round {i + 1}. {workload.FACTS[i].sentence} Here is what "
                  f"I have so far:\n\n{body}\n\nPlease keep this in mind.")
        raw: list[str] = []
        context_tokens = s.tokens()
        result = s.compress(keep_rounds=0, on_delta=lambda event: raw.append(event.text)
                            if isinstance(event, ContentDelta) else None)
        raw_text = "".join(raw)
        planted = [f.value for f in workload.FACTS[:rounds]]
        without = sum(v in raw_text for v in planted) / len(planted)
        # The checked summary is the model's text plus the facts the check restored; it is
        # measured even when compress keeps the rounds because it came out no smaller.
        checked = "\n".join([raw_text, *result.check.restored])
        with_check = sum(v in checked for v in planted) / len(planted)
        return {"with_check": round(with_check, 4), "without_check": round(without, 4),
                "kept_rounds": result.kept, "model": model_id, "context_tokens": context_tokens,
                "summary_tokens": result.summary_tokens if result.kept else result.tokens_after,
                "facts_checked": result.check.facts,
                "restored": len(result.check.restored), "dropped": len(result.check.dropped),
                "seconds": round(time.perf_counter() - started, 1)}
    except Exception as exc:
        return {"with_check": None, "without_check": None, "reason": f"{type(exc).__name__}: "
                f"{exc}"}
    finally:
        server.stop()

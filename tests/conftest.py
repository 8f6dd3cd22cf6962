"""Shared fixtures: a simulator per test module, a stored session, and a real IPython shell.

- ``sim``: a ``Simulator`` started once per module; before each test its config is back to
  the defaults and its pending failures and recorded requests are cleared.
- ``session``: a ``Session`` on a fresh store file in ``tmp_path``, talking to ``sim`` with
  tiny retry backoffs.
- ``ipython``: an ``InteractiveShell`` with ``%load_ext kimi_magic``, the store in
  ``tmp_path`` (``KIMI_MAGIC_STORE``) and ``KimiMagic`` pointed at ``sim`` (tiny retry
  backoff and batch polling interval).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimi_magic import Session, Settings, Store
from kimi_magic.simulator import SimConfig, Simulator

#: The API key every shared fixture uses; tests may scan outputs and files for it.
TEST_KEY = "sk-fixture-KEY-0123456789abcdef"


@pytest.fixture(scope="module")
def _sim_server() -> Iterator[Simulator]:
    with Simulator(port=0) as server:
        yield server


@pytest.fixture
def sim(_sim_server: Simulator) -> Iterator[Simulator]:
    """The module's simulator, reset to defaults with no pending failures or old requests."""
    reset_simulator(_sim_server)
    yield _sim_server
    reset_simulator(_sim_server)


def reset_simulator(server: Simulator) -> None:
    server.config = SimConfig()
    with server._lock:  # no public "forget the injected failures" call
        server._failures.clear()
    server.clear_requests()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture
def settings(sim: Simulator) -> Settings:
    return Settings(base_url=sim.url, api_key=TEST_KEY, retry_base=0.01)


@pytest.fixture
def session(settings: Settings, store_path: Path) -> Iterator[Session]:
    s = Session("t", settings, store=Store(store_path))
    yield s
    s.store.close()


@pytest.fixture
def ipython(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A real shell with kimi_magic loaded, its store in tmp_path, talking to ``sim``."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("KIMI_MAGIC_STORE", str(tmp_path / "store.sqlite"))
    monkeypatch.setenv("MOONSHOT_API_KEY", TEST_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", sim.url)
    shell = InteractiveShell.instance()
    if "KimiMagic" in shell.magics_manager.registry:
        shell.run_line_magic("unload_ext", "kimi_magic")
    # %config writes into the singleton shell's config: start each test from none of it.
    shell.config.pop("KimiMagic", None)
    shell.run_line_magic("load_ext", "kimi_magic")
    shell.run_line_magic("config", f"KimiMagic.base_url = {sim.url!r}")
    shell.run_line_magic("config", "KimiMagic.retry_base = 0.01")
    if shell.magics_manager.registry["KimiMagic"].has_trait("batch_poll_seconds"):
        shell.run_line_magic("config", "KimiMagic.batch_poll_seconds = 0.05")
    yield shell
    if "KimiMagic" in shell.magics_manager.registry:
        shell.run_line_magic("unload_ext", "kimi_magic")
    shell.config.pop("KimiMagic", None)


class PriceTool:
    """A notebook tool the simulator calls when a prompt names ``lookup_price``."""

    specs = [{"type": "function", "function": {
        "name": "lookup_price", "description": "Price of an item.",
        "parameters": {"type": "object", "properties": {"item": {"type": "string"}},
                       "required": ["item"]}}}]
    max_steps = 4

    def run(self, call: dict) -> str:
        item = json.loads(call["function"]["arguments"])["item"]
        return f"{item} costs 4.20 EUR"

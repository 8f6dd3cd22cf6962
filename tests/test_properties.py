"""Property-based tests of the context lifecycle: random sequences of turns (plain, with tool
calls, re-run cells), pins, snapshots, rollbacks, truncations, compressions, resets and kernel
restarts against the simulator, checking after every step that

- the system prompt is always first;
- no tool message is orphaned (each answers an earlier assistant tool call in the request);
- a rollback restores the exact bytes the context had when the snapshot was taken;
- the store round-trips: a session reopened from the file sends the same bytes;
- everything archived is recallable, and whatever truncate/compress/reset/re-run removed from
  the context is in the archive (each prompt carries a distinctive word, ``kw<n>zeta``).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import PriceTool
from kimi_magic import Options, Session, Settings, Store
from kimi_magic.core.context import Message, Pin
from kimi_magic.simulator import Simulator

settings.register_profile(
    "lifecycle", max_examples=40, stateful_step_count=14, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORD = re.compile(r"kw\d+zeta")


class Lifecycle(RuleBasedStateMachine):
    sim: Simulator  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kimi-props-"))
        self.path = self.dir / "store.sqlite"
        self.settings = Settings(base_url=self.sim.url, api_key="sk-props", retry_base=0.01,
                                 keep_rounds=2)
        self.session = Session("p", self.settings, store=Store(self.path))
        self.n = 0
        self.taken: dict[int, str] = {}  # snapshot id -> wire bytes at that moment

    def teardown(self) -> None:
        self.session.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------
    def wire(self) -> str:
        return json.dumps(self.session.context.wire())

    def words(self) -> set[str]:
        return set(WORD.findall(self.wire()))

    def removing(self, op: Any) -> None:
        """Run ``op``; whatever it takes out of the context must be recallable."""
        before = self.words()
        op()
        for word in sorted(before - self.words()):
            hits = self.session.recall(word, limit=50)
            assert any(word in h["text"] for h in hits), word

    # -- rules -------------------------------------------------------------------------------
    @rule(tool=st.booleans(), cell=st.sampled_from([None, None, "c1", "c2"]))
    def ask(self, tool: bool, cell: str | None) -> None:
        self.n += 1
        prompt = f"Note fact-{self.n}: kw{self.n}zeta is {self.n * 7}."
        if tool:
            self.removing(lambda: self.session.ask(
                f"Use lookup_price for 'pear'. {prompt}", tools=PriceTool(),
                options=Options(tools=PriceTool.specs), cell_id=cell))
        else:
            self.removing(lambda: self.session.ask(prompt, cell_id=cell))

    @rule(text=st.sampled_from(["Use pathlib.", "Prefer polars.", "Dates are ISO 8601."]))
    def pin(self, text: str) -> None:
        self.session.set_pin(Pin("style", "text", "test", Message.of("system", text)))

    @rule()
    def snapshot(self) -> None:
        snap = self.session.snapshot()
        self.taken[snap.id] = self.wire()

    @precondition(lambda self: bool(self.taken))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.taken)))
        left_behind = self.wire()
        count = len(self.session.snapshots)
        self.session.rollback(sid)
        assert self.wire() == self.taken[sid]
        # A snapshot of the state left behind is taken only when no snapshot holds it yet.
        for left in self.session.snapshots[count:]:
            assert left.label.startswith("before rollback")
            self.taken[left.id] = left_behind

    @rule(keep=st.integers(0, 3), by_tokens=st.booleans())
    def truncate(self, keep: int, by_tokens: bool) -> None:
        if by_tokens:
            self.removing(lambda: self.session.truncate(keep_tokens=keep * 60))
        else:
            self.removing(lambda: self.session.truncate(keep_rounds=keep))

    @precondition(lambda self: len(self.session.context.rounds) > 1)
    @rule(keep=st.integers(0, 2))
    def compress(self, keep: int) -> None:
        keep = min(keep, len(self.session.context.rounds) - 1)
        before, count = self.wire(), len(self.session.snapshots)
        self.removing(lambda: self.session.compress(keep_rounds=keep))
        if len(self.session.snapshots) == count:
            # A summary not smaller than the rounds is not used: nothing changed.
            assert self.wire() == before
            return
        self.taken[self.session.snapshots[-1].id] = json.dumps(
            self.session.snapshots[-1].context.wire())

    @rule()
    def reset(self) -> None:
        self.removing(self.session.reset)

    @rule()
    def restart(self) -> None:
        wire = self.wire()
        self.session.store.close()
        self.session = Session("p", self.settings, store=Store(self.path))
        assert self.wire() == wire
        for snap in self.session.snapshots:
            assert json.dumps(snap.context.wire()) == self.taken[snap.id]

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def system_prompt_first(self) -> None:
        first = self.session.context.wire()[0]
        assert first == {"role": "system", "content": self.settings.system}

    @invariant()
    def no_orphaned_tool_messages(self) -> None:
        called: set[str] = set()
        for m in self.session.context.wire():
            called.update(c["id"] for c in m.get("tool_calls") or ())
            if m["role"] == "tool":
                assert m["tool_call_id"] in called, m
        # and every tool call is answered before the next user message
        for r in self.session.context.rounds:
            ids = [c["id"] for m in r for c in m.tool_calls]
            answered = [m.data["tool_call_id"] for m in r if m.role == "tool"]
            assert sorted(ids) == sorted(answered)

    @invariant()
    def store_round_trips(self) -> None:
        store = Store(self.path)
        try:
            reopened = Session("p", self.settings, store=store)
            assert json.dumps(reopened.context.wire()) == self.wire()
            assert len(reopened.snapshots) == len(self.session.snapshots)
        finally:
            store.close()

    @invariant()
    def archive_is_recallable(self) -> None:
        for row in self.session.store.archived("p")[-6:]:
            for word in set(WORD.findall(row["text"])):
                hits = self.session.recall(word, limit=50)
                assert any(h["id"] == row["id"] for h in hits), (word, row["id"])


def test_lifecycle_properties(sim: Simulator) -> None:
    Lifecycle.sim = sim
    run_state_machine_as_test(Lifecycle, settings=settings.get_profile("lifecycle"))

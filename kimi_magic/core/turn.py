"""One turn of the conversation: ``Ask`` prepares, converses (with the tool loop) and records.

Prepare: the context to build on (without the round an earlier run of the same cell made),
pins re-rendered, the model chosen, compaction first if the request would not fit. Converse:
call the model, run the tools it asks for, call again, until it answers; a server that says
the context is too long gets one compaction and one retry. Record: messages, call row,
archive and head in one transaction, so a failed turn leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from ..wire.errors import KimiError
from ..wire.events import OnEvent, ToolResult
from ..wire.messages import assistant_message, is_web_search, prefix_message, tool_message
from ..wire.reply import Reply, Usage
from ..wire.request import Options, build_request
from . import models as model_table
from .accounting import layered
from .compaction import Compaction, nothing_to_shrink
from .context import Context, Message
from .conversation import Conversation
from .errors import SessionError
from .guard import CostRefused, output_cap, worst_cost
from .models import Model
from .text import counted


class Tools(Protocol):
    """What ``ask(tools=...)`` needs: schemas to send and a way to run one call."""

    specs: list[dict[str, Any]]
    max_steps: int

    def run(self, call: dict[str, Any]) -> str: ...


@dataclass
class Turn:
    """What one ``ask`` produced and cost."""

    text: str
    reasoning: str
    model: str
    usage: Usage
    cost: float | None
    seconds: float
    context_tokens: int
    window: int
    recorded: bool = True
    #: The round (1-based) an earlier run of the same notebook cell had made, if any.
    replaced: int | None = None
    #: The round (1-based) this turn was recorded as.
    round: int | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def exact(self) -> bool:
        return self.usage.exact

    @property
    def fill(self) -> float:
        return self.context_tokens / self.window if self.window else 0.0


def parses(text: str) -> bool:
    """Whether ``text`` is one JSON value (what ``--json`` promises the caller)."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def rerun_notice(replaced: int, followed: int, turn: Turn) -> str:
    """What re-running a notebook cell did with the turn its earlier run made (round
    ``replaced``, followed by ``followed`` later rounds): only what really happened.

    >>> t = Turn("", "", "m", Usage(), None, 0.0, 0, 1, round=3)
    >>> rerun_notice(3, 0, t)
    'Re-ran this cell: this answer replaces its earlier turn (round 3).'
    """
    if not turn.recorded:
        return (f"Re-ran this cell: its earlier turn (round {replaced}) stays in the context, "
                "as this turn was not recorded; this answer was asked without it.")
    if not followed:
        return f"Re-ran this cell: this answer replaces its earlier turn (round {replaced})."
    now = ""
    if turn.round == replaced + followed:  # no compaction renumbered the rounds meanwhile
        last = replaced + followed - 1
        now = f" (now round {replaced})" if followed == 1 else f" (now rounds {replaced}–{last})"
    later = ("the turn that followed it" if followed == 1
             else f"the {followed} turns that followed it")
    return (f"Re-ran this cell: its earlier turn (round {replaced}) was removed (archived, "
            f"recallable) and this answer is now round {turn.round}, at the end; {later}{now} "
            f"{'was' if followed == 1 else 'were'} answered against its old version.")


@dataclass
class Exchange:
    """One turn's calls in flight: what it adds to ``base`` and what it has cost so far."""

    base: Context
    new: list[Message]
    usage: Usage = field(default_factory=lambda: Usage(exact=True))
    cost: float | None = 0.0
    seconds: float = 0.0
    tool_log: list[dict[str, Any]] = field(default_factory=list)
    reply: Reply = field(default=None)  # type: ignore[assignment]  # set by the first call


class Ask:
    """One ``Session.ask``: call ``run()`` once, under the conversation's lock."""

    def __init__(self, conversation: Conversation, compaction: Compaction,
                 prompt: str | list[dict[str, Any]], *, model: str | None = None,
                 options: Options | None = None, once: bool = False,
                 cell_id: str | None = None,
                 on_delta: OnEvent | None = None,
                 tools: Tools | None = None) -> None:
        if isinstance(prompt, str) and not prompt.strip():
            raise SessionError("the prompt is empty: write it in the cell body")
        self.conversation = conversation
        self.compaction = compaction
        self.prompt = prompt
        self.requested = model
        self.options = replace(options) if options else Options()
        self.once = once
        self.cell_id = cell_id
        self.on_delta = on_delta
        self.tools = tools
        self.notices: list[str] = []

    def run(self) -> Turn:
        """Prepare, converse, record (unless ``once``); the turn."""
        c = self.conversation
        base, replaced, replaced_rounds = self.base()
        followed = len(c.context.rounds) - replaced if replaced else 0
        user = Message({"role": "user", "content": self.prompt},
                       {"cell_id": self.cell_id} if self.cell_id else {})
        # The tools schemas count against the window like the messages do.
        sent = c.accounting.tokens(base, user) + c.accounting.tools_tokens(self.options.tools)
        chosen = c.choice.choose(self.requested, sent, self.options, self.notices)
        self.options = c.choice.thinking(chosen, self.options, self.notices)
        cap = output_cap(chosen, c.choice.options(self.options, chosen), sent)
        c.guard.check("this turn", chosen, worst_cost(chosen, sent, cap),
                      f"~{sent:,} tokens in, up to {cap:,} out")
        base = self.compaction.fit(base, user, chosen, self.options, self.notices)
        ex = self.converse(chosen, base, user)
        turn = Turn(text=ex.new[-1].text, reasoning=ex.new[-1].reasoning, model=chosen.id,
                    usage=ex.usage, cost=ex.cost, seconds=ex.seconds, context_tokens=0,
                    window=chosen.context_length, recorded=not self.once, replaced=replaced,
                    tool_calls=ex.tool_log, notices=self.notices,
                    finish_reason=ex.reply.finish_reason)
        c.last_call = c.clock()
        cut = ex.reply.cut
        unkept = None
        if not turn.text.strip() and not ex.reply.tool_calls:
            # An empty reply would teach the next turns nothing and cost them tokens.
            unkept = ("The reply is empty", "was used up before any answer, by thinking",
                      "the model sent no text")
        elif self.options.json and not parses(turn.text):
            # --json promises a JSON value: keeping one that does not parse would leave a
            # turn recorded whose cell failed.
            unkept = ("The reply is not valid JSON", "cut it short",
                      "the model's text does not parse")
        if unkept:
            what, capped, otherwise = unkept
            # The cap this turn asked for, whether --max-tokens, the setting or the default.
            why = (f"the output cap ({cap:,} tokens, --max-tokens) {capped}"
                   if cut else otherwise)
            self.notices.append(f"{what}: {why}. Nothing was recorded."
                                + (" Raise --max-tokens and re-run." if cut else ""))
            turn.recorded = False
            self.record_call(ex)  # only what the call cost is kept
        elif cut:
            self.notices.append(f"The reply hit the output cap ({cap:,} tokens, "
                                "--max-tokens) and is cut short; raise --max-tokens for all of "
                                "it.")
        if turn.recorded:
            self.record(ex, replaced_rounds)
            turn.round = len(c.context.rounds)
        if replaced:
            self.notices.insert(0, rerun_notice(replaced, followed, turn))
        if turn.recorded:
            line = self.compaction.after_turn(chosen)
            if line:
                turn.notices.extend(line.splitlines())  # a notice per compaction stage
        # After compaction: the status line under its notice says how full the window is now,
        # not before the notice's own "5,432 → 208 tokens".
        turn.context_tokens = c.tokens()
        c.events.notify("turn", turn)
        return turn

    # -- prepare --------------------------------------------------------------------------------
    def base(self) -> tuple[Context, int | None, list[list[Message]]]:
        """The context to build on, pins refreshed, without this cell's earlier round.

        Returns the context, the replaced round's number (1-based) and that round.
        """
        c = self.conversation
        base, replaced, replaced_rounds = self.without_cell(c.context)
        if c.refresh_pins is not None:
            refreshed, pin_notices = c.refresh_pins(base)
            self.notices += pin_notices
            if refreshed is not base and base is c.context:
                # Re-rendered pins describe the data, not the conversation: persist them
                # now (a failed call or --once keeps them too) and go on building on the
                # live context, so compacting before sending still applies.
                refreshed = c.commit(refreshed)
                c.events.notify("pin", None)
            base = refreshed
        return base, replaced, replaced_rounds

    def without_cell(self, ctx: Context) -> tuple[Context, int | None, list[list[Message]]]:
        """``ctx`` without the round an earlier run of this notebook cell produced."""
        if not self.cell_id:
            return ctx, None, []
        rs = ctx.rounds
        for i, r in enumerate(rs):
            if r[0].meta.get("cell_id") == self.cell_id:
                kept = tuple(m for j, rr in enumerate(rs) if j != i for m in rr)
                # Re-running the last cell (the usual case) keeps the stored chain and the
                # cached prefix; replacing an earlier round starts a new chain.
                node = None
                if i == len(rs) - 1 and kept and ctx.node is not None:
                    node = self.conversation.store.ancestor(ctx.node, len(ctx.history) - len(kept))
                return replace(ctx, history=kept, node=node), i + 1, [r]
        return ctx, None, []

    # -- converse -------------------------------------------------------------------------------
    def converse(self, chosen: Model, base: Context, user: Message) -> Exchange:
        """Call the model (and run its tools, step by step) until it gives a final answer."""
        c = self.conversation
        ex = Exchange(base=base, new=[user])
        messages = list(base.wire()) + [user.data]
        opts, tools, on_delta = self.options, self.tools, self.on_delta
        steps = 0
        while True:
            local = ex.base.tokens + sum(m.tokens for m in ex.new)
            was_current = ex.base is c.context
            sent = c.accounting.tokens(ex.base, *ex.new) + c.accounting.tools_tokens(opts.tools)
            if steps:
                self.check_step(chosen, ex, opts, sent, steps)
            reply = self.call(chosen, messages, opts, ex.base, ex.new, sent)
            if was_current and ex.base is not c.context:
                # The server refused the length and call() compacted and retried: the turn
                # now extends the compacted context, not the one we started from.
                ex.base = c.context
            self.learn(ex, opts, reply)
            usage = c.accounting.usage(reply, local)
            cost = c.accounting.cost(chosen, usage)
            ex.usage.add(usage)
            ex.cost = None if cost is None or ex.cost is None else ex.cost + cost
            ex.seconds += reply.seconds
            ex.reply = reply
            assistant = assistant_message(reply.message, opts.prefix)
            # Usage rides in meta (never sent) so exports can show what each reply cost.
            ex.new.append(Message(assistant, {"model": chosen.id, "cost": cost,
                                              "usage": asdict(usage)}))
            if reply.usage is not None:
                c.accounting.generated_reply(ex.new[-1], reply.usage.completion_tokens)
            messages.append(assistant)
            if not (tools and reply.wants_tools):
                break
            steps += 1
            if steps > tools.max_steps:
                raise SessionError(f"the tool loop passed its limit of {tools.max_steps} "
                                   "steps; nothing was recorded")
            opts = replace(opts, prefix=None)
            for call in reply.tool_calls:
                result = tools.run(call)
                ex.tool_log.append({"call": call, "result": result})
                msg = tool_message(call, result)
                ex.new.append(Message(msg))
                messages.append(msg)
                if on_delta:
                    on_delta(ToolResult(msg["name"], result))
        searches = sum(1 for t in ex.tool_log if is_web_search(t["call"]))
        if searches:
            # Billed per call on top of tokens; kept in the turn's cost.
            web_usd = searches * model_table.WEB_SEARCH_USD
            ex.cost = None if ex.cost is None else ex.cost + web_usd
            self.notices.append(f"$web_search: {counted(searches, 'call')}, "
                                f"billed ${model_table.WEB_SEARCH_USD} each (${web_usd:.3f}, "
                                "included in the cost)")
        return ex

    def check_step(self, chosen: Model, ex: Exchange, opts: Options, sent: int,
                   step: int) -> None:
        """The cost guard again before each request of the tool loop after the first: each
        one resends the turn so far, tool results included, and can cost far more than the
        first. A refusal records the cost of the requests already made, not the half turn."""
        c = self.conversation
        cap = output_cap(chosen, c.choice.options(opts, chosen), sent)
        try:
            c.guard.check(f"tool step {step} of this turn", chosen,
                          worst_cost(chosen, sent, cap),
                          f"~{sent:,} tokens in, up to {cap:,} out", pending=ex.cost or 0.0)
        except CostRefused as err:
            self.record_call(ex)
            raise CostRefused(f"{err} (this turn's first {counted(step, 'request')} and its tools "
                              "ran, their cost is recorded; the turn is not)") from None

    def call(self, model: Model, messages: list[dict[str, Any]], opts: Options, base: Context,
             new: list[Message], sent: int) -> Reply:
        """One request; on the server's token-limit error, compact once and retry."""
        c = self.conversation
        full = c.choice.options(opts, model)
        body = build_request(model, messages, full, sent, c.client.detect_server())
        try:
            return c.client.chat(body, self.on_delta)
        except KimiError as err:
            if err.kind == "token_limit" and not base.history:
                # Compressing cannot help: say what can.
                err.advice = nothing_to_shrink(model)
                err.refresh()
            if err.kind != "token_limit" or c.settings.compact_mode == "off" or len(new) > 1:
                raise
            if not base.history or base is not c.context:
                raise
        # The server counted more than we estimated: compact once and try again.
        self.notices.append("The server said the context is too long; compacted and retried "
                            "once.")
        c.compact(model, reason="token limit from the server")
        messages[:] = list(c.context.wire()) + [new[0].data]
        est = c.accounting.tokens(c.context, new[0])
        body = build_request(model, messages, full, est, c.client.detect_server())
        return c.client.chat(body, self.on_delta)

    def learn(self, ex: Exchange, opts: Options, reply: Reply) -> None:
        """Learn from the server's count of the prompt just sent: the base context, the
        turn's messages so far, a partial-mode prefix, and the tools schemas (kept apart)."""
        if reply.usage is None or not reply.usage.exact:
            return
        sent = list(layered(ex.base)) + [("history", m) for m in ex.new]
        if opts.prefix is not None:
            sent.append(("history", Message(prefix_message(opts.prefix))))
        self.conversation.accounting.learn(sent, reply.usage.prompt_tokens, opts.tools)

    # -- record ---------------------------------------------------------------------------------
    def record_call(self, ex: Exchange) -> None:
        """Keep only what a turn that adds nothing to the context cost (its call row)."""
        c = self.conversation
        row = c.accounting.call("chat", ex.reply.model, ex.usage, ex.cost, ex.seconds,
                                self.cell_id)
        with c.store.transaction() as conn:
            c.accounting.write(c.store, conn, c.name, [row])
        c.accounting.remember(c.name, [row])

    def record(self, ex: Exchange, replaced_rounds: list[list[Message]]) -> None:
        """Commit the turn — messages, call row, archive of a replaced round, head — at once."""
        c = self.conversation
        acc = c.accounting
        row = acc.call("chat", ex.reply.model, ex.usage, ex.cost, ex.seconds, self.cell_id)
        with c.store.transaction() as conn:
            base = c.store.ensure_chain(conn, ex.base)
            node = c.store.append(conn, base.node if base.history else None, ex.new)
            after = replace(base.append(*ex.new), node=node)
            if replaced_rounds:
                c.store.archive(conn, c.name, "replaced", replaced_rounds)
            row["context_tokens"] = acc.tokens(after)
            acc.write(c.store, conn, c.name, [row])
            c.context = after
            c.store.save_head(conn, c.name, after, c.settings.model, c.state())
        acc.remember(c.name, [row])

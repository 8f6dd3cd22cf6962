"""Keeping the context inside the window: ``Compaction``.

The rolling policy compacts in one large step once the context passes the threshold (and
before sending a request that would not fit): snapshot first, then compress (a summary with
a fact check) or truncate, keeping the last rounds. Whatever leaves the context is archived,
so ``recall`` can find it again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..wire.errors import KimiError
from ..wire.events import OnEvent
from ..wire.request import Options, build_request
from . import compress as compression
from . import tokens
from .context import Context, Message, Snapshot
from .conversation import Conversation
from .errors import SessionError
from .guard import CostRefused, worst_cost
from .models import Model


@dataclass
class CompressResult:
    """What one compress did: tokens before and after, the fact check, its snapshot, cost."""

    tokens_before: int
    tokens_after: int
    rounds: int
    check: compression.CheckResult
    snapshot: Snapshot
    cost: float | None

    def line(self) -> str:
        restored = len(self.check.restored)
        return (f"Compressed {self.rounds} rounds: {self.tokens_before:,} → "
                f"{self.tokens_after:,} tokens; of {self.check.facts} facts (numbers, ids, "
                f"paths, errors) the summary lacked {len(self.check.missing)}, and the fact "
                f"check restored {restored} verbatim"
                + (f", {len(self.check.dropped)} over budget (recallable)"
                   if self.check.dropped else "")
                + f"; snapshot #{self.snapshot.id} taken before.")


class Compaction:
    """Compaction policy and operations of one conversation."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    # -- policy -------------------------------------------------------------------------------
    def after_turn(self, model: Model) -> str | None:
        """Past the threshold, snapshot and compact in one large step; the notice, if any."""
        c = self.conversation
        threshold = c.settings.threshold(model.context_length, model.compact_at)
        if c.settings.compact_mode == "off" or c.tokens() < threshold:
            return None
        try:
            return self.compact(model, reason=f"context passed {threshold:,} tokens")
        except CostRefused as err:
            # The turn is recorded; only the compress call was refused: say so, keep all.
            return f"Auto-compress not run: {err}"

    def fit(self, base: Context, user: Message, model: Model, opts: Options,
            notices: list[str]) -> Context:
        """Compact before sending if estimate + output cap would not fit the window."""
        c = self.conversation
        need = c.accounting.estimate(base.tokens + user.tokens)
        cap = opts.max_completion_tokens or c.settings.max_completion_tokens or 4096
        floor = min(cap, model.context_length // 4)
        if need + floor <= model.context_length or c.settings.compact_mode == "off":
            return base
        if base is not c.context:
            return base
        notices.append(f"The context (~{need:,} tokens) would not fit {model.id}'s window "
                       f"with room to answer; compacting first.")
        # What compaction did (and whether it fell back to truncating) is part of the turn's
        # story: the user must see it, not just that it started.
        notices.append(self.compact(model, reason="before sending: would not fit"))
        return c.context

    def rounds_to_keep(self, rs: list[list[Message]], threshold: int) -> int:
        """``keep_rounds``, fewer if those rounds alone would fill half the threshold.

        At least one round is always compacted, or compaction would change nothing.
        """
        keep = min(self.conversation.settings.keep_rounds, len(rs) - 1)
        while keep > 0 and sum(m.tokens for r in rs[-keep:] for m in r) > threshold // 2:
            keep -= 1
        return keep

    # -- operations ---------------------------------------------------------------------------
    def compact(self, model: Model | None = None, reason: str = "") -> str:
        """Snapshot, then compress or truncate per ``settings.compact_mode``; one line back."""
        c = self.conversation
        with c.lock:
            before = c.tokens()
            model = model or c.model()
            rs = c.context.rounds
            if not rs:
                line = (f"The context (~{before:,} tokens) is over the threshold but holds no "
                        "history to compact: only the system prompt, pins and summary.")
                c.events.notify("notice", line)
                return line
            threshold = c.settings.threshold(model.context_length, model.compact_at)
            keep = self.rounds_to_keep(rs, threshold)
            if c.settings.compact_mode == "truncate":
                c.snapshot(f"auto: before truncate ({reason})" if reason else None, auto=True)
                dropped = self.truncate(keep)
                line = (f"Auto-truncated {dropped} rounds ({reason}): {before:,} → "
                        f"{c.tokens():,} tokens; archived for %kimi recall.")
            else:
                try:
                    result = self.compress(keep, model=c.settings.compact_model or model.id,
                                           auto=True)
                except CostRefused:
                    raise
                except (KimiError, SessionError) as err:
                    snap = c.snapshot("auto: before truncate (compress failed)", auto=True)
                    dropped = self.truncate(keep)
                    line = (f"Auto-compress failed ({err}); truncated {dropped} rounds instead: "
                            f"{before:,} → {c.tokens():,} tokens; %kimi rollback {snap.id} "
                            f"restores them (snapshot #{snap.id}).")
                else:
                    line = f"Auto-compacted ({reason}). " + result.line()
            c.events.notify("notice", line)
            return line

    def truncate(self, keep_rounds: int | None = None, keep_tokens: int | None = None) -> int:
        """Drop the oldest rounds (archived, recallable); system prompt and pins stay."""
        if keep_rounds is not None and keep_rounds < 0:
            raise SessionError("--keep-rounds must be 0 or more")
        if keep_tokens is not None and keep_tokens < 0:
            raise SessionError("--keep-tokens must be 0 or more")
        c = self.conversation
        with c.lock:
            rs = c.context.rounds
            if keep_tokens is not None:
                keep, total = 0, 0
                for r in reversed(rs):
                    total += sum(m.tokens for m in r)
                    if total > keep_tokens:
                        break
                    keep += 1
            else:
                keep = c.settings.keep_rounds if keep_rounds is None else keep_rounds
            keep = min(keep, len(rs))
            dropped = rs[: len(rs) - keep]
            if not dropped:
                return 0
            history = tuple(m for r in rs[len(rs) - keep:] for m in r)
            c.commit(replace(c.context, history=history), archive=("truncated", dropped),
                     new_history=True)
            c.events.notify("compact", {"dropped": len(dropped)})
            return len(dropped)

    def compress(self, keep_rounds: int | None = None, *, model: str | None = None,
                 on_delta: OnEvent | None = None,
                 auto: bool = False) -> CompressResult:
        """Summarise all but the last ``keep_rounds`` rounds, then restore lost facts.

        A snapshot is taken first; a failed call leaves the context untouched.
        """
        c = self.conversation
        keep = c.settings.keep_rounds if keep_rounds is None else keep_rounds
        if keep < 0:
            raise SessionError("--keep-rounds must be 0 or more")
        with c.lock:
            rs = c.context.rounds
            old = rs[: max(len(rs) - keep, 0)]
            if not old:
                raise SessionError(f"nothing to compress: {len(rs)} rounds, keeping the last "
                                   f"{keep}")
            ctx = c.context
            before = c.tokens()
            chosen = c.model(model)
            old_messages = [m for r in old for m in r]
            source = compression.source(ctx.summary, old_messages)
            replaced = sum(m.tokens for m in old_messages) + (
                ctx.summary.tokens if ctx.summary else 0)
            target = compression.target_tokens(replaced, c.settings.summary_tokens)
            cap = compression.output_cap(target, chosen.thinking == "always")
            messages = compression.in_context(ctx.wire(), len(rs) - len(old), target)
            sent = ctx.tokens + tokens.count_message(messages[-1])
            if sent * c.accounting.calibration + cap > chosen.context_length:
                # The whole context plus a summary would not fit: send just what it replaces.
                messages = compression.standalone(source, target)
                sent = sum(tokens.count_message(m) for m in messages)
                need = c.accounting.estimate(sent)
                if need + cap > chosen.context_length:
                    # Even that is too big for this model (a context an earlier turn grew on
                    # a larger window): summarise on the cheapest model whose window fits,
                    # rather than fail and lose the rounds to truncation.
                    bigger, _why = c.choice.pick(need, cap)
                    if need + cap <= bigger.context_length:
                        chosen = bigger
            worst = worst_cost(chosen, c.accounting.estimate(sent), cap)
            c.guard.check("compress", chosen, worst, f"{len(old)} rounds")
            opts = Options(think=False if chosen.thinking == "default" else None,
                           max_completion_tokens=cap)
            body = build_request(chosen, messages, opts, sent, c.client.detect_server())
            reply = c.client.chat(body, on_delta)
            u = c.accounting.usage(reply, sent)
            budget = c.settings.verbatim_budget
            text, result = compression.check(source, reply.content, budget)
            summary = compression.summary_message(text)
            history = tuple(m for r in rs[len(old):] for m in r)
            snap = c.snapshot("auto: before compress" if auto else None, auto=auto)
            cost = c.accounting.cost(chosen, u)
            row = c.accounting.call("compress", chosen.id, u, cost, reply.seconds)
            c.commit(replace(ctx, summary=summary, history=history),
                     call=row, archive=("compressed", old), new_history=True)
            res = CompressResult(before, c.tokens(), len(old), result, snap, cost)
            c.events.notify("compact", res)
            return res

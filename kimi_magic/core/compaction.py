"""Keeping the context inside the window: ``Compaction``.

The rolling policy compacts in one large step once the context passes the threshold (and
before sending a request that would not fit), in up to three stages, each only if the one
before did not bring the context under the threshold, each with its one-line notice:

1. mask: in rounds older than ``keep_rounds``, large pasted blocks and tool results become
   one-line stubs (no model call; the prose around them stays);
2. compress: a summary with a fact check (kept only if it is smaller than what it replaces);
3. truncate: the oldest rounds leave, the last rounds stay.

A snapshot is taken before each stage, so rollback undoes it, and whatever leaves the
context is archived, so ``recall`` can find it again. The prefix changes only here, never
on an ordinary turn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..wire.errors import KimiError
from ..wire.events import OnEvent
from ..wire.request import Options, build_request
from . import compress as compression
from . import hints, tokens
from .context import Context, Message, Snapshot
from .conversation import Conversation
from .errors import SessionError
from .guard import CostRefused, usd, worst_cost
from .masking import Masked, mask_message
from .models import Model
from .text import counted


@dataclass
class MaskResult:
    """What one mask stage did: tokens before and after, the blocks masked, its snapshot."""

    tokens_before: int
    tokens_after: int
    masked: list[Masked]
    snapshot: Snapshot

    def line(self) -> str:
        n = len(self.masked)
        tools = sum(m.role == "tool" for m in self.masked)
        kinds = ([counted(n - tools, "pasted block")] if n - tools else []) + (
            [counted(tools, "tool result")] if tools else [])
        rounds = sorted({m.round for m in self.masked})
        where = (f"round {rounds[0]}" if len(rounds) == 1
                 else f"rounds {rounds[0]}–{rounds[-1]}")
        return (f"Masked {' and '.join(kinds)} of {where} without a model call: "
                f"{self.tokens_before:,} → {self.tokens_after:,} tokens; each stub names "
                f"its archive id for {hints.command('recall')} (e.g. {self.masked[0].mask_id}); "
                f"snapshot #{self.snapshot.id} taken before.")


@dataclass
class CompressResult:
    """What one compress did: tokens before and after, the fact check, its snapshot, cost.

    ``kept`` is true when the summary (with the facts it restored) was not smaller than the
    rounds it would replace: the rounds stayed, only the call was recorded, and ``snapshot``
    is None. ``masked`` is the mask stage that ran first, if it masked anything.
    """

    tokens_before: int
    tokens_after: int
    rounds: int
    check: compression.CheckResult
    snapshot: Snapshot | None
    cost: float | None
    kept: bool = False
    summary_tokens: int = 0
    replaced_tokens: int = 0
    masked: MaskResult | None = None

    def line(self) -> str:
        first = self.masked.line() + " " if self.masked else ""
        if self.kept or self.snapshot is None:
            return first + (
                f"Compress kept the original {counted(self.rounds, 'round')}: the summary with its "
                f"restored facts came to {self.summary_tokens:,} tokens, not fewer than the "
                f"{self.replaced_tokens:,} tokens it would replace, so nothing else changed "
                f"(the call cost {usd(self.cost)}).")
        restored = len(self.check.restored)
        return first + (
            f"Compressed {counted(self.rounds, 'round')}: {self.tokens_before:,} → "
            f"{self.tokens_after:,} tokens; of {self.check.facts} facts (numbers, ids, "
            f"paths, errors) the summary lacked {len(self.check.missing)}, and the fact "
            f"check restored {restored} verbatim"
            + (f", {len(self.check.dropped)} over budget (recallable)"
               if self.check.dropped else "")
            + f"; snapshot #{self.snapshot.id} taken before.")


def nothing_to_shrink(model: Model) -> str:
    """What to do when the prompt alone is over the window: compaction cannot help."""
    return (f"There is no history for {hints.command('compress')} to shrink: the prompt, "
            f"system prompt and pins alone exceed {model.id}'s {model.context_length:,}-token "
            "window. Shorten or split the prompt, unpin large pins, or pick a model with a "
            "larger window.")


def check_fits_alone(need: int, model: Model) -> None:
    """Refuse a prompt that, with no history to compact, is over the window by itself.

    The server would only refuse it (or, on a server whose window is larger than the one we
    know, answer it with a one-token cap: an empty reply, paid for).
    """
    if need >= model.context_length:
        raise KimiError("token_limit", f"~{need:,} tokens, not sent",
                        advice=nothing_to_shrink(model))


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
        if not base.history:  # nothing to compact: "compacting first" would be untrue
            check_fits_alone(need, model)
            return base
        if base is not c.context:
            return base
        notices.append(f"The context (~{need:,} tokens) would not fit {model.id}'s window "
                       f"with room to answer; compacting first.")
        # What compaction did (and whether it fell back to truncating) is part of the turn's
        # story: the user must see it, not just that it started; one notice per stage.
        # In the units of c.tokens() (calibrated), as the stages compare against it.
        room = model.context_length - floor - c.accounting.estimate(user.tokens)
        threshold = c.settings.threshold(model.context_length, model.compact_at)
        notices.extend(self.compact(model, reason="before sending: would not fit",
                                    target=max(0, min(threshold, room))).splitlines())
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
    def compact(self, model: Model | None = None, reason: str = "", *,
                target: int | None = None) -> str:
        """Mask, then compress or truncate per ``settings.compact_mode``, each stage only while
        the context is still at ``target`` tokens or more; one line per stage, newline-separated.

        ``target`` defaults to the threshold when the context is past it; under it (a server
        that counted more than we did, or a call by hand) every stage that applies runs.
        """
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
            if target is None:
                target = threshold if before >= threshold else 0
            why = f" ({reason})" if reason else ""
            lines: list[str] = []
            masked = self.mask(self.rounds_to_keep(rs, threshold), auto=True, reason=reason)
            if masked is not None:
                lines.append(f"Auto-masked{why}. " + masked.line())
            summarised = False
            if c.tokens() >= target and c.settings.compact_mode == "compress":
                stage, summarised = self.auto_compress(model, threshold, why, bool(lines))
                lines += stage
            # After a summary, truncating would only cut the rounds kept verbatim: done, unless
            # a real target (the window) still demands it.
            if c.tokens() >= target and (target > 0 or not summarised):
                rs = c.context.rounds
                keep = self.rounds_to_keep(rs, threshold) if rs else 0
                start = c.tokens()
                if len(rs) > keep:
                    snap = c.snapshot(f"auto: before truncate{why}", auto=True)
                    dropped = self.truncate(keep)
                    lines.append(f"Auto-truncated {counted(dropped, 'round')}{why}: {start:,} → "
                                 f"{c.tokens():,} tokens; archived for {hints.command('recall')}; "
                                 f"{hints.command('rollback', snap.id)} restores them "
                                 f"(snapshot #{snap.id}).")
            if not lines:
                lines.append(f"Nothing to compact{why}: the context (~{before:,} tokens) has "
                             "no round older than the last ones kept.")
            line = "\n".join(lines)
            for one in lines:
                c.events.notify("notice", one)
            return line

    def auto_compress(self, model: Model, threshold: int, why: str, after_mask: bool
                      ) -> tuple[list[str], bool]:
        """The compress stage of ``compact``: its line (or the truncation it fell back to),
        and whether a summary replaced the rounds.

        A refused compress call propagates unless the mask stage already changed something
        (then the refusal is that stage's notice and the turn goes on)."""
        c = self.conversation
        rs = c.context.rounds
        keep = self.rounds_to_keep(rs, threshold)
        try:
            result = self.summarise(keep, model=c.settings.compact_model or model.id,
                                    auto=True)
        except CostRefused as err:
            if not after_mask:
                raise
            return [f"Auto-compress not run: {err}"], False
        except (KimiError, SessionError) as err:
            before = c.tokens()
            snap = c.snapshot("auto: before truncate (compress failed)", auto=True)
            dropped = self.truncate(keep)
            return [f"Auto-compress failed ({err}); truncated {counted(dropped, 'round')} instead: "
                    f"{before:,} → {c.tokens():,} tokens; {hints.command('rollback', snap.id)} "
                    f"restores them (snapshot #{snap.id})."], False
        if result.kept:
            return [f"Auto-compress{why} not used. " + result.line()], False
        return [f"Auto-compacted{why}. " + result.line()], True

    def mask(self, keep_rounds: int | None = None, *, min_tokens: int | None = None,
             auto: bool = False, reason: str = "") -> MaskResult | None:
        """Stub large pasted blocks and tool results in all but the last ``keep_rounds``
        rounds (no model call); their text is archived. None when nothing was large enough.

        ``min_tokens`` defaults to ``settings.mask_tokens`` (None there: never mask).
        """
        c = self.conversation
        size = c.settings.mask_tokens if min_tokens is None else min_tokens
        keep = c.settings.keep_rounds if keep_rounds is None else keep_rounds
        if size is None or keep < 0:
            return None
        with c.lock:
            rs = c.context.rounds
            old = len(rs) - min(keep, len(rs))
            history: list[Message] = []
            masked: list[Masked] = []
            factor = c.accounting.factor()
            for i, r in enumerate(rs):
                for m in r:
                    if i < old:
                        m, found = mask_message(m, i + 1, size, factor)
                        masked += found
                    history.append(m)
            if not masked:
                return None
            before = c.tokens()
            snap = c.snapshot(f"auto: before mask ({reason})" if reason else "before mask",
                              auto=auto)
            c.commit(replace(c.context, history=tuple(history)),
                     archive=("masked", [[f.archive_message()] for f in masked]),
                     new_history=True)
            result = MaskResult(before, c.tokens(), masked, snap)
            c.events.notify("compact", result)
            return result

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
        """``%kimi compress``: the mask stage first (its stubs cost the summariser nothing to
        read and keep the pasted text whole in the archive), then a summary of what remains
        of all but the last ``keep_rounds`` rounds, with the fact check.
        """
        c = self.conversation
        keep = c.settings.keep_rounds if keep_rounds is None else keep_rounds
        if keep < 0:
            raise SessionError("--keep-rounds must be 0 or more")
        # The summariser auto-compaction uses (and the dry run names) writes these too.
        model = model or c.settings.compact_model
        with c.lock:
            if len(c.context.rounds) <= keep:
                return self.summarise(keep, model=model, on_delta=on_delta, auto=auto)
            c.model(model)  # an unknown model is refused before anything changes
            masked = self.mask(keep, auto=True, reason="before compress")
            try:
                result = self.summarise(keep, model=model, on_delta=on_delta, auto=auto)
            except BaseException:
                # A failed or refused compress leaves the context as it was, masks included
                # (the archive keeps their text; it only gains a duplicate).
                if masked is not None:
                    c.commit(masked.snapshot.context, new_history=True)
                raise
            result.masked = masked
            if masked is not None:
                result.tokens_before = masked.tokens_before
            return result

    def summarise(self, keep_rounds: int | None = None, *, model: str | None = None,
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
            cost = c.accounting.cost(chosen, u)
            row = c.accounting.call("compress", chosen.id, u, cost, reply.seconds)
            if summary.tokens >= replaced:
                # A summary that is not smaller would grow the context it should shrink:
                # keep the rounds, record only what the call cost.
                c.commit(ctx, call=row)
                res = CompressResult(before, c.tokens(), len(old), result, None, cost,
                                     kept=True, summary_tokens=summary.tokens,
                                     replaced_tokens=replaced)
                c.events.notify("compact", res)
                return res
            snap = c.snapshot("auto: before compress" if auto else None, auto=auto)
            c.commit(replace(ctx, summary=summary, history=history),
                     call=row, archive=("compressed", old), new_history=True)
            c.count_prefix()
            res = CompressResult(before, c.tokens(), len(old), result, snap, cost,
                                 summary_tokens=summary.tokens, replaced_tokens=replaced)
            c.events.notify("compact", res)
            return res

"""What things cost and where they stand: ``%kimi status``, ``cost``, ``models``, ``help``."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ...core import models as model_table
from ...wire.errors import KimiError
from ..display import dollars, spent, table_bundle
from .registry import COMMANDS, arg, command, ordered


@command("status")
def status(magic: Any, args: Any) -> None:
    """The current session: model and window, context fill by layer, cost, prompt cache.

    Plain %kimi shows the same.
    """
    st = magic.session.status()
    mark = "" if st["exact"] else "~"
    layers = ", ".join(f"{k} {mark}{v:,}" for k, v in st["layers"].items())
    warm = (f"warm for {st['cache_seconds_left'] / 60:.1f} more min"
            if st["cache_warm"] else "cold")
    rows = [
        ["session", st["session"]],
        ["model", f"{st['model_label']} (window {st['window']:,} {st['window_note']})"],
        ["context", f"{mark}{st['tokens']:,} tokens ({st['fill']:.1%}); "
                    f"{'exact (server count)' if st['exact'] else 'estimated'}"],
        ["layers", layers],
        ["auto-compact at", f"{st['threshold']:,} tokens ({magic.compact_mode})"],
        ["rounds / snapshots", f"{st['rounds']} / {st['snapshots']}"],
        ["pins", ", ".join(f"{n} ({k}, {mark}{t:,})" for n, k, t in st["pins"]) or "none"],
        ["cost", f"{spent(st['cost_total'], st['priced'])} total, last "
                 f"{_price(st['cost_last'])}"],
        ["prompt cache", f"{st['cache_hit_rate']:.0%} hit rate; {warm}"],
        ["next turn input", f"{_price(st['next_turn_warm'])} warm / "
                            f"{_price(st['next_turn_cold'])} cold"],
        ["server", _server_line(magic)],
        ["tokenizer", st["tokenizer"]],
    ]
    display(table_bundle(["", ""], rows, "Kimi session"), raw=True)


def _server_line(magic: Any) -> str:
    try:
        client = magic.sessions.client()
    except KimiError:
        return f"{magic.base_url} (no API key set)"
    return f"{client.base_url} ({client.server})"


@command("cost")
def cost(magic: Any, args: Any) -> None:
    """What the current session has cost, by model, and its prompt-cache hit rate."""
    c = magic.session.cost()
    st = magic.session.status()
    rows = [[m, dollars(v)] for m, v in c["by_model"].items()]
    # Models called without a price (one the table lacks) are listed as such, never as $0.
    rows += [[m, "unpriced"] for m in dict.fromkeys(t["model"] for t in magic.session.calls)
             if m not in c["by_model"]]
    rows.append(["total", spent(c["total"], bool(c["by_model"]) or not c["turns"])])
    rows.append(["prompt cache hit rate", f"{st['cache_hit_rate']:.0%}"])
    if st["budget"] is not None:
        rows.append(["budget", f"{dollars(c['total'])} spent of {dollars(st['budget'])}, "
                               f"{dollars(max(st['budget_left'], 0.0))} left"])
    if st["max_call"] is not None:
        rows.append(["per-call limit", dollars(st["max_call"])])
    display(table_bundle(["model", "cost"], rows, f"Cost of {magic.session.name} "
                         f"({c['turns']} calls)"), raw=True)


@command("estimate", arg("model", nargs="?", metavar="MODEL",
                         help="Estimate for this model or 'auto' (default: the session's)."))
def estimate(magic: Any, args: Any) -> None:
    """What the next turn would send and cost before its prompt: model, tokens by layer,
    prompt cache, cost warm and cold, the cost guard. Nothing is sent.

    %%kimi --dry-run shows the same for a cell's prompt.
    """
    est = magic.session.estimate(model=args.model)
    show_estimate(magic, est, "Next turn (before its prompt): nothing was sent")


def show_estimate(magic: Any, est: Any, title: str) -> None:
    """Show a ``Session.estimate`` as a table."""
    layers = ", ".join(f"{k} ~{v:,}" for k, v in est.layers.items())
    cache = (f"warm for {est.cache_seconds_left / 60:.1f} more min: ~{est.cached_tokens:,} "
             "tokens likely cached" if est.cache_warm
             else "cold: nothing cached (no call in the cache's lifetime)")
    if est.compacts_first:
        compaction = (f"before sending: ~{est.input_tokens:,} tokens do not fit {est.model}'s "
                      f"{est.window:,}-token window with room to answer ({magic.compact_mode})")
    elif est.compacts_after:
        compaction = f"after this turn (past {est.threshold:,} tokens)"
    else:
        compaction = f"no (auto-compact at {est.threshold:,} tokens)"
    if est.compact_model == est.model:
        summariser = (f"{est.model}, the session's own: reads the conversation at the "
                      "cache-hit price")
    else:
        summariser = (f"{est.compact_model} (compact_model): reads the whole conversation at "
                      "its cache-miss price")
    limit = est.max_call
    guard = "unpriced: not limited" if not est.priced else (
        f"{'refused' if limit is not None and est.worst > limit else 'allowed'}: worst case "
        f"{_price(est.worst)} against the per-call limit "
        f"{_price(limit) if limit is not None else 'none'}")
    budget = ("none" if est.budget is None
              else f"{_price(est.spent)} spent of {_price(est.budget)}")
    rows = [
        ["model", est.model_label + f" (window {est.window:,})"],
        ["input tokens", f"~{est.input_tokens:,} ({layers})"],
        ["prompt cache", cache],
        ["output cap", f"{est.output_cap:,} tokens"],
        ["cost", (f"{_price(est.cost_warm)} warm / {_price(est.cost_cold)} cold, with the "
                  "whole output cap" if est.priced else "unpriced")],
        ["cost guard", guard],
        ["budget", budget],
        # One row for when it compacts: "compacts first | after this turn" contradicted itself.
        ["compaction", compaction],
        ["summaries by", summariser],
    ]
    display(table_bundle(["", ""], rows, title), raw=True)


@command("models")
def models(magic: Any, args: Any) -> None:
    """The models the server serves and the model table knows: window, thinking, prices."""
    try:
        server = magic.sessions.client().models(refresh=True)
    except KimiError as err:
        server = {}
        print(f"(server not asked: {err})")
    ids = list(dict.fromkeys([*server, *model_table.MODELS]))
    rows = []
    for mid in ids:
        m = model_table.resolve(mid, server, magic.model_overrides)
        price = (f"${m.cache_hit}/${m.cache_miss}/${m.output}" if m.priced else "unpriced")
        state = ("retired (404)" if model_table.is_retired(mid)
                 else "served" if mid in server else "not listed by this server")
        rows.append([mid, f"{m.context_length:,}", m.thinking, price, state])
    display(table_bundle(["model", "window", "thinking", "$/1M hit/miss/out", "status"],
                         rows, f"Models (prices as of {model_table.TABLE_DATE})"), raw=True)


def _price(usd: float | None) -> str:
    # A model without prices shows as such, never as $0.
    return dollars(usd, unknown="unpriced")


@command("help", arg("subcommand", nargs="?", metavar="SUBCOMMAND",
                     help="The subcommand to explain (default: list them all)."))
def help_(magic: Any, args: Any) -> None:
    """Show the subcommands, or one subcommand's usage, options and examples."""
    if args.subcommand is None:
        print(overview())
        return
    found = COMMANDS.get(args.subcommand)
    if found is None:
        raise UsageError(f"no subcommand %kimi {args.subcommand}; try: {', '.join(COMMANDS)}")
    print(found.grammar.full_help())


def overview() -> str:
    """One line per subcommand: its usage and what it does."""
    lines = ["%kimi SUBCOMMAND [ARGS] (plain %kimi: status); %kimi help SUBCOMMAND explains one.",
             ""]
    for c in ordered():
        lines.append(f"  {c.grammar.usage()}")
        lines.append(f"      {c.grammar.help}")
    return "\n".join(lines)


@command("widget")
def widget(magic: Any, args: Any) -> None:
    """Show the session dashboard: window fill, cost, cache, pins, snapshots, buttons."""
    magic.show_widget(magic.session)

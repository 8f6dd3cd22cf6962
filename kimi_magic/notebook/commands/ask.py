"""``%%kimi [options]``: the cell form. Its options are declared once in ``CELL``; the cell body
is the prompt, with ``{name}`` replaced by the variable's value when it names one."""

from __future__ import annotations

import inspect
import json
from typing import Any

from IPython.display import display

from ...core import models as model_table
from ...core.errors import SessionError
from ...core.guard import CostRefused
from ...core.interpolate import interpolate
from ...wire.request import Options
from ..display import StreamView, status_bundle, status_line
from .registry import Grammar, arg, dollars
from .sessions import set_system

CELL = Grammar("%%kimi", [
    arg("--session", "-s", metavar="NAME", help="Run this cell in session NAME (created on "
        "first use); the current session stays as it is (%kimi use NAME switches)."),
    arg("--model", "-m", metavar="MODEL", help="Model id for this cell, or 'auto'."),
    arg("--max-tokens", type=int, dest="max_tokens", metavar="N",
        help="Output cap for this reply."),
    arg("--temperature", "-t", type=float, metavar="T", help="Sampling temperature (sent only "
        "when given; current Kimi models may reject it)."),
    arg("--top-p", type=float, dest="top_p", metavar="P",
        help="Nucleus sampling (sent only when given)."),
    arg("--think", action="store_true", default=None, help="Turn thinking on (kimi-k2.6)."),
    arg("--no-think", action="store_false", dest="think", help="Turn thinking off "
        "(kimi-k2.6; other current models always think)."),
    arg("--effort", metavar="LEVEL", help="Reasoning effort on kimi-k3: low, high or max."),
    arg("--system", metavar="TEXT", help="Set the session's system prompt (kept for later "
        "turns; '' removes it)."),
    arg("--prefix", metavar="TEXT", help="Partial mode: the reply continues this text."),
    arg("--json", action="store_true", help="Ask for a JSON object (parsed into --out)."),
    arg("--out", metavar="VAR", help="Store the reply (or parsed JSON, or --map results) in "
        "this variable."),
    arg("--no-stream", action="store_true", dest="no_stream", help="Wait for the whole reply "
        "instead of streaming it."),
    arg("--once", action="store_true", help="Ask with the context but do not record the turn."),
    arg("--pin", action="append", default=[], metavar="EXPR",
        help="Pin this variable or file first (repeatable)."),
    arg("--format", choices=["markdown", "text", "code"], default="markdown",
        help="How to show the reply; 'code' also puts it in the next cell."),
    arg("--tools", action="store_true", help="Let the model call registered tools."),
    arg("--agent", action="store_true", help="Let the model see the notebook: list and inspect "
        "variables, read cells, run code (each run asks first) and propose a cell."),
    arg("--yes", action="store_true", help="With --agent: approve this cell's run_python "
        "calls without asking."),
    arg("--web", action="store_true", help="Enable Kimi's builtin $web_search ($0.005 per "
        "call)."),
    arg("--map", dest="map_var", metavar="VAR", help="Run the prompt once per item of this "
        "list, Series or column ({item} in the prompt)."),
    arg("--batch", action="store_true", help="With --map: through the Batch API (60% of the "
        "price)."),
    arg("--pin-results", dest="pin_results", metavar="NAME", help="With --map: pin the "
        "results into the session under this name."),
    arg("--dry-run", action="store_true", dest="dry_run", help="Show what the cell would "
        "send and cost (model, tokens by layer, cache, compaction) without sending it."),
    arg("--max-cost", type=dollars, dest="max_cost", metavar="USD", help="Allow this cell's "
        "calls to cost up to USD each, as 0.5 or $2 (default: KimiMagic.max_call_usd)."),
    arg("--no-interpolate", action="store_true", dest="no_interpolate",
        help="Send {name} literally instead of substituting variables."),
], inspect.cleandoc("""
    Ask Kimi: the cell body is the prompt; the reply streams below and the turn is kept in
    the session's context for the next cell.

    Values are read like a shell: quote them to keep spaces or braces
    (--system "You are terse.", --prefix "{", --system '' for none).
    In the body, {name} is replaced by the variable's value when it names one; other braces
    (JSON, code) stay as typed.

    Example:
        %%kimi -m kimi-k2.6 --out summary
        Summarise {df_name} in three bullet points.
    """))

#: Options that only make sense with --map, refused without it.
MAP_ONLY = {"batch": "--batch", "pin_results": "--pin-results"}


def run(magic: Any, args: Any, cell: str) -> Any:
    """Run one ``%%kimi`` cell: check the options, ask (or fan out), show and deliver."""
    prompt = cell.strip()
    if not args.no_interpolate:
        # With --map, {item} is the fan-out's placeholder, even if the user has an `item`.
        prompt = interpolate(prompt, magic.shell.user_ns,
                             keep=("item",) if args.map_var else ())
    if not prompt and not args.pin:
        raise SessionError("the prompt is empty: write it in the cell body, under %%kimi")
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise SessionError("--max-tokens must be a positive number")
    if args.effort is not None and args.effort not in model_table.EFFORTS:
        raise SessionError(f"unknown --effort {args.effort!r}: use "
                           f"{', '.join(model_table.EFFORTS)}")
    if args.prefix is not None and args.json:
        raise SessionError("--prefix (partial mode) cannot be combined with --json")
    for dest, flag in MAP_ONLY.items():
        if getattr(args, dest) and not args.map_var:
            raise SessionError(f"{flag} works with --map VAR")
    if args.yes and not args.agent:
        raise SessionError("--yes approves --agent's code runs: use it with --agent")
    if args.agent and args.map_var:
        raise SessionError("--agent cannot be combined with --map")
    if args.dry_run and args.map_var:
        raise SessionError("--dry-run shows one turn; a --map fan-out is checked whole "
                           "against the cost guard before its first request")
    # A cell's --session is for that cell: only %kimi use changes the current session.
    session = magic.sessions.get(args.session) if args.session else magic.session
    if args.dry_run:
        return _dry_run(magic, session, prompt, args)
    if args.map_var:
        from . import mapping

        with session.guard.allowing(args.max_cost):
            return mapping.run_magic(magic, session, args, prompt)
    from .pins import pin_and_say

    before = session.context
    for target in args.pin:
        pin_and_say(magic, session, target)
    if not prompt:
        return None
    if args.system is not None:
        set_system(session, args.system)
    opts = Options(max_completion_tokens=args.max_tokens, think=args.think,
                   effort=args.effort, prefix=args.prefix, json=args.json,
                   stream=not args.no_stream,
                   sampling={"temperature": args.temperature, "top_p": args.top_p})
    tools = None
    view = StreamView(fmt="json" if args.json else args.format, prefix=args.prefix or "")
    if args.tools or args.web or args.agent:
        from ... import tools as tool_module

        extra = _agent_tools(magic, session, args, view) if args.agent else []
        tools = tool_module.for_session(session, functions=args.tools, web=args.web,
                                        extra=extra)
        opts.tools = tools.specs
    note = magic.cells.note_for(session.name, magic.notebook_context,
                                [session.settings.api_key])
    try:
        with view.unrecorded_on_failure():
            turn = session.ask(prompt, model=args.model, options=opts, once=args.once,
                               cell_id=cell_id(magic.shell), on_delta=view, tools=tools,
                               note=note, max_cost=args.max_cost)
    except CostRefused as refused:
        if session.context is before:
            raise
        # A refused cell changes nothing: its --pin and --system are undone with it.
        session.commit(before)
        raise CostRefused(f"{refused}; this cell's --pin and --system were undone") from None
    # Without streaming (or when a server sent the reply whole) fill the view at the end.
    if not view.content and turn.text:
        view.content.append(turn.text)
    if turn.reasoning and not view.reasoning:
        view.reasoning.append(turn.reasoning)
    view.close()
    magic.cells.mark(session.name)
    notices = list(turn.notices)
    if args.once:
        notices.append("--once: this turn was not recorded.")
    display(status_bundle(status_line(turn), notices), raw=True)
    magic.last_turn = turn
    deliver(magic.shell, args, turn.text)
    magic.show_widget(session, auto=True)
    return None


def _dry_run(magic: Any, session: Any, prompt: str, args: Any) -> None:
    """What the cell would send and cost; nothing is sent, pinned or changed."""
    from .info import show_estimate

    opts = Options(max_completion_tokens=args.max_tokens, think=args.think,
                   effort=args.effort)
    if args.tools or args.web:
        from ... import tools as tool_module

        # The schemas go with the request and count against the window: estimate them too.
        opts.tools = tool_module.for_session(session, functions=args.tools, web=args.web).specs
    note = magic.cells.note_for(session.name, magic.notebook_context,
                                [session.settings.api_key]) if prompt else ""
    with session.guard.allowing(args.max_cost):
        est = session.estimate(prompt, model=args.model, options=opts, note=note)
    show_estimate(magic, est, "Dry run: nothing was sent")


def _agent_tools(magic: Any, session: Any, args: Any, view: StreamView) -> list[Any]:
    from ..agent import NotebookTools

    def show(bundle: dict[str, str]) -> None:
        # Below what streamed so far: the code, then the question, in reading order.
        view.detach()
        display(bundle, raw=True)

    approval = "yes" if args.yes and magic.agent_approval == "ask" else magic.agent_approval
    return NotebookTools(magic.shell, session, magic.cells, approval, magic.agent_timeout,
                         show).tools()


def deliver(shell: Any, args: Any, text: str) -> None:
    """``--format code`` fills the next cell; ``--out VAR`` (with ``--json``: parsed)."""
    if args.format == "code":
        shell.set_next_input(strip_fences(text), replace=False)
    if args.out and args.json:
        try:
            value = json.loads(text)
        except ValueError:
            # The session did not record it either (Ask keeps no --json reply that fails
            # to parse): the cell fails and leaves nothing behind.
            raise SessionError(f"the reply is not valid JSON, so it was not recorded and "
                               f"{args.out} was not assigned") from None
        shell.user_ns[args.out] = value
    elif args.out:
        shell.user_ns[args.out] = text


def cell_id(shell: Any) -> str | None:
    """JupyterLab's id of the running cell, sent in the execute request's metadata."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent("shell") if _takes_channel(kernel) else kernel.get_parent()
    except Exception:
        return None
    return ((parent or {}).get("metadata") or {}).get("cellId")


def _takes_channel(kernel: Any) -> bool:
    try:
        return "channel" in inspect.signature(kernel.get_parent).parameters
    except (TypeError, ValueError):
        return False


def strip_fences(text: str) -> str:
    """A ``--format code`` reply without its Markdown code fence."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("```"):
        lines = lines[1:]
        if lines and lines[-1].strip().startswith("```"):
            lines = lines[:-1]
    return "\n".join(lines)

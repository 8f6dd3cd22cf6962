"""``%%kimi``, ``%kimi`` and ``%%kimi_pin``: parse what the user typed, call the core, show it.

Configure with ``%config KimiMagic.model = "kimi-k3"`` (``%config KimiMagic`` lists every
setting; the API key is never shown). Defaults come from ``MOONSHOT_API_KEY``,
``MOONSHOT_BASE_URL`` and ``MOONSHOT_MODEL``.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
    parse_argstring,
)
from IPython.display import display
from traitlets import observe

from ..core import models as model_table
from ..core.errors import SessionError, StoreError
from ..core.interpolate import interpolate
from ..core.session import Session
from ..core.sessions import Sessions
from ..core.settings import PRESETS, SETTINGS, SETTINGS_BY_NAME, Settings
from ..core.store import Store
from ..wire.errors import KimiError
from ..wire.request import Options
from .config import SettingTraits
from .display import StreamView, dollars, history_bundle, status_bundle, status_line, table_bundle

#: Errors that are the user's or the network's, not ours: shown as one line, no traceback.
USER_ERRORS = (KimiError, SessionError, StoreError)


@magics_class
class KimiMagic(Magics, SettingTraits):
    """Chat with Kimi from a notebook; the kernel keeps and manages the context.

    Its settings (``%config KimiMagic``) are generated from the core's declarations
    (``core/settings.py``, ``notebook/config.py``): each carries its help, its default and
    the validation plain ``Settings`` applies.
    """

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        #: What the current preset replaced, restored when the preset is set to None.
        self._before_preset: dict[str, Any] = {}
        super().__init__(shell=shell, **kwargs)
        self.sessions = Sessions(self._settings())
        self.sessions.on_open.append(self._wire_session)
        self._widget_shown = False
        #: One dashboard per session, shown again (a second view of the same widget) by
        #: every %kimi widget, so views never pile up observers.
        self._dashboards: dict[str, Any] = {}
        self.last_turn: Any = None
        from .agent import CellLog

        #: Every executed cell, for --agent's read_cells and the note of what ran.
        self.cells = CellLog(shell)

    # -- configuration ------------------------------------------------------------------
    @observe("preset")
    def _apply_preset(self, change: Any) -> None:
        # Only what still holds the old preset's value goes back: a setting the user changed
        # after applying the preset keeps the user's value.
        old = PRESETS.get(change["old"] or "", {})
        for name, value in self._before_preset.items():
            if getattr(self, name) == old.get(name):
                setattr(self, name, value)
        new = PRESETS.get(change["new"] or "", {})
        self._before_preset = {name: getattr(self, name) for name in new}
        for name, value in new.items():
            setattr(self, name, value)

    @observe(*[s.name for s in SETTINGS], "store_path")
    def _settings_changed(self, change: Any) -> None:
        if not hasattr(self, "sessions"):
            return
        if change["name"] == "store_path":
            self.sessions.use_store(Store(change["new"]) if change["new"] else Store())
            return
        spec = SETTINGS_BY_NAME[change["name"]]
        setattr(self.sessions.settings, spec.name, change["new"])
        if spec.reconnect:
            self.sessions.reconnect()
        if spec.name == "system":
            self._follow_default_system(change["old"], change["new"])

    def _follow_default_system(self, old: str, new: str) -> None:
        """Open sessions not started yet take the new default; started ones keep theirs.

        Without this, ``%kimi status`` before ``%config KimiMagic.system = ...`` would leave
        the first conversation on the old prompt. A session holding its own prompt (set with
        ``--system``) is never touched.
        """
        kept = []
        for session in self.sessions.open.values():
            context = session.context
            if (context.system.text if context.system else "") != old:
                continue
            if context.history or context.summary is not None:
                kept.append(session.name)
            else:
                session.set_system(new)
        if kept:
            print(f"KimiMagic.system is the prompt of sessions opened from now on; "
                  f"{', '.join(map(repr, kept))} already started and keep theirs "
                  "(%%kimi -s NAME --system TEXT changes one).")

    def _settings(self) -> Settings:
        return Settings(**{s.name: getattr(self, s.name) for s in SETTINGS})

    def _wire_session(self, session: Session) -> None:
        from .. import pins
        from . import progress

        session.refresh_pins = pins.refresher(lambda: self.shell.user_ns)
        session.progress = progress.bar

    @property
    def session(self) -> Session:
        return self.sessions.current

    def _open_store(self) -> None:
        if self.store_path and not self.sessions.has_store:
            self.sessions.use_store(Store(self.store_path))

    # -- %%kimi ---------------------------------------------------------------------------
    @magic_arguments()
    @argument("--session", "-s", help="Session to use (created on first use).")
    @argument("--model", "-m", help="Model id for this cell, or 'auto'.")
    @argument("--max-tokens", type=int, dest="max_tokens", help="Output cap for this reply.")
    @argument("--temperature", "-t", type=float, help="Sampling temperature (sent only when "
              "given; current Kimi models may reject it).")
    @argument("--top-p", type=float, dest="top_p", help="Nucleus sampling (sent only when given).")
    @argument("--think", action="store_true", default=None, help="Turn thinking on (kimi-k2.6).")
    @argument("--no-think", action="store_false", dest="think", help="Turn thinking off "
              "(kimi-k2.6; other current models always think).")
    @argument("--effort", help="Reasoning effort on kimi-k3: low, high or max.")
    @argument("--system", help="Set the session's system prompt (kept for later turns).")
    @argument("--prefix", help="Partial mode: the reply continues this text.")
    @argument("--json", action="store_true", help="Ask for a JSON object (parsed into --out).")
    @argument("--out", help="Store the reply (or parsed JSON, or --map results) in this "
              "variable.")
    @argument("--no-stream", action="store_true", dest="no_stream", help="Wait for the whole "
              "reply instead of streaming it.")
    @argument("--once", action="store_true", help="Ask with the context but do not record "
              "the turn.")
    @argument("--pin", action="append", default=[], help="Pin this variable or file first "
              "(repeatable).")
    @argument("--format", choices=["markdown", "text", "code"], default="markdown",
              help="How to show the reply; 'code' also puts it in the next cell.")
    @argument("--tools", action="store_true", help="Let the model call registered tools.")
    @argument("--agent", action="store_true", help="Let the model see the notebook: list and "
              "inspect variables, read cells, run code (each run asks first) and propose a "
              "cell.")
    @argument("--yes", action="store_true", help="With --agent: approve this cell's "
              "run_python calls without asking.")
    @argument("--web", action="store_true", help="Enable Kimi's builtin $web_search "
              "($0.005 per call).")
    @argument("--map", dest="map_var", help="Run the prompt once per item of this list, "
              "Series or column ({item} in the prompt).")
    @argument("--batch", action="store_true", help="With --map: through the Batch API "
              "(60%% of the price).")
    @argument("--pin-results", dest="pin_results", help="With --map: pin the results into "
              "the session under this name.")
    @argument("--no-interpolate", action="store_true", dest="no_interpolate",
              help="Send {name} literally instead of substituting variables.")
    @no_var_expand
    @line_cell_magic
    def kimi(self, line: str, cell: str | None = None) -> Any:
        """Chat with Kimi (cell) and manage its context (line).

        Usage::

            %%kimi [-s SESSION] [-m MODEL|auto] [--max-tokens N] [--no-think] [--json]
                   [--out VAR] [--pin EXPR] [--format markdown|text|code] [--once] ...
            Summarise {df_name} in three bullet points.

            %kimi status | history | cost | models | sessions | use NAME | reset
            %kimi snapshot [LABEL] | snapshots | rollback [ID|LABEL]
            %kimi compress [--keep-rounds N] | truncate [--keep-rounds N | --keep-tokens N]
            %kimi recall QUERY [--pin] | pin EXPR_OR_PATH [--as NAME] | unpin NAME|--all | pins
            %kimi widget | export PATH | import PATH | tool NAME | fix | batches

        In a cell, ``{name}`` is replaced by the variable's value when it names one; other
        braces (JSON, code) stay as typed. The options below are for the cell form.
        """
        if cell is not None:
            args = parse_argstring(self.kimi, line)
            return self._guard(self.ask, args, cell)
        words = line.strip().split(None, 1)
        if not words:
            return self._guard(self._status, "")
        sub, rest = words[0], (words[1] if len(words) > 1 else "")
        handler = getattr(self, f"_sub_{sub.replace('-', '_')}", None)
        if handler is None:
            raise UsageError(f"unknown subcommand %kimi {sub}; try: "
                             f"{', '.join(SUBCOMMANDS)}")
        return self._guard(handler, rest)

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run ``fn``; a user's or the network's error becomes one line, nothing changed."""
        self._open_store()
        try:
            return fn(*args)
        except USER_ERRORS as err:
            raise UsageError(self._redact(str(err))) from None
        except KeyboardInterrupt:
            raise UsageError("Interrupted: the reply was not recorded; the conversation is "
                             "as it was before this cell.") from None

    def _redact(self, text: str) -> str:
        key = str(self.api_key or "")
        return text.replace(key, "[key hidden]") if key else text

    def ask(self, args: Any, cell: str) -> Any:
        """Run one ``%%kimi`` cell (already parsed into ``args``) and deliver the reply."""
        prompt = cell.strip()
        if not args.no_interpolate:
            # With --map, {item} is the fan-out's placeholder, even if the user has an `item`.
            prompt = interpolate(prompt, self.shell.user_ns,
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
        if args.batch and not args.map_var:
            raise SessionError("--batch works with --map VAR")
        if args.yes and not args.agent:
            raise SessionError("--yes approves --agent's code runs: use it with --agent")
        if args.agent and args.map_var:
            raise SessionError("--agent cannot be combined with --map")
        session = self.sessions.use(args.session) if args.session else self.session
        if args.map_var:
            from . import mapping

            return mapping.run_magic(self, session, args, prompt)
        for target in args.pin:
            self.pin_target(session, target)
        if not prompt:
            return None
        if args.system is not None and session.set_system(args.system):
            print(f"System prompt of session {session.name!r} set; other sessions keep "
                  "theirs.")
        opts = Options(max_completion_tokens=args.max_tokens, think=args.think,
                       effort=args.effort, prefix=args.prefix, json=args.json,
                       stream=not args.no_stream,
                       sampling={"temperature": args.temperature, "top_p": args.top_p})
        tools = None
        view = StreamView(fmt="json" if args.json else args.format, prefix=args.prefix or "")
        if args.tools or args.web or args.agent:
            from .. import tools as tool_module

            extra = self._agent_tools(session, args, view) if args.agent else []
            tools = tool_module.for_session(session, functions=args.tools, web=args.web,
                                            extra=extra)
            opts.tools = tools.specs
        note = self.cells.note_for(session.name, self.notebook_context,
                                   [session.settings.api_key])
        try:
            turn = session.ask(prompt, model=args.model, options=opts, once=args.once,
                               cell_id=self._cell_id(), on_delta=view, tools=tools, note=note)
        except KimiError as err:
            # Mark whatever was shown (answer, reasoning or tool lines) as not kept.
            if err.partial or view.content or view.reasoning or view.tools:
                view.close("*— cut off: not recorded*")
            raise
        except KeyboardInterrupt:
            view.close("*— interrupted: not recorded*")
            raise
        # Without streaming (or when a server sent the reply whole) fill the view at the end.
        if not view.content and turn.text:
            view.content.append(turn.text)
        if turn.reasoning and not view.reasoning:
            view.reasoning.append(turn.reasoning)
        view.close()
        self.cells.mark(session.name)
        notices = list(turn.notices)
        if turn.replaced:
            notices.insert(0, f"Re-ran this cell: replaced its earlier turn (round "
                           f"{turn.replaced}) instead of adding a duplicate.")
        if args.once:
            notices.append("--once: this turn was not recorded.")
        display(status_bundle(status_line(turn), notices), raw=True)
        self.last_turn = turn
        self._deliver(args, turn.text)
        if self.auto_widget and not self._widget_shown:
            self._show_widget(session)
        return None

    def _agent_tools(self, session: Session, args: Any, view: StreamView) -> list[Any]:
        from .agent import NotebookTools

        def show(bundle: dict[str, str]) -> None:
            # Below what streamed so far: the code, then the question, in reading order.
            view.detach()
            display(bundle, raw=True)

        approval = "yes" if args.yes and self.agent_approval == "ask" else self.agent_approval
        return NotebookTools(self.shell, session, self.cells, approval, self.agent_timeout,
                             show).tools()

    def _deliver(self, args: Any, text: str) -> None:
        if args.format == "code":
            self.shell.set_next_input(_strip_fences(text), replace=False)
        if args.out:
            self.shell.user_ns[args.out] = text
            if args.json:
                try:
                    self.shell.user_ns[args.out] = json.loads(text)
                except ValueError:
                    raise SessionError(f"the reply is not valid JSON; {args.out} holds the "
                                       "raw text") from None

    def _cell_id(self) -> str | None:
        """JupyterLab's id of the running cell, sent in the execute request's metadata."""
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return None
        try:
            parent = kernel.get_parent("shell") if _takes_channel(kernel) else kernel.get_parent()
        except Exception:
            return None
        return ((parent or {}).get("metadata") or {}).get("cellId")

    # -- %kimi SUBCOMMAND ----------------------------------------------------------------------
    def _sub_status(self, rest: str) -> None:
        self._status(rest)

    def _status(self, rest: str) -> None:
        st = self.session.status()
        mark = "" if st["exact"] else "~"
        layers = ", ".join(f"{k} {mark}{v:,}" for k, v in st["layers"].items())
        warm = (f"warm for {st['cache_seconds_left'] / 60:.1f} more min"
                if st["cache_warm"] else "cold")
        rows = [
            ["session", st["session"]],
            ["model", f"{st['model']} (window {st['window']:,} from the {st['window_source']})"],
            ["context", f"{mark}{st['tokens']:,} tokens ({st['fill']:.1%}); "
                        f"{'exact (server count)' if st['exact'] else 'estimated'}"],
            ["layers", layers],
            ["auto-compact at", f"{st['threshold']:,} tokens ({self.compact_mode})"],
            ["rounds / snapshots", f"{st['rounds']} / {st['snapshots']}"],
            ["pins", ", ".join(f"{n} ({k}, {mark}{t:,})" for n, k, t in st["pins"]) or "none"],
            ["cost", f"{_price(st['cost_total'] if st['priced'] or st['cost_total'] else None)}"
                     f" total, last {_price(st['cost_last'])}"],
            ["prompt cache", f"{st['cache_hit_rate']:.0%} hit rate; {warm}"],
            ["next turn input", f"{_price(st['next_turn_warm'])} warm / "
                                f"{_price(st['next_turn_cold'])} cold"],
            ["server", self._server_line()],
            ["tokenizer", st["tokenizer"]],
        ]
        display(table_bundle(["", ""], rows, "Kimi session"), raw=True)

    def _server_line(self) -> str:
        try:
            client = self.sessions.client()
        except KimiError:
            return f"{self.base_url} (no API key set)"
        return f"{client.base_url} ({client.server})"

    def _sub_history(self, rest: str) -> None:
        display(history_bundle(self.session.name, self.session.history()), raw=True)

    def _sub_reset(self, rest: str) -> None:
        self.session.reset()
        print(f"Session {self.session.name!r} reset: history and summary cleared (archived "
              "for %kimi recall); system prompt and pins kept.")

    def _sub_sessions(self, rest: str) -> None:
        rows = [[("* " if s["name"] == self.sessions.current_name else "  ") + s["name"],
                 s["model"], s["turns"], s["snapshots"], dollars(s['cost'] or 0),
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated"] or 0))]
                for s in self.sessions.store.sessions()]
        if not rows:
            print("No stored sessions yet.")
            return
        display(table_bundle(["name", "model", "turns", "snapshots", "cost", "updated"], rows,
                             f"Sessions in {self.sessions.store.path}"), raw=True)

    def _sub_use(self, rest: str) -> None:
        name = rest.strip()
        if not name:
            raise SessionError("usage: %kimi use NAME")
        known = {s["name"] for s in self.sessions.store.sessions()}
        s = self.sessions.use(name)
        verb = "Resumed" if name in known else "Started"
        print(f"{verb} session {name!r}: {len(s.context.rounds)} rounds, "
              f"{len(s.snapshots)} snapshots.")

    def _sub_models(self, rest: str) -> None:
        try:
            server = self.sessions.client().models(refresh=True)
        except KimiError as err:
            server = {}
            print(f"(server not asked: {err})")
        ids = list(dict.fromkeys([*server, *model_table.MODELS]))
        rows = []
        for mid in ids:
            m = model_table.resolve(mid, server, self.model_overrides)
            price = (f"${m.cache_hit}/${m.cache_miss}/${m.output}" if m.priced else "unpriced")
            status = ("retired (404)" if model_table.is_retired(mid)
                      else "served" if mid in server else "not listed by this server")
            rows.append([mid, f"{m.context_length:,}", m.thinking, price, status])
        display(table_bundle(["model", "window", "thinking", "$/1M hit/miss/out", "status"],
                             rows, f"Models (prices as of {model_table.TABLE_DATE})"), raw=True)

    def _sub_cost(self, rest: str) -> None:
        c = self.session.cost()
        st = self.session.status()
        rows = [[m, dollars(v)] for m, v in c["by_model"].items()]
        rows.append(["total", dollars(c["total"])])
        rows.append(["prompt cache hit rate", f"{st['cache_hit_rate']:.0%}"])
        display(table_bundle(["model", "cost"], rows, f"Cost of {self.session.name} "
                             f"({c['turns']} calls)"), raw=True)

    # lifecycle
    def _sub_snapshot(self, rest: str) -> None:
        snap = self.session.snapshot(rest.strip() or None)
        print(f"Snapshot #{snap.id} {snap.label!r}: {snap.rounds} rounds, ~{snap.tokens:,} "
              "tokens.")

    def _sub_snapshots(self, rest: str) -> None:
        s = self.session
        if not s.snapshots:
            print("No snapshots yet: %kimi snapshot [LABEL] takes one.")
            return
        rows = [[("→ " if snap.id == s.current_snapshot else "  ") + str(snap.id), snap.label,
                 time.strftime("%H:%M:%S", time.localtime(snap.time)), snap.rounds,
                 f"{snap.tokens:,}", snap.parent or "", "auto" if snap.auto else ""]
                for snap in s.snapshots]
        display(table_bundle(["id", "label", "time", "rounds", "tokens", "parent", ""], rows,
                             f"Snapshots of {s.name}"), raw=True)

    def _sub_rollback(self, rest: str) -> None:
        snap = self.session.rollback(rest.strip() or None)
        print(f"Rolled back to snapshot #{snap.id} {snap.label!r}: {snap.rounds} rounds, "
              f"~{snap.tokens:,} tokens. The state you left is kept as a snapshot too. "
              "This restores the conversation, not the kernel's variables: code that ran "
              "(yours or --agent's) has left them as they are.")

    def _sub_compress(self, rest: str) -> None:
        p = _parser("compress")
        p.add_argument("--keep-rounds", type=int, dest="keep_rounds")
        args = p.parse_argstring(rest)
        view = StreamView(fmt="markdown")
        res = self.session.compress(args.keep_rounds, on_delta=view)
        view.close()
        print(res.line())

    def _sub_truncate(self, rest: str) -> None:
        p = _parser("truncate")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--keep-rounds", type=int, dest="keep_rounds")
        g.add_argument("--keep-tokens", type=int, dest="keep_tokens")
        args = p.parse_argstring(rest)
        before = self.session.tokens()
        n = self.session.truncate(args.keep_rounds, args.keep_tokens)
        print(f"Truncated {n} rounds: ~{before:,} → ~{self.session.tokens():,} tokens "
              "(archived for %kimi recall).")

    def _sub_recall(self, rest: str) -> None:
        p = _parser("recall")
        p.add_argument("query", nargs="+")
        p.add_argument("--pin", action="store_true")
        p.add_argument("--limit", type=int, default=5)
        args = p.parse_argstring(rest)
        query = " ".join(args.query)
        hits = self.session.recall(query, args.limit, pin=args.pin)
        if not hits:
            print(f"Nothing in the archive matches {query!r}.")
            return
        rows = [[h["id"], h["reason"], _one_line(h["text"], 160)] for h in hits]
        display(table_bundle(["archive id", "why archived", "text"], rows,
                             f"Recalled for {query!r}"), raw=True)
        if args.pin:
            print(f"Pinned {len(hits)} recalled rounds as 'recall: {query[:40]}'.")

    def _sub_export(self, rest: str) -> None:
        from .. import export

        path = rest.strip()
        if not path:
            raise SessionError("usage: %kimi export PATH (.ipynb, .md or .json)")
        written = export.export(self.session, path)
        print(f"Exported {self.session.name!r} to {written}.")

    def _sub_import(self, rest: str) -> None:
        from .. import export

        p = _parser("import")
        p.add_argument("path")
        p.add_argument("--as", dest="name")
        args = p.parse_argstring(rest)
        s = export.load(self.sessions, args.path, args.name)
        print(f"Imported {args.path} as session {s.name!r}; %kimi use {s.name} to switch.")

    # pins
    def pin_target(self, session: Session, target: str, name: str | None = None,
                   max_tokens: int | None = None, frozen: bool = False) -> None:
        """Pin ``target`` (a variable, file or URL) into ``session`` and say so."""
        from .. import pins

        pin = pins.pin(session, target, self.shell.user_ns, name=name,
                       max_tokens=max_tokens, frozen=frozen)
        print(f"Pinned {pin.name!r} ({pin.kind}, ~{pin.tokens:,} tokens"
              f"{', frozen' if pin.frozen else ''}).")

    def _sub_pin(self, rest: str) -> None:
        p = _parser("pin")
        p.add_argument("target")
        p.add_argument("--as", dest="name")
        p.add_argument("--max-tokens", type=int, dest="max_tokens")
        p.add_argument("--frozen", action="store_true")
        args = p.parse_argstring(rest)
        self.pin_target(self.session, args.target, args.name, args.max_tokens, args.frozen)

    def _sub_unpin(self, rest: str) -> None:
        name = rest.strip()
        if not name:
            raise SessionError("usage: %kimi unpin NAME or %kimi unpin --all")
        names = (self.session.unpin(all=True) if name == "--all"
                 else self.session.unpin(_unquote(name)))
        print(f"Unpinned {', '.join(names) or 'nothing'}.")

    def _sub_pins(self, rest: str) -> None:
        pins = self.session.context.pins
        if not pins:
            print("No pins: %kimi pin VARIABLE_OR_PATH adds one.")
            return
        rows = [[p.name, p.kind, f"~{p.tokens:,}", p.source,
                 time.strftime("%H:%M:%S", time.localtime(p.updated)) if p.updated else "",
                 "frozen" if p.frozen else "live"] for p in pins]
        display(table_bundle(["name", "kind", "tokens", "source", "updated", ""], rows,
                             "Pins"), raw=True)

    @no_var_expand
    @cell_magic
    def kimi_pin(self, line: str, cell: str) -> None:
        """Pin the cell's text into the context under NAME: ``%%kimi_pin conventions``."""
        from .. import pins

        name = line.strip()
        if not name:
            raise UsageError("usage: %%kimi_pin NAME, with the text to pin in the cell body")

        def run() -> None:
            pin = pins.pin_text(self.session, name, cell)
            print(f"Pinned {pin.name!r} (text, ~{pin.tokens:,} tokens).")

        self._guard(run)

    # widget, tools, fan-out
    def _sub_widget(self, rest: str) -> None:
        self._show_widget(self.session)

    def _show_widget(self, session: Session) -> None:
        from .widget import Dashboard

        self._widget_shown = True
        board = self._dashboards.get(session.name)
        if board is None or board.is_closed:
            board = Dashboard(self.sessions, session.name, magic=self)
            self._dashboards[session.name] = board
        display(board)

    def close_dashboards(self) -> None:
        """Close every dashboard (on unload): their observers and front-end views go too."""
        for board in self._dashboards.values():
            board.close()
        self._dashboards.clear()

    def _sub_tool(self, rest: str) -> None:
        from .. import tools

        name = rest.strip()
        if not name:
            raise SessionError("usage: %kimi tool FUNCTION_NAME")
        spec = tools.register_from_namespace(name, self.shell.user_ns)
        print(f"Registered tool {spec['function']['name']!r}: use %%kimi --tools.")

    def _sub_fix(self, rest: str) -> None:
        from . import fix

        fix.fix_last_error(self, rest)

    def _sub_batches(self, rest: str) -> None:
        from . import batches

        batches.collect_magic(self, rest)


def _price(usd: float | None) -> str:
    # A model without prices shows as such, never as $0.
    return dollars(usd, unknown="unpriced")


SUBCOMMANDS = [name[5:] for name in dir(KimiMagic) if name.startswith("_sub_")]


def _parser(sub: str) -> MagicArgumentParser:
    return MagicArgumentParser(prog=f"%kimi {sub}", add_help=False)


def _takes_channel(kernel: Any) -> bool:
    import inspect

    try:
        return "channel" in inspect.signature(kernel.get_parent).parameters
    except (TypeError, ValueError):
        return False


def _strip_fences(text: str) -> str:
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("```"):
        lines = lines[1:]
        if lines and lines[-1].strip().startswith("```"):
            lines = lines[:-1]
    return "\n".join(lines)


def _unquote(text: str) -> str:
    try:
        parts = shlex.split(text)
    except ValueError:
        return text
    return parts[0] if len(parts) == 1 else text


def _one_line(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


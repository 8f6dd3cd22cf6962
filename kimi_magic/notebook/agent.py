"""Agent mode: the notebook tools ``%%kimi --agent`` offers, and the log of executed cells.

``list_variables``, ``inspect_variable``, ``read_cells``, ``run_python`` and ``propose_cell``
see the kernel's own namespace and history. Nothing runs unapproved: each ``run_python`` shows
its code and asks through ``input()`` (``KimiMagic.agent_approval``: "ask", "yes" or "never",
where ``run_python`` is not offered; ``--yes`` approves one cell's calls). ``CellLog`` records
every executed cell (source, printed text, error, variables changed) for ``read_cells`` and
for the note of what ran since the last turn (:mod:`kimi_magic.core.notebook_context`).
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import io
import itertools
import linecache
import re
import signal
import sys
import threading
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import SessionError
from ..core.notebook_context import CellRun, Change, note
from ..core.redact import env_secrets, redact
from ..core.session import Session
from ..core.text import bounded, clip

#: Cells the log keeps (the note and ``read_cells`` only look at recent ones).
MAX_LOGGED_CELLS = 200
#: Printed text kept per logged cell.
MAX_CELL_OUTPUT = 4000
#: Limits on what one notebook tool call returns to the model.
MAX_VARIABLES = 200
MAX_READ_CELLS = 20
MAX_CELL_CHARS = 3000
MAX_STREAM_CHARS = 8000
MAX_TRACEBACK_LINES = 30
INSPECT_TOKENS = 3000
DENIED = "denied by the user: the code was not run. Do not run it again in this turn."
#: When the frontend cannot ask (no stdin: nbclient, papermill, a kernel run without one):
#: nobody said no, so the model must not tell the user they did.
UNASKED = ("not run: this frontend cannot ask the user for approval; they can re-run the cell "
           "with --yes to approve its code. Do not run it again in this turn.")
APPROVALS = ("ask", "yes", "never")
PROMPT = "Run this code? [y/N] "
_NAMES_OF_IPYTHON = {"In", "Out", "exit", "quit", "get_ipython"}


# -- the cell log --------------------------------------------------------------------------
@dataclass
class LoggedCell:
    """One executed cell as the log keeps it."""

    number: int
    source: str
    output: str = ""
    result: str = ""
    error: str | None = None
    changes: tuple[Change, ...] = ()
    #: Position in the log (execution counts repeat for cells run without history).
    seq: int = 0

    @property
    def is_kimi(self) -> bool:
        """A cell of ours (``%%kimi``, ``%kimi``): the conversation already holds it."""
        first = self.source.lstrip().split(None, 1)[0] if self.source.strip() else ""
        return first.lstrip("%") in ("kimi", "kimi_pin")

    @property
    def is_code(self) -> bool:
        """Plain code: not only line magics or shell escapes, and not a cell magic."""
        lines = [ln.strip() for ln in self.source.splitlines() if ln.strip()]
        if not lines or lines[0].startswith("%%"):
            return False
        return not all(ln.startswith(("%", "!", "#")) for ln in lines)

    def run(self) -> CellRun:
        return CellRun(self.number, self.source, self.error, self.changes, self.output)


class _Tee(io.TextIOBase):
    """Forwards writes to the real stream and keeps the first characters for the log."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream, self.limit, self.parts, self.size = stream, limit, [], 0

    def write(self, text: str) -> int:
        if self.size < self.limit:
            piece = text[: self.limit - self.size]
            self.parts.append(piece)
            self.size += len(piece)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def text(self) -> str:
        return "".join(self.parts)


class CellLog:
    """Every cell the shell runs, recorded by IPython's ``pre/post_run_cell`` events.

    Per session it remembers the last cell of its previous turn, so ``note_for`` describes
    what ran since. ``start``/``stop`` are called by ``%load_ext``/``%unload_ext``.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.cells: deque[LoggedCell] = deque(maxlen=MAX_LOGGED_CELLS)
        self._before: dict[str, int] = {}
        self._tee: _Tee | None = None
        self._source = ""
        self._marks: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._started = False

    def start(self) -> None:
        if self.shell is None or self._started:
            return
        self.shell.events.register("pre_run_cell", self._pre)
        self.shell.events.register("post_run_cell", self._post)
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        for name, fn in (("pre_run_cell", self._pre), ("post_run_cell", self._post)):
            try:
                self.shell.events.unregister(name, fn)
            except ValueError:
                pass
        self._untee()
        self._started = False

    # The hooks must never break the user's cell: any failure just records less.
    def _pre(self, info: Any) -> None:
        try:
            self._source = str(getattr(info, "raw_cell", "") or "")
            self._before = {k: id(v) for k, v in self._user_vars().items()}
            self._untee()
            self._tee = _Tee(sys.stdout, MAX_CELL_OUTPUT)
            sys.stdout = self._tee
        except Exception:
            self._tee = None

    def _post(self, result: Any) -> None:
        try:
            output = self._tee.text() if self._tee is not None else ""
            self._untee()
            number = getattr(result, "execution_count", None) or self.shell.execution_count
            err = getattr(result, "error_in_exec", None) or getattr(
                result, "error_before_exec", None)
            value = getattr(result, "result", None)
            self.cells.append(LoggedCell(
                number=int(number), source=self._source, output=_printed(output, err),
                result=clip(_safe_repr(value), 500) if value is not None else "",
                error=f"{type(err).__name__}: {err}" if err is not None else None,
                changes=self._changes(), seq=next(self._seq)))
        except Exception:
            pass

    def _untee(self) -> None:
        if self._tee is not None and sys.stdout is self._tee:
            sys.stdout = self._tee.stream
        self._tee = None

    def _user_vars(self) -> dict[str, Any]:
        return user_variables(self.shell)

    def _changes(self) -> tuple[Change, ...]:
        now = self._user_vars()
        changes = [Change(k, *brief(v)) for k, v in now.items()
                   if self._before.get(k) != id(v)]
        changes += [Change(k, "", deleted=True) for k in self._before if k not in now]
        return tuple(changes)

    # -- what the magic and the tools ask -------------------------------------------------
    def mark(self, session: str) -> None:
        """The session's turn is done: later notes start after the cells logged so far."""
        self._marks[session] = self.cells[-1].seq if self.cells else 0

    def note_for(self, session: str, budget: int, secrets: Iterable[str] = ()) -> str:
        """The ``<notebook>`` note of plain code cells run since ``session``'s last turn,
        with ``secrets`` (and secret-named environment values) hidden."""
        since = self._marks.get(session, -1)
        runs = [c.run() for c in self.cells if c.seq > since and c.is_code]
        return redact(note(runs, budget), [*secrets, *env_secrets()])

    def recent(self, count: int) -> list[LoggedCell]:
        cells = [c for c in self.cells if not c.is_kimi]
        return cells[-count:] if count > 0 else []


# -- describing values ---------------------------------------------------------------------
def user_variables(shell: Any) -> dict[str, Any]:
    """The user's variables: no modules, imported callables, ``_``-names or IPython's own."""
    hidden = getattr(shell, "user_ns_hidden", {})
    out = {}
    for name, value in list(shell.user_ns.items()):
        if name.startswith("_") or name in _NAMES_OF_IPYTHON:
            continue
        if name in hidden and hidden[name] is value:
            continue
        if isinstance(value, types.ModuleType):
            continue
        if callable(value) and getattr(value, "__module__", "__main__") not in (
                "__main__", None):
            continue
        out[name] = value
    return out


def brief(value: Any) -> tuple[str, str]:
    """``(type name, shape or length)`` of a value, never raising."""
    kind = type(value).__name__
    try:
        shape = getattr(value, "shape", None)
        if isinstance(shape, tuple):
            return kind, "×".join(f"{n:,}" if isinstance(n, int) else str(n) for n in shape)
        if hasattr(value, "__len__") and not isinstance(value, type):
            return kind, f"length {len(value):,}"
    except Exception:
        pass
    return kind, ""


def approximate_size(value: Any) -> str:
    try:
        nbytes = getattr(value, "nbytes", None)
        if nbytes is None and hasattr(value, "memory_usage"):
            usage = value.memory_usage(index=True)
            nbytes = int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        if not isinstance(nbytes, int):
            nbytes = sys.getsizeof(value)
    except Exception:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return "?"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _printed(text: str, err: BaseException | None) -> str:
    """What the cell printed, without colour codes or a traceback a terminal shell printed
    after it (the error line is kept separately)."""
    text = _ANSI.sub("", text)
    if err is not None:
        at = text.find("Traceback (most recent call last)")
        if at != -1:
            start = text.rfind("\n", 0, at)
            text = text[: max(start, 0)]
            text = text.rstrip().removesuffix("-" * 75).rstrip()
    return text


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as err:
        return f"<repr failed: {type(err).__name__}>"


# -- running code --------------------------------------------------------------------------
class _TimeLimit(BaseException):
    """Raised into the running code at the time limit (not an Exception: code can't swallow
    it with ``except Exception``)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Stop the code inside after ``seconds``: SIGALRM on the main thread (it interrupts
    ``sleep`` too), an asynchronous exception otherwise."""
    if seconds <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum: int, frame: Any) -> None:
            raise _TimeLimit

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        return
    target = threading.get_ident()
    timer = threading.Timer(seconds, lambda: ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(target), ctypes.py_object(_TimeLimit)))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)


_RUNS = itertools.count(1)


def run_code(code: str, namespace: dict[str, Any], timeout: float) -> str:
    """Run ``code`` in ``namespace``; the model's view of what happened, as text.

    Captures stdout, stderr, the value of a last expression and any exception, whose
    traceback (the code's own frames) is returned, not raised. ``KeyboardInterrupt`` is
    raised: Ctrl-C stops the code and the turn.
    """
    filename = f"<kimi run_python #{next(_RUNS)}>"
    try:
        tree = ast.parse(code, filename, "exec")
    except SyntaxError as err:
        return f"SyntaxError: {err.msg} (line {err.lineno})"
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    # Tracebacks show the code's lines, as they would for a cell.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    out, err = io.StringIO(), io.StringIO()
    value: Any = None
    failure = ""
    try:
        with redirect_stdout(out), redirect_stderr(err), time_limit(timeout):
            exec(compile(tree, filename, "exec"), namespace)
            if last is not None:
                value = eval(compile(last, filename, "eval"), namespace)
    except _TimeLimit:
        failure = (f"TimeoutError: stopped after the time limit of {timeout:g} s "
                   "(KimiMagic.agent_timeout); variables it set before that are kept")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: the code's failure, not the cell's
        failure = _traceback(exc, filename)
    parts = []
    for label, text in (("stdout", out.getvalue()), ("stderr", err.getvalue())):
        if text:
            parts.append(f"{label}:\n{bounded(text, MAX_STREAM_CHARS)}")
    if value is not None:
        parts.append(f"value: {bounded(_safe_repr(value), MAX_STREAM_CHARS)}")
    if failure:
        parts.append(f"error:\n{failure}")
    return "\n".join(parts) if parts else "(ran without output)"


def _traceback(exc: BaseException, filename: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    text = "Traceback (most recent call last):\n" + "".join(lines)
    kept = text.splitlines()
    if len(kept) > MAX_TRACEBACK_LINES:
        kept = kept[:4] + ["  …"] + kept[-(MAX_TRACEBACK_LINES - 5):]
    return "\n".join(kept)


# -- the tools -----------------------------------------------------------------------------
@dataclass
class NotebookTools:
    """The notebook tools of one ``%%kimi --agent`` turn.

    ``approval``: "ask" (each ``run_python`` asks through ``input()``), "yes" (approved
    without asking; the code is still shown) or "never" (``run_python`` is not offered).
    """

    shell: Any
    session: Session
    log: CellLog | None = None
    approval: str = "ask"
    timeout: float = 60.0
    show: Callable[[dict[str, str]], None] | None = None
    proposed: bool = False
    ran_code: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.approval not in APPROVALS:
            raise SessionError(f"KimiMagic.agent_approval must be one of "
                               f"{', '.join(APPROVALS)}, not {self.approval!r}")

    def tools(self) -> list[Any]:
        """The ``Tool`` objects to offer."""
        from ..tools import make_tool

        fns = [self.list_variables, self.inspect_variable, self.read_cells]
        if self.approval != "never":
            fns.append(self.run_python)
        fns.append(self.propose_cell)
        return [make_tool(fn) for fn in fns]

    def list_variables(self) -> str:
        """List the notebook's variables: name, type, shape or length, approximate size."""
        found = user_variables(self.shell)
        if not found:
            return "The notebook defines no variables yet."
        rows = []
        for name, value in list(found.items())[:MAX_VARIABLES]:
            kind, shape = brief(value)
            rows.append(f"{name}: {kind}{', ' + shape if shape else ''}, "
                        f"~{approximate_size(value)}")
        if len(found) > MAX_VARIABLES:
            rows.append(f"… {len(found) - MAX_VARIABLES} more not listed")
        return "\n".join(rows)

    def inspect_variable(self, name: str) -> str:
        """Describe one notebook variable: dataframes get shape, dtypes, sample rows and
        describe; arrays shape, dtype and a sample; other objects a bounded repr.

        Args:
            name: the variable's name, as listed by list_variables
        """
        from .. import pins

        name = name.strip()
        if name not in self.shell.user_ns:
            known = ", ".join(list(user_variables(self.shell))[:20]) or "none"
            return f"Error: there is no variable named {name!r} (variables: {known})."
        try:
            kind, text = pins.describe(self.shell.user_ns[name], name, INSPECT_TOKENS)
        except SessionError as err:
            return f"Error: {err}"
        return f"{name} ({kind}):\n{text}"

    def read_cells(self, count: int = 5) -> str:
        """The last executed cells: source, printed text, result and any error line.

        Args:
            count: how many of the most recent cells to read (at most 20)
        """
        count = max(1, min(int(count), MAX_READ_CELLS))
        cells = self.log.recent(count) if self.log is not None else []
        if not cells:
            return "No cells have run yet (apart from %%kimi cells)."
        parts = []
        for c in cells:
            text = f"In [{c.number}]:\n{c.source.strip()}"
            if c.output:
                text += f"\nprinted:\n{c.output.rstrip()}"
            if c.result:
                text += f"\nOut [{c.number}]: {c.result}"
            if c.error:
                text += f"\nerror: {c.error}"
            parts.append(bounded(text, MAX_CELL_CHARS))
        return "\n\n".join(parts)

    def run_python(self, code: str) -> str:
        """Run Python code in the notebook's kernel (variables it defines stay) once the user
        approves; returns its printed output, the value of a last expression and any error.

        Args:
            code: the Python code to run
        """
        if self.approval == "never":
            return "Error: running code is turned off (KimiMagic.agent_approval = 'never')."
        self._show({"text/markdown": f"Kimi wants to run:\n\n```python\n{code}\n```",
                    "text/plain": f"Kimi wants to run:\n{code}"})
        if self.approval != "yes":
            approved = self._approved()
            if approved is None:
                return UNASKED
            if not approved:
                self._show({"text/plain": "Not run: denied."})
                return DENIED
        if not self.ran_code:
            # The conversation before this turn, for a rollback (the kernel's variables
            # cannot be rolled back: they stay as the code leaves them).
            self.session.snapshot("auto: before Kimi ran code", auto=True)
            self.ran_code = True
        return run_code(code, self.shell.user_ns, self.timeout)

    def propose_cell(self, code: str) -> str:
        """Put code in a new cell below the current one for the user to review and run
        (at most one per turn).

        Args:
            code: the code for the new cell
        """
        if self.proposed:
            return "Error: a cell was already proposed in this turn; only one is allowed."
        self.shell.set_next_input(code, replace=False)
        self.proposed = True
        return "The cell was put below for the user to review and run; it has not run."

    def _approved(self) -> bool | None:
        """The user's answer; None when this frontend cannot ask (said in the cell)."""
        try:
            # builtins.input at call time: the kernel swaps in its stdin-channel input
            # for each execution.
            answer = builtins.input(PROMPT)
        except (EOFError, OSError, RuntimeError, NotImplementedError) as err:
            self._show({"text/plain": f"Cannot ask for approval here ({type(err).__name__});"
                        " not run. Use --yes to approve this cell's code."})
            return None
        except Exception:
            return False
        return str(answer).strip().lower() in ("y", "yes")

    def _show(self, bundle: dict[str, str]) -> None:
        if self.show is not None:
            self.show(bundle)

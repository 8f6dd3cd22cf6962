"""Tools: ``%kimi tool NAME`` registers a notebook function; ``%kimi fix`` repairs the last
failing cell."""

from __future__ import annotations

import sys
import traceback
from typing import Any

from ... import tools as tool_module
from ...core.errors import SessionError
from . import ask
from .registry import arg, command

FIX_PROMPT = """This notebook cell failed. Fix it.
Reply with the corrected cell only, as one Python code block, and no explanation outside it.

The cell:
```python
{cell}
```

The error:
```
{error}
```"""


@command("tool",
         arg("name", metavar="NAME", help="A function defined in the notebook; its "
             "signature and docstring become the tool's schema."),
         arg("--confirm", action="store_true", help="Ask before each call (for functions "
             "with side effects)."))
def tool(magic: Any, args: Any) -> None:
    """Let the model call a notebook function in %%kimi --tools cells.

    Example: %kimi tool lookup_price --confirm
    """
    spec = tool_module.register_from_namespace(args.name, magic.shell.user_ns,
                                               confirm=args.confirm)
    print(f"Registered tool {spec['function']['name']!r}: use %%kimi --tools.")


@command("fix", arg("instructions", nargs="*", metavar="INSTRUCTIONS",
                    help="Extra instructions for the fix."))
def fix(magic: Any, args: Any) -> Any:
    """Send the last failing cell and its traceback; the fixed cell is put below.

    Example: %kimi fix keep the loop, don't vectorise
    """
    cell, error = last_error(magic.shell)
    prompt = FIX_PROMPT.format(cell=cell or "(source not found)", error=error)
    extra = " ".join(args.instructions)
    if extra.strip():
        prompt += f"\n\nAlso: {extra.strip()}"
    return ask.run(magic, ask.CELL.parse("--format code --no-interpolate"), prompt)


def last_error(shell: Any) -> tuple[str, str]:
    """(the failing cell's source, its traceback as text) of the kernel's last error."""
    etype = getattr(sys, "last_type", None)
    value = getattr(sys, "last_value", None)
    tb = getattr(sys, "last_traceback", None)
    if value is None or etype is None:
        raise SessionError("there is no error to fix: %kimi fix works after a cell failed")
    cell_files = getattr(getattr(shell, "compile", None), "_filename_map", {}) or {}
    frames = traceback.extract_tb(tb) if tb is not None else []
    cell = ""
    for frame in reversed(frames):
        number = cell_files.get(frame.filename)
        if number is not None:
            history = shell.user_ns.get("In") or []
            cell = history[number] if 0 <= number < len(history) else ""
            break
    if not cell:
        history = shell.user_ns.get("In") or []
        cell = history[-2] if len(history) >= 2 else ""
    # Frames inside IPython's machinery say nothing about the user's bug.
    shown = [f for f in frames if "IPython" not in f.filename.replace("\\", "/").split("/")]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown),
             *traceback.format_exception_only(etype, value)]
    return cell.strip(), "".join(lines).strip()

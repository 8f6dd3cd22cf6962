"""``%kimi fix [instructions]``: send the last failing cell and its traceback, put the fixed
cell below."""

from __future__ import annotations

import sys
import traceback
from typing import Any

from IPython.core.magic_arguments import parse_argstring

from ..core.errors import SessionError

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


def fix_last_error(magic: Any, rest: str) -> Any:
    """``%kimi fix [extra instructions]``: ask for a fixed cell and put it in the next cell."""
    cell, error = last_error(magic.shell)
    prompt = FIX_PROMPT.format(cell=cell or "(source not found)", error=error)
    if rest.strip():
        prompt += f"\n\nAlso: {rest.strip()}"
    args = parse_argstring(magic.kimi, "--format code --no-interpolate")
    return magic.ask(args, prompt)

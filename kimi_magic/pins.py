"""Pins: dataframes, files, variables, figures and cell text put into the context.

A pin is one message holding a delimited block (``<pinned name=... kind=... source=...>``)
that sits after the system prompt and before the history, inside the stable prefix Kimi's
prompt cache reuses. ``pin`` renders a variable, an expression or a file within the pin's token
budget and always says what it left out; ``refresher`` re-renders live pins before each request
and keeps the very same message while nothing changed, so the prefix stays byte-identical.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import reprlib
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .core import tokens
from .core.context import Context, Message, Pin, block
from .core.errors import SessionError
from .core.text import clip
from .wire.messages import image_part, text_part

if TYPE_CHECKING:
    from .core.session import Session
    from .wire.client import KimiClient

#: A pin's token budget when none is given (``%kimi pin df --max-tokens N`` overrides it).
DEFAULT_MAX_TOKENS = 4000
#: Images are scaled down so that their longer side is at most this many pixels.
IMAGE_MAX_SIDE = 1024
#: Rows a dataframe pin shows at most, however large its budget.
MAX_SAMPLE_ROWS = 200
#: Columns listed in the rows sample and the summary of a wide frame.
MAX_ROW_COLUMNS = 50
#: Longer text cells are clipped in the rows sample.
MAX_CELL_CHARS = 200
#: A repr longer than this is refused: a few kilobytes of it would not help the model.
ENORMOUS_CHARS = 1_000_000
#: Text files larger than this are refused rather than read.
MAX_TEXT_BYTES = 50 * 1024 * 1024

FRAME_FILES = (".csv", ".tsv", ".parquet", ".pq")
DOCUMENT_FILES = (".pdf", ".docx", ".xlsx", ".pptx", ".doc", ".xls", ".ppt")
IMAGE_FILES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
CODE_FILES = (".py", ".r", ".sql", ".js", ".ts", ".java", ".c", ".h", ".cpp", ".hpp", ".go",
              ".rs", ".rb", ".sh", ".jl", ".scala", ".kt", ".swift", ".toml", ".yaml", ".yml",
              ".cfg", ".ini", ".html", ".css")
_KNOWN_FILES = (FRAME_FILES + DOCUMENT_FILES + IMAGE_FILES + CODE_FILES
                + (".json", ".ipynb", ".txt", ".md", ".rst", ".log", ".jsonl", ".xml"))




# -- public API -------------------------------------------------------------------------------
def pin(session: Session, target: str, namespace: Mapping[str, Any], *, name: str | None = None,
        max_tokens: int | None = None, frozen: bool = False, cwd: str | None = None) -> Pin:
    """Pin a variable, an expression or a file into ``session``'s context.

    ``target`` is looked up as a variable of ``namespace`` first, then as a file path
    (relative to ``cwd``), then evaluated as an expression (``df.head(100)``). Live pins
    (the default) are re-rendered before each request; ``frozen`` keeps this rendering.

    >>> pin(session, "df", {"df": df}).kind
    'dataframe'
    """
    target = (target or "").strip()
    if not target:
        raise SessionError("usage: %kimi pin VARIABLE_OR_PATH [--as NAME] [--max-tokens N]")
    if max_tokens is not None and max_tokens <= 0:
        raise SessionError("--max-tokens must be a positive number")
    if name is not None and not name.strip():
        raise SessionError("--as needs a non-empty name")
    source, value = _resolve(target, namespace, cwd)
    pin_name = name.strip() if name else _default_name(source)
    kind, message = _render(source, value, pin_name, max_tokens or DEFAULT_MAX_TOKENS,
                            lambda: session.client)
    made = Pin(pin_name, kind, source, message, frozen=frozen, updated=session.clock(),
               max_tokens=max_tokens)
    session.set_pin(made)
    return made


def describe(value: Any, label: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> tuple[str, str]:
    """``(kind, text)``: ``value`` rendered as a pin of it would be, within ``max_tokens``.

    Dataframes and series get shape, dtypes, a head-and-tail sample and ``describe``; arrays
    their shape, dtype and a sample; other objects a bounded repr. Images are described, not
    drawn. A repr too large to render raises ``SessionError``.

    >>> describe([1, 2, 3], "xs")[1].splitlines()
    ['type: list, length 3', '[1, 2, 3]']
    """
    kind, content = _render_value(value, label, max_tokens)
    if isinstance(content, _Image):
        return kind, content.description
    return kind, content


def pin_text(session: Session, name: str, text: str) -> Pin:
    """Pin ``text`` (``%%kimi_pin NAME``: conventions, tool docs) whole, under ``name``.

    The text is what the user wrote, so it is never cut; only the total pin budget applies.
    """
    name = (name or "").strip()
    if not name:
        raise SessionError("usage: %%kimi_pin NAME, with the text to pin in the cell body")
    body = (text or "").strip("\n").rstrip()
    if not body.strip():
        raise SessionError(f"nothing to pin as {name!r}: the cell is empty")
    message = Message.of("system", block(name, "text", "cell", body))
    made = Pin(name, "text", "cell", message, frozen=True, updated=session.clock())
    session.set_pin(made)
    return made


def refresher(namespace_getter: Callable[[], Mapping[str, Any]]
              ) -> Callable[[Context], tuple[Context, list[str]]]:
    """A ``Session.refresh_pins`` hook that re-renders live pins before each request.

    Unchanged content keeps the very same ``Message`` (a byte-identical prefix, so the prompt
    cache keeps hitting); changed content replaces the pin in place with one notice line; a
    variable or file that is gone keeps its last rendering, with one notice until it returns.
    ``Session.ask`` sends the returned context and persists it at once (even for ``--once``
    or a failed call), so a refreshed pin survives a kernel restart.
    """
    warned: set[str] = set()
    #: File stat seen for a (source, message hash), so unchanged files are not re-read.
    seen: dict[tuple[str, str], tuple[int, int]] = {}

    def refresh(ctx: Context) -> tuple[Context, list[str]]:
        if not any(_live(p) for p in ctx.pins):
            return ctx, []
        try:
            namespace = namespace_getter()
        except Exception:  # no namespace (kernel shutting down): files still refresh
            namespace = {}
        pins = list(ctx.pins)
        notices: list[str] = []
        for i, p in enumerate(pins):
            if not _live(p):
                continue
            try:
                fresh = _rerender(p, namespace, seen)
            except _Gone as gone:
                if p.name not in warned:
                    warned.add(p.name)
                    notices.append(f"Pin {p.name!r}: {gone}; kept its last rendering.")
                continue
            except Exception as err:  # a refresh must never break the request
                if p.name not in warned:
                    warned.add(p.name)
                    notices.append(f"Pin {p.name!r} could not be re-rendered "
                                   f"({_one_line(err)}); kept its last rendering.")
                continue
            warned.discard(p.name)
            if fresh is None:
                continue
            kind, message = fresh
            if message.data == p.message.data:
                continue
            pins[i] = replace(p, kind=kind, message=message, updated=time.time())
            notices.append(f"Pin {p.name!r} changed ({p.tokens:,} → {message.tokens:,} "
                           "tokens); re-sent.")
        if not notices or all(a is b for a, b in zip(pins, ctx.pins, strict=True)):
            return ctx, notices
        return replace(ctx, pins=tuple(pins)), notices

    return refresh


# -- resolving what to pin ----------------------------------------------------------------------
class _Gone(Exception):
    """What a live pin was made from no longer exists."""


def _resolve(target: str, namespace: Mapping[str, Any], cwd: str | None) -> tuple[str, Any]:
    """``(source, value)``: a variable, a file path, or an evaluated expression."""
    if target.isidentifier() and target in namespace:
        return f"variable {target}", namespace[target]
    path = _path(target, cwd)
    if os.path.isdir(path):
        raise SessionError(f"{path} is a directory: pin one file at a time")
    if os.path.exists(path):
        return f"file {path}", path
    looks_like_path = (os.sep in target or "/" in target
                       or os.path.splitext(target)[1].lower() in _KNOWN_FILES)
    try:
        code = compile(target, "<pin>", "eval")
    except SyntaxError:
        raise SessionError(f"no such file: {path}") from None
    try:
        value = eval(code, dict(namespace))  # the user asked for this expression
    except Exception as err:
        if looks_like_path:
            raise SessionError(f"no such file: {path}") from None
        if isinstance(err, NameError) and target.isidentifier():
            raise SessionError(f"nothing named {target!r} to pin: no such variable, and no "
                               f"file {path}") from None
        raise SessionError(f"could not evaluate {target!r}: {_one_line(err)}") from None
    return f"expression {target}", value


def _path(target: str, cwd: str | None) -> str:
    path = os.path.expanduser(target.strip("'\""))
    return os.path.normpath(os.path.join(cwd or os.getcwd(), path))


def _default_name(source: str) -> str:
    how, _, what = source.partition(" ")
    return os.path.basename(what) if how == "file" else what


def _live(p: Pin) -> bool:
    return not p.frozen and p.source.startswith(("variable ", "expression ", "file "))


def _rerender(p: Pin, namespace: Mapping[str, Any],
              seen: dict[tuple[str, str], tuple[int, int]]) -> tuple[str, Message] | None:
    """A fresh rendering of a live pin, or ``None`` for a file that did not change."""
    how, _, what = p.source.partition(" ")
    limit = p.max_tokens or DEFAULT_MAX_TOKENS
    if how == "variable":
        if what not in namespace:
            raise _Gone(f"variable {what} no longer exists")
        return _render(p.source, namespace[what], p.name, limit, None)
    if how == "expression":
        try:
            value = eval(compile(what, "<pin>", "eval"), dict(namespace))
        except NameError as err:
            raise _Gone(f"{what} cannot be evaluated now ({err})") from None
        return _render(p.source, value, p.name, limit, None)
    try:
        st = os.stat(what)
    except OSError:
        raise _Gone(f"{what} is gone") from None
    stat = (st.st_mtime_ns, st.st_size)
    known = seen.get((p.source, p.message.hash)) or p.message.meta.get("stat")
    if known == stat:
        return None
    if os.path.splitext(what)[1].lower() in DOCUMENT_FILES:
        if known is None:  # first sight after a restart: trust the stored extraction
            seen[(p.source, p.message.hash)] = stat
            return None
        # Re-extracting means an upload; the refresher has no client, so the user decides.
        seen[(p.source, p.message.hash)] = stat
        raise _Gone(f"{what} changed on disk; %kimi pin it again to re-extract")
    kind, message = _render(p.source, what, p.name, limit, None)
    if message.data == p.message.data:
        message = p.message
    seen[(p.source, message.hash)] = stat
    return kind, message


# -- rendering ------------------------------------------------------------------------------------
def _render(source: str, value: Any, name: str, limit: int,
            client: Callable[[], KimiClient] | None) -> tuple[str, Message]:
    """``(kind, message)`` for a pin; the same input always gives the same bytes."""
    if source.startswith("file "):
        return _render_file(source, value, name, limit, client)
    label = source.partition(" ")[2]
    kind, content = _render_value(value, label, limit)
    return kind, _message(name, kind, source, content)


def _message(name: str, kind: str, source: str, content: str | _Image,
             meta: Mapping[str, Any] | None = None) -> Message:
    if isinstance(content, _Image):
        # Images cannot go in a system message in the OpenAI format: a user message carries it.
        return Message({"role": "user", "content": [
            text_part(block(name, kind, source, content.description)),
            image_part(content.data, content.mime),
        ]}, meta)
    return Message({"role": "system", "content": block(name, kind, source, content)}, meta)


def _render_value(value: Any, label: str, limit: int) -> tuple[str, str | _Image]:
    if _is_frame(value):
        return "dataframe", _frame_text(_as_pandas(value), limit)
    if _is_series(value):
        return "series", _series_text(value, limit)
    if _is_figure(value):
        return "image", _figure_image(value)
    if _is_pil(value):
        return "image", _pil_image(value, "image")
    if isinstance(value, str):
        return "text", _fit_text(value, limit)
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.ismethod(value):
        kind = "class" if inspect.isclass(value) else "function"
        try:
            code = textwrap.dedent(inspect.getsource(value)).rstrip()
        except (OSError, TypeError):
            return kind, _repr_text(value, label, limit, note="source unavailable; repr shown")
        return kind, _fit_text(code, limit)
    return "repr", _repr_text(value, label, limit)


# -- dataframes -----------------------------------------------------------------------------------
def _is_frame(value: Any) -> bool:
    module = type(value).__module__
    if module.startswith("pandas"):
        import pandas as pd

        return isinstance(value, pd.DataFrame)
    # polars and other frames by duck typing: a schema, a shape and a pandas bridge.
    return (module.startswith("polars") and hasattr(value, "to_pandas")
            and hasattr(value, "schema") and len(getattr(value, "shape", ())) == 2)


def _is_series(value: Any) -> bool:
    if type(value).__module__.startswith("pandas"):
        import pandas as pd

        return isinstance(value, pd.Series)
    return False


def _as_pandas(value: Any) -> Any:
    return value if type(value).__module__.startswith("pandas") else value.to_pandas()


def _series_text(series: Any, limit: int) -> str:
    label = "value" if series.name is None else str(series.name)
    head = f"Series {label!r}, dtype {series.dtype}, length {len(series):,}"
    return head + "\n" + _frame_text(series.to_frame(name=label), limit - tokens.count(head))


def _frame_text(df: Any, limit: int) -> str:
    """Shape, dtypes, a head-and-tail sample of rows and a summary, within ``limit`` tokens."""
    n_rows, n_cols = df.shape
    parts = [f"shape: {n_rows:,} rows × {n_cols:,} columns"]
    columns = [f"  {_cell(c)}: {t}" for c, t in zip(df.columns, df.dtypes, strict=True)]
    listed = _lines_that_fit(columns, max(limit * 2 // 5, 40))
    parts.append("columns (dtype):\n" + "\n".join(columns[:listed]))
    if listed < n_cols:
        parts.append(f"  … {n_cols - listed:,} more columns not listed")
    fixed = "\n".join(parts)
    summary = _summary(df)
    left = limit - tokens.count(fixed)
    if summary and tokens.count(summary) > left * 2 // 5:
        summary = "summary (describe): left out, it would not fit the pin's budget"
    left -= tokens.count(summary) + 8
    rows = _rows_that_fit(df, max(left, 0))
    text = "\n".join([fixed, rows, summary] if summary else [fixed, rows])
    return _fit_text(text, limit)


def _summary(df: Any) -> str:
    if df.shape[1] == 0 or df.shape[0] == 0:
        return ""
    try:
        desc = df.iloc[:, :MAX_ROW_COLUMNS].describe()
        text = desc.to_string(float_format=lambda x: f"{x:.6g}", max_colwidth=40)
    except Exception as err:  # odd dtypes: the pin is still useful without it
        return f"summary (describe): unavailable ({_one_line(err)})"
    more = (f" (first {MAX_ROW_COLUMNS} of {df.shape[1]:,} columns)"
            if df.shape[1] > MAX_ROW_COLUMNS else "")
    return f"summary (describe{more}):\n{text}"


def _rows_that_fit(df: Any, budget: int) -> str:
    """The largest head-and-tail sample whose CSV fits ``budget`` tokens, saying what it left."""
    n_rows = len(df)
    if n_rows == 0:
        return "rows: none (the frame is empty)"
    wide = df.shape[1] > MAX_ROW_COLUMNS
    frame = df.iloc[:, :MAX_ROW_COLUMNS] if wide else df
    cols = f"; first {MAX_ROW_COLUMNS} of {df.shape[1]:,} columns" if wide else ""

    def render(n: int) -> str:
        if n >= n_rows:
            return f"rows: all {n_rows:,}{cols}\n" + _csv(frame)
        if n == 0:
            return (f"rows: left out (showing 0 of {n_rows:,} rows): even one row would not "
                    "fit the pin's budget")
        first, last = (n + 1) // 2, n // 2
        cap = f"; at most {MAX_SAMPLE_ROWS} are shown" if n == MAX_SAMPLE_ROWS else ""
        head = (f"rows: showing {n:,} of {n_rows:,} (first {first:,}, last {last:,}{cap})"
                f"{cols}\n")
        text = head + _csv(frame.iloc[:first])
        if last:
            text += "\n…\n" + _csv(frame.iloc[n_rows - last:], header=False)
        return text

    lo, hi = 0, min(n_rows, MAX_SAMPLE_ROWS)
    if tokens.count(render(hi)) <= budget:
        lo = hi
    else:
        while lo < hi - 1:  # invariant: lo fits (or is 0), hi does not
            mid = (lo + hi) // 2
            if tokens.count(render(mid)) <= budget:
                lo = mid
            else:
                hi = mid
    return render(lo)


def _csv(frame: Any, header: bool = True) -> str:
    from pandas.api.types import is_object_dtype, is_string_dtype

    clipped = frame.copy()
    for i, dtype in enumerate(clipped.dtypes):
        if is_object_dtype(dtype) or is_string_dtype(dtype):
            clipped.isetitem(i, clipped.iloc[:, i].map(_clip))
    return clipped.to_csv(header=header, lineterminator="\n").rstrip("\n")


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        return value[:MAX_CELL_CHARS] + f"…[+{len(value) - MAX_CELL_CHARS:,} chars]"
    return value


def _cell(value: Any) -> str:
    return str(value).replace("\n", " ")


def _lines_that_fit(lines: list[str], budget: int) -> int:
    total = 0
    for i, line in enumerate(lines):
        total += tokens.count(line) + 1
        if total > budget:
            return max(i, 1)
    return len(lines)


# -- other objects --------------------------------------------------------------------------------
_BIG_CONTAINER = 1000


def _repr_text(value: Any, label: str, limit: int, note: str = "") -> str:
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    head = f"type: {kind}"
    try:
        shape = getattr(value, "shape", None)
        if shape is not None and isinstance(shape, tuple):
            head += f", shape {shape}, dtype {getattr(value, 'dtype', '?')}"
        elif hasattr(value, "__len__"):
            head += f", length {len(value):,}"
    except Exception:
        pass
    if note:
        head += f" ({note})"
    try:
        if isinstance(value, (list, tuple, set, frozenset, dict)) and len(value) > _BIG_CONTAINER:
            # Never build the whole repr of a huge container just to cut it.
            short = reprlib.Repr()  # keyword arguments only from Python 3.12
            short.maxlist = short.maxtuple = short.maxset = short.maxfrozenset = 100
            short.maxdict, short.maxstring, short.maxother, short.maxlevel = 50, 200, 200, 3
            text = short.repr(value) + f"\n[bounded repr: the first items of {len(value):,}]"
        else:
            text = repr(value)
    except Exception as err:
        raise SessionError(f"cannot pin {label}: its repr raised {_one_line(err)}") from None
    if not isinstance(text, str):
        raise SessionError(f"cannot pin {label}: its repr is not a string")
    if len(text) > max(ENORMOUS_CHARS, limit * 16):
        raise SessionError(f"cannot pin {label}: its repr is {len(text):,} characters; pin a "
                           "slice or a summary of it instead")
    return head + "\n" + _fit_text(text, limit - tokens.count(head) - 1)


def _fit_text(text: str, limit: int) -> str:
    """``text`` if it fits ``limit`` tokens, else its first lines and a note on what is left."""
    limit = max(limit, 32)
    # A token is rarely longer than 16 characters: no need to tokenise beyond that.
    if len(text) <= limit and tokens.count(text) <= limit:
        return text
    if len(text) <= limit * 16 and tokens.count(text) <= limit:
        return text
    lines = text.splitlines()
    total_lines = len(lines)

    def note(shown: int) -> str:
        return (f"\n[truncated to the pin's max of {limit:,} tokens: showing lines 1–{shown:,}"
                f" of {total_lines:,}; pin with --max-tokens N to see more]")

    budget = limit - tokens.count(note(total_lines)) - 2
    window = text[: limit * 16]
    kept = window.splitlines()
    if len(text) > len(window) and kept:
        kept = kept[:-1]  # the last line of the window may be cut mid-line
    lo, hi = 0, len(kept)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tokens.count("\n".join(kept[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo > 0:
        return "\n".join(kept[:lo]) + note(lo)
    # One enormous first line (minified JSON, a long repr): cut it by characters.
    line = (lines[0] if lines else text)[: limit * 16]
    lo, hi = 0, len(line)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tokens.count(line[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return (line[:lo] + f"\n[truncated to the pin's max of {limit:,} tokens: showing "
            f"{lo:,} of {len(text):,} characters; pin with --max-tokens N to see more]")


# -- images -------------------------------------------------------------------------------------
class _Image:
    def __init__(self, data: bytes, mime: str, description: str) -> None:
        self.data, self.mime, self.description = data, mime, description


def _is_figure(value: Any) -> bool:
    return type(value).__module__.startswith("matplotlib") and (
        hasattr(value, "savefig") or hasattr(value, "get_figure"))


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save") and hasattr(
        value, "size")


def _figure_image(value: Any) -> _Image:
    fig = value if hasattr(value, "savefig") else value.get_figure()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _image(buf.getvalue(), "matplotlib figure")


def _pil_image(img: Any, what: str) -> _Image:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return _image(buf.getvalue(), f"{what} (PIL)")


def _image(data: bytes, what: str) -> _Image:
    """The image as PNG or JPEG, its longer side at most ``IMAGE_MAX_SIDE`` pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        # Pillow's own message names the in-memory buffer, not anything the user knows.
        raise SessionError(f"cannot read the {what} as an image: its {len(data):,} bytes "
                           "are not in a format Pillow reads (PNG, JPEG, GIF, WebP, BMP, "
                           "TIFF...)") from None
    except OSError as err:
        raise SessionError(f"cannot read the {what} as an image ({len(data):,} bytes): "
                           f"{_one_line(err)}") from None
    fmt = (img.format or "PNG").upper()
    size = img.size
    if max(size) <= IMAGE_MAX_SIDE and fmt in ("PNG", "JPEG"):
        out, mime = data, f"image/{fmt.lower()}"
        sized = f"{size[0]}×{size[1]} px"
    else:
        img = img.copy()
        img.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
        buf = io.BytesIO()
        if fmt == "JPEG":
            img.convert("RGB").save(buf, format="JPEG", quality=90)
            mime = "image/jpeg"
        else:
            if img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                img = img.convert("RGBA")
            img.save(buf, format="PNG")
            mime = "image/png"
        out = buf.getvalue()
        sized = (f"{img.size[0]}×{img.size[1]} px (scaled down from {size[0]}×{size[1]})"
                 if img.size != size else f"{size[0]}×{size[1]} px")
    return _Image(out, mime, f"{what}, {sized}, {mime}; the image follows.")


# -- files ----------------------------------------------------------------------------------------
def _render_file(source: str, path: str, name: str, limit: int,
                 client: Callable[[], KimiClient] | None) -> tuple[str, Message]:
    try:
        st = os.stat(path)
    except OSError:
        raise SessionError(f"no such file: {path}") from None
    ext = os.path.splitext(path)[1].lower()
    kind: str
    content: str | _Image
    if ext in FRAME_FILES:
        kind, content = "dataframe", _frame_text(_read_frame(path, ext), limit)
    elif ext in IMAGE_FILES:
        kind, content = "image", _image(_read_bytes(path), f"image file {os.path.basename(path)}")
    elif ext in DOCUMENT_FILES:
        if client is None:
            raise SessionError(f"{path}: documents are re-extracted only by %kimi pin")
        text = client().files.extract(path)
        kind = "document"
        content = _fit_text(text, limit) if text.strip() else "(no text could be extracted)"
    elif ext == ".ipynb":
        kind, content = "notebook", _fit_text(_notebook_text(path), limit)
    else:
        text, note = _decode(path)
        if ext == ".json":
            try:
                text, kind = json.dumps(json.loads(text), indent=2, ensure_ascii=False), "json"
            except ValueError as err:
                note = (note + "; " if note else "") + f"not valid JSON ({err.msg}), shown as text"
                kind = "json"
        else:
            kind = "code" if ext in CODE_FILES else "text"
        body = _fit_text(text, limit - (tokens.count(note) + 4 if note else 0))
        content = f"[{note}]\n{body}" if note else body
    return kind, _message(name, kind, source, content, {"stat": (st.st_mtime_ns, st.st_size)})


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise SessionError(f"cannot read {path}: {err.strerror or err}") from None


def _read_frame(path: str, ext: str) -> Any:
    import pandas as pd

    try:
        if ext in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if ext == ".tsv" else ",")
    except Exception as err:
        raise SessionError(f"cannot read {path} as {ext[1:].upper()}: {_one_line(err)}"
                           ) from None


def _decode(path: str) -> tuple[str, str]:
    """The file's text and a note on its encoding when it was not plain UTF-8."""
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise SessionError(f"cannot read {path}: {err.strerror or err}") from None
    if size > MAX_TEXT_BYTES:
        raise SessionError(f"{path} is {size:,} bytes, too large to pin as text; pin a "
                           "part of it (e.g. read it into a variable and pin a slice)")
    data = _read_bytes(path)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace"), "encoding: UTF-16"
    binary = SessionError(f"{path} is a binary file ({len(data):,} bytes): pin text, code, "
                          "CSV/Parquet/JSON, notebooks, images, PDF or Office files")
    if b"\x00" in data[:8192]:
        raise binary
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        best = None
    else:
        matches = from_bytes(data)
        best = matches.best()
        if best is not None:
            # Equally plausible code pages (cp1250 vs cp1252 for French text) tie often;
            # Windows-1252 is by far the most common non-UTF-8 text, so it wins ties.
            tied = [m for m in matches
                    if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
            best = next((m for m in tied if m.encoding == "cp1252"), best)
        if best is None:  # no code page makes sense of it: compressed or binary data
            raise binary
        return str(best), f"encoding: {best.encoding} (detected; not UTF-8)"
    return data.decode("latin-1"), ("not valid UTF-8: decoded as latin-1, some characters "
                                    "may be wrong")


def _notebook_text(path: str) -> str:
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:
        raise SessionError(f"cannot read {path} as a notebook: {_one_line(err)}") from None
    language = nb.metadata.get("kernelspec", {}).get("language") or nb.metadata.get(
        "language_info", {}).get("name", "")
    cells = [f"--- cell {i} [{cell.cell_type}] ---\n{cell.source}"
             for i, cell in enumerate(nb.cells, 1)]
    head = f"notebook: {len(nb.cells)} cells" + (f", language {language}" if language else "")
    return "\n".join([head, *cells])


def _one_line(err: BaseException | str) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, BaseException):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return clip(text, 300, marker="...")

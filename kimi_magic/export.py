"""Export a session to a notebook, Markdown or JSON, and import a JSON export back.

``%kimi export PATH`` picks the format from the extension: ``.ipynb`` (one Markdown cell per
message, reasoning folded in ``<details>``, usage and cost in each cell's ``metadata["kimi"]``),
``.md`` (the same, as one document) or ``.json`` (a complete, versioned copy that
``%kimi import PATH [--as NAME]`` loads into a new session). The API key is never written.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.context import Context, Message, Pin
from .core.errors import SessionError
from .core.session import Session

if TYPE_CHECKING:
    from .core.sessions import Sessions

FORMAT = "kimi_magic.session"
VERSION = 1
EXTENSIONS = (".ipynb", ".md", ".json")


def export(session: Session, path: str | Path, *, snapshots: bool = False) -> str:
    """Write ``session`` to ``path`` (.ipynb, .md or .json); returns the path written.

    >>> import json, tempfile
    >>> from kimi_magic.core.settings import Settings
    >>> from kimi_magic.core.store import Store
    >>> folder = Path(tempfile.mkdtemp())
    >>> settings = Settings(api_key="")  # no key: nothing is sent anywhere
    >>> session = Session("demo", settings, store=Store(folder / "store.sqlite"))
    >>> session.set_system("You are terse.")
    True
    >>> written = export(session, folder / "analysis.ipynb")
    >>> cell = json.loads(Path(written).read_text())["cells"][-1]
    >>> "".join(cell["source"]).splitlines()
    ['### System prompt', '', 'You are terse.']
    >>> session.store.close()
    """
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in EXTENSIONS:
        raise SessionError(f"cannot export to {target.name!r}: use a path ending in "
                           ".ipynb, .md or .json")
    with session.lock:
        if suffix == ".json":
            text = json.dumps(to_dict(session, snapshots=snapshots), ensure_ascii=False,
                              indent=1)
        elif suffix == ".md":
            text = to_markdown(session)
        else:
            text = to_notebook(session)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SessionError(f"cannot write {target}: {exc.strerror or exc}") from None
    return str(target)


# -- JSON ------------------------------------------------------------------------------------
def to_dict(session: Session, *, snapshots: bool = False) -> dict[str, Any]:
    """A complete, versioned, key-free representation of the session."""
    data: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "name": session.name,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": _public_settings(session),
        **_context_dict(session.context),
        "turns": [{k: v for k, v in t.items() if k not in ("id", "session")}
                  for t in session.calls],
    }
    if snapshots:
        data["snapshots"] = [
            {"id": s.id, "label": s.label, "time": s.time, "rounds": s.rounds,
             "tokens": s.tokens, "parent": s.parent, "auto": s.auto,
             "context": _context_dict(s.context)} for s in session.snapshots]
    return data


def _public_settings(session: Session) -> dict[str, Any]:
    settings = session.settings.public()
    # A base URL may carry credentials (https://user:secret@host/v1): keep host and path only.
    settings["base_url"] = re.sub(r"//[^/@]*@", "//", str(settings.get("base_url") or ""))
    return {k: v for k, v in settings.items() if "key" not in k.lower()}


def _context_dict(ctx: Context) -> dict[str, Any]:
    return {
        "system": ctx.system.data if ctx.system else None,
        "pins": [{"name": p.name, "kind": p.kind, "source": p.source, "frozen": p.frozen,
                  "updated": p.updated, "max_tokens": p.max_tokens, "message": p.message.data}
                 for p in ctx.pins],
        "summary": ctx.summary.data if ctx.summary else None,
        "history": [{"message": m.data, "meta": m.meta} for m in ctx.history],
    }


def _context_from(raw: dict[str, Any]) -> Context:
    def message(data: Any) -> Message | None:
        return Message(data) if data else None

    pins = tuple(Pin(p["name"], p.get("kind", "text"), p.get("source", ""),
                     Message(p["message"]), bool(p.get("frozen", False)),
                     float(p.get("updated", 0.0)), p.get("max_tokens"))
                 for p in raw.get("pins") or ())
    history = tuple(Message(h["message"], h.get("meta")) for h in raw.get("history") or ())
    return Context(message(raw.get("system")), pins, message(raw.get("summary")), history)


def load(sessions: Sessions, path: str | Path, name: str | None = None) -> Session:
    """Create a new session in ``sessions``' store from a ``.json`` export.

    Refuses (one line, nothing changed) to overwrite an existing session.
    """
    source = Path(path).expanduser()
    if source.suffix.lower() != ".json":
        raise SessionError(f"only .json exports can be imported, not {source.name!r}")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionError(f"no such file: {source}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError(f"cannot read {source.name} as a kimi_magic export: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionError(f"{source.name} is not a kimi_magic session export")
    if int(data.get("version", 0)) > VERSION:
        raise SessionError(f"{source.name} is export version {data['version']}; this "
                           f"kimi_magic reads up to version {VERSION}: upgrade it")
    name = name or str(data.get("name") or source.stem)
    store = sessions.store
    if name in sessions.open or any(s["name"] == name for s in store.sessions()):
        raise SessionError(f"a session named {name!r} already exists: import with --as NEWNAME")
    try:
        ctx = _context_from(data)
        snapshot_rows = [(s, _context_from(s["context"])) for s in data.get("snapshots") or ()]
    except (KeyError, TypeError, ValueError) as exc:
        raise SessionError(f"{source.name} is damaged ({type(exc).__name__}: {exc})") from None
    with store.transaction() as conn:
        ids: dict[Any, int] = {}
        for row, snap_ctx in snapshot_rows:
            snap_ctx = store.ensure_chain(conn, snap_ctx)
            ids[row.get("id")] = store.add_snapshot(
                conn, name, str(row.get("label") or f"#{len(ids) + 1}"), snap_ctx,
                int(row.get("rounds") or 0), int(row.get("tokens") or 0),
                ids.get(row.get("parent")), bool(row.get("auto")))
        for turn in data.get("turns") or ():
            store.record_turn(conn, name, {**_TURN_DEFAULTS, **{
                k: v for k, v in turn.items() if k in _TURN_DEFAULTS}})
        ctx = store.ensure_chain(conn, ctx)
        state = {"model": sessions.settings.model, "last_call": None, "calibration": 1.0,
                 "current_snapshot": None}
        store.save_head(conn, name, ctx, sessions.settings.model, state)
    # Opened from the store, so the session is exactly what a later kernel would resume.
    return sessions.get(name)


_TURN_DEFAULTS: dict[str, Any] = {
    "time": 0.0, "kind": "chat", "model": None, "prompt_tokens": 0, "cached_tokens": 0,
    "cache_write_tokens": 0, "completion_tokens": 0, "cost": None, "seconds": 0.0,
    "exact": 0, "context_tokens": 0, "cell_id": None}


# -- Markdown and notebooks ------------------------------------------------------------------
def _blocks(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """(markdown, metadata) per message, in request order, each labelled with its role."""
    ctx = session.context
    out: list[tuple[str, dict[str, Any]]] = []
    if ctx.system is not None:
        out.append((f"### System prompt\n\n{ctx.system.text}", {"role": "system",
                                                                 "layer": "system"}))
    for p in ctx.pins:
        out.append((f"### Pin: {p.name}\n\n*{p.kind}, from {p.source}*\n\n{p.message.text}",
                    {"role": "system", "layer": "pin", "pin": p.name, "kind": p.kind}))
    if ctx.summary is not None:
        out.append((f"### Summary of earlier conversation\n\n{ctx.summary.text}",
                    {"role": "system", "layer": "summary"}))
    for m in ctx.history:
        out.append((_message_markdown(m), {"role": m.role, "layer": "history",
                                           **{k: v for k, v in m.meta.items()}}))
    return out


def _message_markdown(m: Message) -> str:
    if m.role == "user":
        head = "### User"
    elif m.role == "tool":
        head = f"### Tool result: {m.data.get('name') or m.tool_call_id}"
    else:
        head = "### Kimi" if m.role == "assistant" else f"### {m.role.title()}"
    parts = [head]
    if m.reasoning:
        parts.append("<details><summary>Reasoning</summary>\n\n" + m.reasoning.strip()
                     + "\n\n</details>")
    if m.text:
        parts.append(m.text if m.role != "tool" else _fence(m.text))
    elif isinstance(m.content, list):
        parts.append("*(image)*")
    for call in m.tool_calls:
        fn = call.get("function") or {}
        parts.append(f"Calls `{fn.get('name', '?')}`:\n\n" + _fence(fn.get("arguments", ""),
                                                                    "json"))
    return "\n\n".join(parts)


def _fence(text: str, lang: str = "") -> str:
    ticks = "`" * max(3, max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _title(session: Session) -> str:
    cost = session.cost()["total"]
    return (f"# Kimi session: {session.name}\n\nModel {session.settings.model} · "
            f"{len(session.context.rounds)} rounds · ~{session.tokens():,} tokens in context · "
            f"${cost:.4f} spent · exported {time.strftime('%Y-%m-%d %H:%M')} by kimi_magic")


def to_markdown(session: Session) -> str:
    return "\n\n---\n\n".join([_title(session), *(text for text, _ in _blocks(session))]) + "\n"


def to_notebook(session: Session) -> str:
    import nbformat
    from nbformat.v4.nbbase import nbformat as major
    from nbformat.v4.nbbase import nbformat_minor as minor
    from nbformat.v4.nbbase import random_cell_id

    def cell(text: str, metadata: dict[str, Any]) -> dict[str, Any]:
        # Plain dicts in the on-disk shape (source split into lines, as nbformat writes it):
        # NotebookNodes, per-cell validation and nbformat's deep copy before writing were
        # most of a 2,000-cell export.
        return {"cell_type": "markdown", "id": random_cell_id(), "metadata": metadata,
                "source": text.splitlines(True)}

    nb = {"cells": [cell(_title(session), {}),
                    *(cell(text, {"kimi": meta}) for text, meta in _blocks(session))],
          "metadata": {"kimi": {"session": session.name, "model": session.settings.model,
                                "format": FORMAT, "version": VERSION}},
          "nbformat": major, "nbformat_minor": minor}
    # Serialised once as nbformat writes it (any non-JSON metadata value becomes text), and
    # validated once, as written: the file a reader gets is the notebook checked.
    text = json.dumps(nb, default=str, ensure_ascii=False, indent=1, sort_keys=True,
                      separators=(",", ": "))
    nbformat.validate(json.loads(text))
    return text

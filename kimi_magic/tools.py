"""Tools the model may call: notebook functions, Kimi's ``$web_search``, the archive, ``fix``.

``@kimi_magic.tool`` (or ``%kimi tool NAME``) registers a function; its JSON schema comes from
the signature, type hints and docstring, within Kimi's rules (<= 128 tools, names
``^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$``, an object at the root, ``type`` on every node).
``%%kimi --tools`` offers them (plus ``recall_archive``), ``--web`` the builtin search.

>>> @tool
... def add(a: int, b: int) -> int:
...     "Add two numbers."
...     return a + b
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .core.errors import SessionError
from .core.redact import env_secrets, redact
from .core.session import Session
from .core.text import bounded
from .wire.messages import WEB_SEARCH_TOOL, is_web_search

#: Kimi accepts at most this many tools per request.
MAX_TOOLS = 128
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$")
#: A tool's result is cut to this many characters before it goes back to the model.
MAX_RESULT_CHARS = 20_000
RECALL = "recall_archive"

Asker = Callable[[str], str]


@dataclass(frozen=True)
class Tool:
    """A registered function and the schema the model sees."""

    name: str
    fn: Callable[..., Any] = field(repr=False)
    spec: dict[str, Any] = field(repr=False)
    confirm: bool = False
    #: ``Optional`` parameters without a default: passed as None when the model omits them.
    nullable: tuple[str, ...] = ()


class Toolbox:
    """The tools registered in this kernel, by name.

    There is one per process (``registry``): ``@tool`` runs in notebook code that has no
    handle on the kernel's ``Sessions``, and ``%kimi tool`` and ``%%kimi --tools`` must see
    the same set. A kernel is one process, so this is per kernel; every session shares it,
    as they share the notebook's functions.
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, fn: Callable[..., Any], *, name: str | None = None,
            confirm: bool = False) -> Tool:
        made = make_tool(fn, name=name, confirm=confirm)
        if made.name not in self._tools and len(self._tools) >= MAX_TOOLS - 2:
            raise SessionError(f"Kimi accepts at most {MAX_TOOLS} tools per request (two are "
                               "kept for recall_archive and $web_search); unregister some")
        self._tools[made.name] = made
        return made

    def remove(self, name: str) -> None:
        if self._tools.pop(name, None) is None:
            raise SessionError(f"no tool named {name!r} (tools: {', '.join(self) or 'none'})")

    def clear(self) -> None:
        self._tools.clear()

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __iter__(self) -> typing.Iterator[str]:
        return iter(list(self._tools))

    def __len__(self) -> int:
        return len(self._tools)

    def tools(self) -> list[Tool]:
        return list(self._tools.values())


registry = Toolbox()


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         confirm: bool = False) -> Any:
    """Register ``fn`` as a tool Kimi may call with ``%%kimi --tools``.

    ``@tool`` or ``@tool(confirm=True)`` (asks you before each call, for functions with side
    effects) or ``@tool(name="other_name")``. The function itself is returned unchanged.
    """
    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        registry.add(f, name=name, confirm=confirm)
        return f

    return register(fn) if fn is not None else register


def register_from_namespace(name: str, namespace: Mapping[str, Any], *,
                            confirm: bool = False) -> dict[str, Any]:
    """``%kimi tool NAME [--confirm]``: register a notebook function; returns its spec."""
    if name not in namespace:
        raise SessionError(f"{name!r} is not defined in the notebook")
    fn = namespace[name]
    if not callable(fn):
        raise SessionError(f"{name!r} is a {type(fn).__name__}, not a function")
    return registry.add(fn, confirm=confirm).spec


# -- schemas ------------------------------------------------------------------------------------

_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}


def make_tool(fn: Callable[..., Any], *, name: str | None = None,
              confirm: bool = False) -> Tool:
    """A ``Tool`` for ``fn``, or a one-line ``SessionError`` saying what Kimi would refuse."""
    if not callable(fn):
        raise SessionError(f"a tool must be a function, not {type(fn).__name__}")
    name = name or getattr(fn, "__name__", "")
    if not NAME.match(name):
        hint = " (a lambda has no name: pass name=...)" if name == "<lambda>" else ""
        raise SessionError(f"tool name {name!r} is not allowed by Kimi: 3-64 letters, digits, "
                           f"_ or -, not starting with a digit{hint}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise SessionError(f"cannot read the signature of {name!r}") from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise SessionError(f"tool {name}: cannot resolve its type hints ({exc})") from None
    summary, param_docs = _parse_doc(inspect.getdoc(fn) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    nullable: list[str] = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.kind is p.VAR_POSITIONAL:
            raise SessionError(f"tool {name}: *{p.name} cannot be described to the model; "
                               "use a list parameter")
        if p.kind is p.POSITIONAL_ONLY:
            raise SessionError(f"tool {name}: positional-only parameter {p.name!r}; the model "
                               "passes arguments by name")
        annotation = hints.get(p.name, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty:
            annotation = type(p.default) if p.default not in (inspect.Parameter.empty,
                                                              None) else str
        try:
            schema, optional = _schema(annotation)
        except TypeError as exc:
            raise SessionError(f"tool {name}: parameter {p.name!r} has an unsupported type "
                               f"{exc} (use int, float, str, bool, list[...], dict, Literal "
                               "or Optional)") from None
        if p.name in param_docs:
            schema["description"] = param_docs[p.name]
        if p.default is not inspect.Parameter.empty:
            if _jsonable(p.default) and p.default is not None:
                schema["default"] = p.default
        elif optional:
            nullable.append(p.name)
        else:
            required.append(p.name)
        properties[p.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    spec = {"type": "function", "function": {
        "name": name, "description": summary or name.replace("_", " "),
        "parameters": parameters}}
    return Tool(name, fn, spec, confirm, tuple(nullable))


def _schema(tp: Any) -> tuple[dict[str, Any], bool]:
    """JSON schema of a type hint, and whether it allowed None. TypeError if unsupported."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(_type_name(tp))
        return _schema(rest[0])[0], True
    if tp is Any:
        return {"type": "string"}, False
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}, False
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALARS:
            raise TypeError(_type_name(tp))
        return {"type": _SCALARS[next(iter(kinds))], "enum": list(args)}, False
    if tp in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset,
                                                          _abc("Sequence"), _abc("Iterable")):
        item = args[0] if args and args[0] is not Ellipsis else None
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        elif origin is tuple and args and len(set(args)) > 1:
            raise TypeError(_type_name(tp))
        schema: dict[str, Any] = {"type": "array"}
        if item is not None:
            schema["items"] = _schema(item)[0]
        return schema, False
    if tp is dict or origin in (dict, _abc("Mapping")):
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = _schema(args[1])[0]
        return schema, False
    raise TypeError(_type_name(tp))


def _abc(name: str) -> Any:
    import collections.abc

    return getattr(collections.abc, name)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


_SECTION = re.compile(r"^(args|arguments|parameters|params)\s*:\s*$", re.I)
_PARAM = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SPHINX = re.compile(r"^\s*:param\s+(?:[\w\[\], |]+\s+)?(\w+)\s*:\s*(.+)$")


def _parse_doc(doc: str) -> tuple[str, dict[str, str]]:
    """First line as the description; ``name: text`` lines of an Args section per parameter.

    Google style (``Args:`` then indented ``name (type): text``, continuation lines indented
    deeper) and Sphinx style (``:param name: text``).
    """
    lines = doc.splitlines()
    summary = lines[0].strip() if lines else ""
    params = {m.group(1): m.group(2).strip() for line in lines if (m := _SPHINX.match(line))}
    for i, header in enumerate(lines):
        if not _SECTION.match(header.strip()):
            continue
        top = _indent(header)
        param_indent: int | None = None
        current: str | None = None
        for line in lines[i + 1:]:
            if not line.strip():
                continue
            indent = _indent(line)
            if indent <= top:
                break
            param_indent = indent if param_indent is None else param_indent
            m = _PARAM.match(line)
            if m and indent == param_indent:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current:
                params[current] += " " + line.strip()
        break
    return summary, params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# -- one turn's tools --------------------------------------------------------------------------

class Toolset:
    """What one ``ask`` may call: functions, the archive, ``$web_search``; runs each call.

    Implements ``turn.Tools``: ``specs`` go into the request, ``run(call)`` returns the text
    of the tool message, ``max_steps`` bounds the loop. Every result is scanned before it is
    returned: ``secrets`` (the API key), and the values of environment variables whose names
    look like secrets at the time of the call, become ``[hidden]`` — so nothing a tool prints
    reaches the model, the store, an export or the screen.
    """

    def __init__(self, tools: Iterable[Tool] = (), *, session: Session | None = None,
                 web: bool = False, max_steps: int = 8, ask: Asker | None = None,
                 max_result_chars: int = MAX_RESULT_CHARS,
                 secrets: Iterable[str] = ()) -> None:
        self.tools = {t.name: t for t in tools}
        self.session = session
        self.secrets = [s for s in secrets if s]
        if session is not None and session.settings.api_key:
            self.secrets.append(session.settings.api_key)
        self.web = web
        self.max_steps = max_steps
        self.ask = ask or input
        self.max_result_chars = max_result_chars
        #: ``$web_search`` calls run through this toolset (each billed by Moonshot).
        self.web_calls = 0
        if session is not None and RECALL not in self.tools:
            self.tools[RECALL] = _recall_tool(session)
        if len(self.tools) + web > MAX_TOOLS:
            raise SessionError(f"{len(self.tools) + web} tools, but Kimi accepts at most "
                               f"{MAX_TOOLS} per request")

    @property
    def specs(self) -> list[dict[str, Any]]:
        specs = [t.spec for t in self.tools.values()]
        return specs + ([WEB_SEARCH_TOOL] if self.web else [])

    def run(self, call: dict[str, Any]) -> str:
        """The tool message's content for one call, secrets hidden; failures become text."""
        # Read the environment per call: code the model ran may have set a secret since.
        return redact(self._run(call), [*self.secrets, *env_secrets()])

    def _run(self, call: dict[str, Any]) -> str:
        fn_part = call.get("function") or {}
        name = str(fn_part.get("name", ""))
        raw = fn_part.get("arguments") or ""
        if is_web_search(call) and self.web:
            # Moonshot's protocol: the search runs server-side; echo the arguments verbatim.
            self.web_calls += 1
            return raw
        found = self.tools.get(name)
        if found is None:
            known = ", ".join(self.tools) or "none"
            return f"Error: there is no tool named {name!r}; available: {known}."
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            return (f"Error: the arguments for {name} were not valid JSON ({exc}); call it "
                    "again with a JSON object.")
        if not isinstance(args, dict):
            return f"Error: the arguments for {name} must be a JSON object, not {raw[:80]}."
        for p in found.nullable:
            args.setdefault(p, None)
        if found.confirm and not self._confirmed(name, args):
            return (f"The user declined to run {name} with these arguments. Do not call it "
                    "again for this request; explain what you would have done instead.")
        try:
            result = found.fn(**args)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            return f"Error: {type(exc).__name__}: {exc}"
        return self._text(result)

    def _confirmed(self, name: str, args: dict[str, Any]) -> bool:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        answer = self.ask(f"Kimi wants to run {name}({shown}). Allow? [y/N] ")
        return str(answer).strip().lower() in ("y", "yes")

    def _text(self, result: Any) -> str:
        if isinstance(result, str):
            text = result
        else:
            try:
                text = json.dumps(result, ensure_ascii=False, default=str)
            except (TypeError, ValueError):
                text = repr(result)
        return bounded(text, self.max_result_chars)


def _recall_tool(session: Session) -> Tool:
    def recall_archive(query: str) -> str:
        """Search this conversation's archive (rounds compressed, truncated or replaced away).

        Args:
            query: words to look for, e.g. a name, a number or a topic
        """
        hits = session.recall(query) if query.strip() else []
        if not hits:
            return f"Nothing in the archive matches {query!r}."
        return "\n\n---\n\n".join(h["text"] for h in hits)

    return make_tool(recall_archive)


def for_session(session: Session, *, functions: bool | Iterable[Callable[..., Any]] = True,
                web: bool = False, ask: Asker | None = None,
                max_steps: int | None = None, extra: Iterable[Tool] = ()) -> Toolset:
    """The tools of one ``%%kimi --tools/--web/--agent`` turn.

    ``functions=True`` offers every registered tool plus ``recall_archive``; an iterable of
    functions offers those instead (plain Python use); ``False`` offers none (``--web`` alone).
    ``extra`` tools (the notebook's, with ``--agent``) come on top, with ``recall_archive``.
    """
    chosen: list[Tool] = []
    if functions is True:
        chosen = registry.tools()
    elif functions:
        chosen = [f if isinstance(f, Tool) else make_tool(f) for f in functions]
    extra = list(extra)
    chosen += extra
    steps = max_steps or getattr(session.settings, "tool_steps", 8)
    return Toolset(chosen, session=session if functions or extra else None, web=web,
                   max_steps=steps, ask=ask, secrets=[session.settings.api_key])

"""The tree keeps its shape: the core knows no IPython, nothing imports in a circle, and no
module reaches into another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kimi_magic"
NOTEBOOK_ONLY = ("IPython", "ipywidgets", "ipykernel", "traitlets", "comm")


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(name: str, tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """Every import in the module, lazy ones included: (module, names, line)."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def test_only_the_notebook_layer_imports_ipython():
    offenders = []
    for name, tree in modules().items():
        if name.startswith("kimi_magic.notebook"):
            continue
        for module, _, line in imports(name, tree):
            if module.split(".")[0] in NOTEBOOK_ONLY:
                offenders.append(f"{name}:{line} imports {module}")
    assert offenders == []


def _targets(known: set[str], module: str, names: list[str]) -> list[str]:
    """The package modules an import statement loads."""
    out = []
    for n in names:
        if f"{module}.{n}" in known:
            out.append(f"{module}.{n}")
    if module in known and (not out or len(out) < len(names)):
        out.append(module)
    return out


def test_no_import_cycles():
    mods = modules()
    known = set(mods)
    graph = {name: set() for name in mods}
    for name, tree in mods.items():
        for module, names, _ in imports(name, tree):
            for target in _targets(known, module, names):
                if target != name and not name.startswith(target + "."):
                    # A package's __init__ importing its own submodules is not a cycle the
                    # other way round; the root package re-exports the public API.
                    if name == "kimi_magic" or target == "kimi_magic":
                        continue
                    graph[name].add(target)
    cycles = []

    def visit(node: str, path: list[str], seen: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, [*path, nxt], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    assert sorted(set(cycles)) == []


def test_no_module_uses_another_modules_private_names():
    offenders = []
    mods = modules()
    for name, tree in mods.items():
        for module, names, line in imports(name, tree):
            if module.startswith("kimi_magic"):
                offenders += [f"{name}:{line} imports {module}.{n}" for n in names
                              if n.startswith("_") and not n.startswith("__")]
        aliases = {}
        for module, names, _ in imports(name, tree):
            if module.startswith("kimi_magic"):
                for n in names:
                    aliases[n] = f"{module}.{n}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] in mods
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert offenders == []


def _private_names(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, module names, ``self._x``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


#: A private name a module may reach on another object because that object is its own
#: module's: the simulator's request handler calls its Simulator's dispatcher.
SAME_MODULE = {("kimi_magic.simulator.server", "_handle")}


def test_no_module_reaches_into_an_object_for_another_modules_private_names():
    """``obj._name`` (``obj`` not ``self``/``cls``) where another module defines ``_name``:
    one module calling into another's private methods or attributes, whatever the import."""
    mods = modules()
    defined = {name: _private_names(tree) for name, tree in mods.items()}
    offenders = []
    for name, tree in mods.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = sorted(m for m, names in defined.items() if node.attr in names and m != name)
            if owners and (name, node.attr) not in SAME_MODULE:
                offenders.append(f"{name}:{node.lineno} uses .{node.attr} "
                                 f"(defined in {', '.join(owners)})")
    assert offenders == []


#: Lines one class may span, decorators and docstring included: a class that needs more has
#: more than one job, and the extra job belongs in a part of its own.
MAX_CLASS_LINES = 300


def class_lengths() -> dict[str, int]:
    """Every class in the package, by qualified name: the lines it spans."""
    out = {}
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                out[f"{name}.{node.name}"] = node.end_lineno - start + 1
    return out


def test_no_class_is_over_three_hundred_lines():
    lengths = class_lengths()
    assert lengths["kimi_magic.core.session.Session"] > 100, "the measure sees real classes"
    over = {name: n for name, n in lengths.items() if n > MAX_CLASS_LINES}
    assert over == {}


#: Names only Kimi's wire format uses: a message's or reply's fields, a builtin tool, a
#: finish reason. Outside ``wire`` (and the simulator, which plays the server) code reads
#: them through wire's typed objects and functions, so a change of format is one module's.
WIRE_NAMES = {"reasoning_content", "tool_call_id", "tool_calls", "image_url", "$web_search",
              "finish_reason", "builtin_function", "partial"}


def _docstrings(tree: ast.Module) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def test_only_wire_spells_wire_field_names():
    offenders = []
    for name, tree in modules().items():
        if name.startswith(("kimi_magic.wire", "kimi_magic.simulator")):
            continue
        docs = _docstrings(tree)
        offenders += [f"{name}:{node.lineno} spells {node.value!r}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and node.value in WIRE_NAMES
                      and id(node) not in docs]
    assert offenders == []


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of string constants that stand alone as statements (docstrings)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def test_core_and_wire_advice_goes_through_hints():
    # A plain-Python user cannot run "%kimi compress"; core.hints spells advice in the
    # dialect of whoever reads it, so no other core or wire string may name a magic.
    offenders = []
    for name, tree in modules().items():
        if not name.startswith(("kimi_magic.core", "kimi_magic.wire")) or name.endswith(".hints"):
            continue
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in skip
                    and ("%kimi" in node.value or "%config" in node.value)):
                offenders.append(f"{name}:{node.lineno} {node.value[:50]!r}")
    assert offenders == []

"""docs/GUARANTEES.md names the test that proves each promise: every name it gives must be a
test that exists (in the file it names, when it names one), so a renamed or deleted test
cannot leave a promise pointing at nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUARANTEES = ROOT / "docs" / "GUARANTEES.md"
#: ``tests/test_x.py``, ``tests/test_x.py::test_y`` or a bare ``test_y``, in backticks.
REFERENCE = re.compile(r"`((?:tests/)?test_\w+(?:\.py)?(?:::test_\w+)?)`")


def defined_tests() -> dict[str, set[str]]:
    """Every test function (module level or in a class) of each ``tests/test_*.py``."""
    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        found[f"tests/{path.name}"] = {
            node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}
    return found


def references() -> list[str]:
    return REFERENCE.findall(GUARANTEES.read_text())


def test_the_guarantees_name_tests():
    assert len(references()) > 50


def test_every_test_the_guarantees_name_exists():
    files = defined_tests()
    everywhere = set().union(*files.values())
    missing = []
    for ref in references():
        path, _, name = ref.partition("::")
        if path.endswith(".py"):
            path = path if path.startswith("tests/") else f"tests/{path}"
            if path not in files or (name and name not in files[path]):
                missing.append(ref)
        elif path not in everywhere:
            missing.append(ref)
    assert not missing, f"docs/GUARANTEES.md names tests that do not exist: {missing}"

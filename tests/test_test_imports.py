"""No test module imports another test module: what tests share lives in ``tests/support/`` or
in the fixture modules (``tests/hubkit.py``, ``tests/cups.py``, …). A test module that is also a
library runs its neighbours' module-level code, and ties the two so one cannot change alone."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BENCH = TESTS.parent / "bench"


def imported_test_modules(source: str) -> list[str]:
    """The ``test_*`` modules a Python source imports, by their dotted names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            names = [base] if node.module else [f"{base}{alias.name}" for alias in node.names]
            if node.module:
                # ``from tests import test_x`` names the module as an imported symbol.
                names += [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if name.split(".")[-1].startswith("test_")]
    return found


def test_the_check_sees_each_way_of_importing_a_test_module() -> None:
    assert imported_test_modules("from tests.test_runner import wait_for") == ["tests.test_runner"]
    assert imported_test_modules("from .test_runner import wait_for") == [".test_runner"]
    assert imported_test_modules("import tests.test_runner") == ["tests.test_runner"]
    assert imported_test_modules("from tests import test_runner") == ["tests.test_runner"]
    assert imported_test_modules("from tests.support.waiting import wait_for") == []


def test_no_test_or_benchmark_imports_a_test_module() -> None:
    files = sorted(TESTS.rglob("*.py")) + sorted(BENCH.glob("*.py"))
    offending = {
        str(path.relative_to(TESTS.parent)): names
        for path in files
        if path != Path(__file__)
        and (names := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert offending == {}

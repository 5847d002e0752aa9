"""The intake and codec stay pure: no Google imports, no clock reads, no I/O. Checked on the source
(AST), so a later edit that adds `datetime.now()` or `import google...` fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import daemon.core

CORE = Path(daemon.core.__file__).parent
MODULES = sorted(p for p in CORE.glob("*.py") if p.name.startswith("intake") or p.name == "codec.py")
BANNED_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("time", "time"),
                ("time", "monotonic"), ("time", "sleep"), ("date", "today")}
BANNED_MODULES = ("google", "threading", "asyncio", "socket", "subprocess", "pydantic", "daemon.adapters")


def test_the_modules_exist() -> None:
    names = {p.name for p in MODULES}
    assert {"intake.py", "codec.py", "intake_native.py", "intake_distribution.py", "intake_audit.py",
            "intake_incident.py", "intake_fields.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_google_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name} needs a module docstring"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported = [node.module or ""]
        else:
            imported = []
        for name in imported:
            assert not name.startswith(BANNED_MODULES), f"{path.name} imports {name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in BANNED_CALLS, f"{path.name} uses {node.value.id}.{node.attr}"
        if isinstance(node, ast.Name):
            assert node.id != "open", f"{path.name} opens files"

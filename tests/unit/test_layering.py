"""The pure core stays pure: daemon/core, detectors and policies import nothing from google, start
no threads and never read the clock. `rollbackd --help` and `replay` stay free of Google clients.
The layer contract (import-linter, pyproject.toml) holds, and only the bootstrap builds an Engine."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE = ["daemon/core", "detectors", "policies"]
FORBIDDEN_MODULES = ("google", "grpc", "threading", "asyncio", "socket", "subprocess", "time")
FORBIDDEN_CALLS = ("datetime.now", "datetime.utcnow", "date.today", "time.time", "time.sleep")


def _pure_files():
    for folder in PURE:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_pure_packages_import_no_io_or_clock() -> None:
    problems = []
    for path in _pure_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN_MODULES:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                dotted = f"{node.value.id}.{node.attr}"
                if dotted in FORBIDDEN_CALLS:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} reads the clock ({dotted})")
    assert not problems, "\n".join(problems)


def test_only_the_clock_module_reads_time() -> None:
    problems = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", "benchmarks", "build") or rel.as_posix() == "daemon/clock.py":
            continue
        text = path.read_text()
        for needle in ("datetime.now(", "datetime.utcnow(", "time.time()", "asyncio.sleep("):
            if needle in text:
                problems.append(f"{rel}: {needle}")
    assert not problems, "\n".join(problems)


def test_cli_help_and_replay_do_not_import_google() -> None:
    code = ("import sys; from daemon import cli; cli._load_extra_commands(); cli.build_parser(); "
            "import simulations.replay; "
            "bad = sorted(m for m in sys.modules if m.startswith(('google.cloud', 'grpc')) ); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_import_contract_holds() -> None:
    """The layers in pyproject.toml ([tool.importlinter]): core < ports < engine | adapters | actions |
    simulations < bootstrap < cli, imports inside functions included. Fails `make test` when broken."""
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    out = subprocess.run(command + ["--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_only_the_bootstrap_builds_an_engine() -> None:
    """Every mode (live, sandbox, replay, backtest, benchmarks, tests) gets its Engine from
    `daemon.bootstrap.build`: the adapters are chosen in one place."""
    problems = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".venv", "build") or rel.as_posix() == "daemon/bootstrap.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Engine":
                problems.append(f"{rel}:{node.lineno} builds an Engine")
    assert not problems, "\n".join(problems)

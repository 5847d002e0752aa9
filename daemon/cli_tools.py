"""Offline review and tuning subcommands: `backtest`, `simulate`, `explain` (and `export`).

`daemon.cli` loads this module and calls `register(subparsers)`. Every handler imports its
implementation inside itself (simulations.backtest, .simulate, .explain; daemon.cli_export), so
`rollbackd --help` stays fast and none of these paths imports the Google client libraries
(except `export`, which talks to Cloud Monitoring by design). User errors raise `CliError`:
one line on stderr, exit 2. `backtest` exits 1 when an expected outcome breaks.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from types import ModuleType


def _cli() -> ModuleType:
    """The running daemon.cli module. Under `python -m daemon.cli` it is `__main__`, a second copy
    whose `main()` catches its own CliError class, not daemon.cli's."""
    running = sys.modules.get("__main__")
    spec = getattr(running, "__spec__", None)
    if running is not None and getattr(spec, "name", None) == "daemon.cli":
        return running
    import daemon.cli
    return daemon.cli


def _cli_error(message: str) -> Exception:
    return _cli().CliError(message)


def _policy(path: str | None):
    return _cli()._policy_or_default(path)


def cmd_backtest(args: argparse.Namespace) -> int:
    from daemon.bootstrap import engine_factory
    from simulations.backtest import BacktestError, format_table, json_lines, progress_bar, run_backtest

    policy = _policy(args.policy)
    compare = _policy(args.compare_policy) if args.compare_policy else None
    if args.workers is not None and args.workers < 1:
        raise _cli_error("--workers must be at least 1")
    try:
        report = run_backtest(args.paths, policy, compare, build_engine=engine_factory("backtest"),
                              workers=args.workers, progress=progress_bar())
    except BacktestError as error:
        raise _cli_error(str(error))
    sys.stdout.write(json_lines(report) if args.json else format_table(report))
    if args.json:
        for problem in report.errors + report.problems:
            print(f"backtest: {problem}", file=sys.stderr)
    return 1 if report.problems or report.errors else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from daemon.bootstrap import engine_factory
    from simulations.scenario_file import ScenarioFileError
    from simulations.simulate import format_simulation, simulate_file

    policy = _policy(args.policy)
    if not os.path.isfile(args.scenario):
        raise _cli_error(f"{args.scenario}: no such scenario file")
    try:
        result = simulate_file(args.scenario, policy, build_engine=engine_factory("replay"), seed=args.seed,
                               record=args.record)
    except ScenarioFileError as error:
        raise _cli_error(str(error))
    sys.stdout.write(format_simulation(result, as_json=args.json))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from daemon.bootstrap import engine_factory
    from simulations.explain import ExplainError, explain_file

    policy = _policy(args.policy)
    if not os.path.isfile(args.recording):
        raise _cli_error(f"{args.recording}: no such recording file")
    if (args.at is None) == (args.decision is None):
        raise _cli_error("explain needs exactly one of --at TIME or --decision N")
    try:
        text = explain_file(args.recording, policy, build_engine=engine_factory("replay"), at=args.at,
                            number=args.decision, service=args.service)
    except ExplainError as error:
        raise _cli_error(str(error))
    sys.stdout.write(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from daemon.cli_export import export_main
    return int(export_main(args.export_args, sys.stdout, sys.stderr) or 0)


def register(sub: argparse._SubParsersAction) -> None:
    backtest = sub.add_parser(
        "backtest", help="replay a corpus of recordings in parallel and summarise outcomes",
        description="Replay every recording (files, or *.jsonl in directories) and print one row per "
                    "recording and service. Expected outcomes come from expected.json beside the "
                    "recordings or a '# expected: {...}' line; a broken expectation exits 1.")
    backtest.add_argument("paths", nargs="+", metavar="DIR|FILE")
    backtest.add_argument("--policy", help="policy file (default: the bundled runbook policy)")
    backtest.add_argument("--compare-policy", help="also backtest with this policy and list the differences")
    backtest.add_argument("--json", action="store_true", help="one JSON object per recording and service")
    backtest.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    backtest.set_defaults(handler=cmd_backtest)

    simulate = sub.add_parser(
        "simulate", help="closed-loop simulation of a scenario file against a policy",
        description="Simulate the scenario's revisions minute by minute; request counts follow the "
                    "engine's own traffic decisions. Prints decisions like `replay`.")
    simulate.add_argument("scenario", metavar="SCENARIO.yaml")
    simulate.add_argument("--policy", help="policy file (default: the bundled runbook policy)")
    simulate.add_argument("--json", action="store_true", help="one JSON object per decision per line")
    simulate.add_argument("--seed", type=int, help="random seed (default: the scenario's `seed`)")
    simulate.add_argument("--record", metavar="OUT.jsonl",
                          help="also write the simulated events as a recording")
    simulate.set_defaults(handler=cmd_simulate)

    explain = sub.add_parser(
        "explain", help="explain in words one decision of a recording",
        description="Replay the recording and print the state, the evidence and the rule behind one "
                    "decision: the Nth (--decision N, 1-based) or the last one at or before --at TIME.")
    explain.add_argument("recording", metavar="RECORDING")
    explain.add_argument("--at", metavar="TIME", help="RFC 3339 time, or HH:MM on the recording's day")
    explain.add_argument("--decision", type=int, metavar="N", help="the Nth decision (1-based)")
    explain.add_argument("--service", help="only this service's decisions")
    explain.add_argument("--policy", help="policy file (default: the bundled runbook policy)")
    explain.set_defaults(handler=cmd_explain)

    if importlib.util.find_spec("daemon.cli_export") is not None:
        export = sub.add_parser(
            "export", help="export minute-level metrics from Cloud Monitoring as a recording",
            add_help=False, prefix_chars="\0")  # daemon.cli_export parses its own arguments
        export.add_argument("export_args", nargs=argparse.REMAINDER)
        export.set_defaults(handler=cmd_export)

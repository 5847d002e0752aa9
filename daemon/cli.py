"""The `rollbackd` command line.

Each subcommand imports what it needs inside its handler, so `rollbackd --help`, `replay`,
`policy ...`, `backtest` and `explain` never import the Google client libraries and start fast.
Every error is one clear line on stderr and a non-zero exit; never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit 2."""


def _policy_or_default(path: str | None):
    from policies import load_default_policy
    from policies.loader import PolicyError, load_policy

    try:
        return load_policy(path) if path else load_default_policy()
    except PolicyError as error:
        first = error.issues[0] if getattr(error, "issues", None) else None
        detail = f"{first.file}:{first.line}:{first.col}: {first.path}: {first.message}" if first else str(error)
        more = f" (and {len(error.issues) - 1} more; run 'rollbackd policy validate {path}')" \
            if getattr(error, "issues", None) and len(error.issues) > 1 else ""
        raise CliError(f"invalid policy: {detail}{more}")


def cmd_replay(args: argparse.Namespace) -> int:
    import os

    from daemon.bootstrap import engine_factory
    from simulations.replay import decision_line, replay_file, timeline_line

    policy = _policy_or_default(args.policy)
    compare = _policy_or_default(args.compare_policy) if args.compare_policy else None
    for path in args.recordings:
        if not os.path.isfile(path):
            raise CliError(f"{path}: no such recording file")
    out = sys.stdout
    for path in args.recordings:
        result = replay_file(path, policy, build_engine=engine_factory("replay"), keep_journal=bool(args.report))
        for number, rejected in result.rejected:
            print(f"{os.path.basename(path)}:{number}: rejected: {rejected.reason}", file=sys.stderr)
        if compare is not None:
            from simulations.whatif import compare_replays
            other = replay_file(path, compare, build_engine=engine_factory("replay"), keep_journal=False)
            out.write(compare_replays(result, other, new_name=args.policy or "default",
                                      old_name=args.compare_policy, as_json=args.json))
            continue
        if args.json:
            for decision in result.decisions:
                out.write(decision_line(decision, result.recording) + "\n")
        else:
            out.write(f"== {result.recording} ==\n")
            for decision in result.decisions:
                out.write(timeline_line(decision) + "\n")
            if not result.decisions:
                out.write("(no decisions)\n")
        if args.report:
            from simulations.report import write_report
            write_report(result, policy, args.report)
            print(f"report written to {args.report}", file=sys.stderr)
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from policies import cli as policy_cli

    if args.policy_command == "validate":
        return policy_cli.validate(args.files, sys.stdout, sys.stderr)
    if args.policy_command == "schema":
        return policy_cli.schema(sys.stdout)
    if args.policy_command == "diff":
        return policy_cli.diff(args.old, args.new, sys.stdout, sys.stderr)
    raise CliError("policy needs a subcommand: validate, schema or diff")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollbackd",
        description="Automated canary analysis and rollback for Google Cloud Run.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    replay = sub.add_parser("replay", help="replay recordings through the decision engine")
    replay.add_argument("recordings", nargs="+", metavar="RECORDING")
    replay.add_argument("--policy", help="policy file (default: the bundled runbook policy)")
    replay.add_argument("--compare-policy", help="also replay with this policy and show where decisions differ")
    replay.add_argument("--json", action="store_true", help="one JSON object per decision per line")
    replay.add_argument("--report", metavar="OUT.html", help="write a self-contained HTML report")
    replay.set_defaults(handler=cmd_replay)

    policy = sub.add_parser("policy", help="validate, describe or compare policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    validate = policy_sub.add_parser("validate", help="check policy files; exit 2 with FILE:LINE:COL errors")
    validate.add_argument("files", nargs="+", metavar="FILE")
    policy_sub.add_parser("schema", help="print the policy JSON Schema (for editor completion)")
    diff = policy_sub.add_parser("diff", help="explain in words what changed between two policies")
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    policy.set_defaults(handler=cmd_policy)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Subcommands defined in other modules register themselves here (run, status, ctl, export,
# backtest, simulate, explain); each module keeps its imports inside its handler.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def _load_extra_commands() -> None:
    import importlib

    _EXTRA_COMMANDS.clear()  # idempotent: main() may be called more than once in one process

    for module in ("daemon.cli_run", "daemon.cli_tools"):
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name == module:
                continue
            raise
        _EXTRA_COMMANDS.append(loaded.register)


def main(argv: Sequence[str] | None = None) -> int:
    _load_extra_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args) or 0)
    except CliError as error:
        print(f"rollbackd: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rollbackd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - never a traceback for the user
        print(f"rollbackd: internal error: {type(error).__name__}: {error} "
              "(please report this with the command you ran)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

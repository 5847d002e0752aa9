"""`rollbackd run` (live or --sandbox) and `rollbackd status`."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run the daemon (on Google Cloud, or --sandbox)")
    run.add_argument("--config", help="YAML settings file (every setting also via ROLLBACKD_* variables)")
    run.add_argument("--sandbox", action="store_true", help="run on the built-in simulated Cloud Run")
    run.add_argument("--scenario", default="default", help="sandbox scenario name or scenario file")
    run.add_argument("--speed", type=float, default=60.0, help="sandbox: virtual seconds per wall second")
    run.add_argument("--state-dir", help="sandbox: persist cloud, clock and journal here; restart resumes")
    run.add_argument("--json", action="store_true", help="print decisions as JSON lines (replay format)")
    run.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz, /readyz on this port")
    run.add_argument("--policy", help="policy file (overrides the config's)")
    run.add_argument("--dry-run", action="store_true", help="decide and log, never act")
    run.add_argument("--keep-running", action="store_true", help="sandbox: keep going after every rollout ends")
    run.add_argument("--seed", type=int, default=7, help="sandbox: random seed of the traffic simulator")
    run.add_argument("--command", action="append", default=[], metavar="MINUTE:ACTION:SERVICE[:PRINCIPAL]",
                     help="sandbox: what `rollbackd ctl ACTION SERVICE` does in production, at MINUTE after the "
                          "start: the command annotation written on the simulated service as PRINCIPAL (default "
                          "sre@olympuscloud.ai), whose audit entry the daemon reads; repeatable")
    run.set_defaults(handler=cmd_run)

    status = sub.add_parser("status", help="managed services: phase, canary, baseline, split, last decision")
    status.add_argument("--config", help="YAML settings file")
    status.add_argument("--json", action="store_true")
    status.add_argument("service", nargs="?", default="",
                        help="one service: its name, or projects/P/locations/L/services/N")
    status.add_argument("--region", default="", help="only this Cloud Run region (location), e.g. europe-west1")
    status.add_argument("--project", default="", help="only this project (default: the settings' project)")
    status.set_defaults(handler=cmd_status)

    try:
        from daemon.ctl import register as register_ctl
    except ModuleNotFoundError:
        return
    register_ctl(sub)


def _sandbox_command(text: str) -> tuple[float, str, str, str]:
    from daemon.cli import CliError
    from daemon.core.events import COMMAND_ACTIONS
    from daemon.sandbox import SANDBOX_OPERATOR

    parts = text.split(":")
    try:
        minute = float(parts[0])
    except ValueError:
        minute = -1.0
    if len(parts) not in (3, 4) or minute < 0 or parts[1] not in COMMAND_ACTIONS or not parts[2]:
        raise CliError(f"--command {text!r}: expected MINUTE:ACTION:SERVICE[:PRINCIPAL], ACTION one of "
                       f"{', '.join(COMMAND_ACTIONS)}")
    return minute, parts[1], parts[2], parts[3] if len(parts) == 4 else SANDBOX_OPERATOR


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.cli import CliError

    if args.sandbox:
        if args.speed <= 0:
            raise CliError("--speed must be positive")
        from daemon.bootstrap import run_sandbox
        from policies.loader import PolicyError
        try:
            return run_sandbox(scenario=args.scenario, speed=args.speed, state_dir=args.state_dir,
                               as_json=args.json, metrics_port=args.metrics_port, policy_path=args.policy,
                               keep_running=args.keep_running, seed=args.seed,
                               commands=[_sandbox_command(text) for text in args.command])
        except PolicyError as error:
            raise CliError(f"invalid policy: {error}")
        except ValueError as error:  # unknown scenario, invalid scenario file
            raise CliError(str(error))
    settings = _settings(args.config, {"policy": args.policy, "dry_run": True if args.dry_run else None,
                                       "http_port": args.metrics_port})
    from daemon.bootstrap import run_live
    from policies.loader import PolicyError
    try:
        return run_live(settings)
    except PolicyError as error:  # the configured policy file is missing or invalid: a wrong setting
        raise CliError(f"invalid policy: {error}")


def _settings(path: str | None, overrides: dict[str, Any]) -> Any:
    from daemon.cli import CliError
    from daemon.settings import SettingsError, load_settings

    try:
        return load_settings(path, os.environ, overrides)
    except SettingsError as error:
        raise CliError(str(error))


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.cli import CliError
    from daemon.live import print_status
    from policies.loader import PolicyError

    settings = _settings(args.config, {})
    try:
        return print_status(settings, sys.stdout, as_json=args.json, service=args.service, region=args.region,
                            project=args.project, err=sys.stderr)
    except PolicyError as error:  # its managed selectors say which services are shown
        raise CliError(f"invalid policy: {error}")

"""`rollbackd export`: a recording of one past rollout, pulled from Cloud Run and Cloud Monitoring.

    rollbackd export --project P --location L --service S --from T1 --to T2
                     [--canary REV --baseline REV] [--max-instances N]
                     [--endpoint HOST:PORT] [--endpoint-run HOST:PORT] > rec.jsonl

Writes native JSON lines (issue 2 §4): first the `deploy` event, then the per-revision, per-minute
`metrics` events in time order. The deploy comes from the flags, or from Cloud Run: the newest
revision created within [T1, T2] is the canary and the one created before it the baseline. The
metrics come from the daemon's own `MonitoringCollector.backfill`, so an export holds exactly what
the live daemon would have seen (same grouped calls, same settle rule). `--endpoint` and
`--endpoint-run` point the real clients at a plaintext gRPC server (the tests' fakes).

Called by the CLI (`daemon.cli_tools` registers the subcommand) with `export_main(argv, out, err)`.
Every failure is one line on `err` and exit status 2, never a traceback. It lives with the CLI, not
in simulations/, because it drives the production Cloud Monitoring adapter and the real clients.
"""
from __future__ import annotations

import argparse
import random
import re
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

from daemon.clock import SystemClock
from daemon.core.codec import dumps_event
from daemon.core.events import Deploy
from daemon.core.timefmt import format_rfc3339, parse_rfc3339
from daemon.ports import ActionError, Clock

EXIT_OK, EXIT_ERROR = 0, 2
_ENDPOINT = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")


class ExportError(Exception):
    """A problem worth one line to the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit; we want one line
        raise ExportError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rollbackd export", description="Write a recording of one rollout from Cloud "
                "Run revisions and Cloud Monitoring metrics (native JSON lines on stdout).")
    p.add_argument("--project", required=True, help="Google Cloud project id")
    p.add_argument("--location", required=True, help="Cloud Run region, e.g. europe-west1")
    p.add_argument("--service", required=True, help="Cloud Run service name")
    p.add_argument("--from", dest="start", required=True, metavar="T1", help="RFC 3339 start time")
    p.add_argument("--to", dest="end", required=True, metavar="T2", help="RFC 3339 end time")
    p.add_argument("--canary", help="canary revision (short name); otherwise found from Cloud Run")
    p.add_argument("--baseline", help="baseline revision (short name); required with --canary")
    p.add_argument("--max-instances", type=int, help="the service's max instances, copied onto metrics")
    p.add_argument("--settle-s", type=float, default=240.0,
                   help="seconds Monitoring may lag; newer minutes are not exported (default 240)")
    p.add_argument("--endpoint", help="HOST:PORT of a plaintext Monitoring gRPC endpoint (tests)")
    p.add_argument("--endpoint-run", help="HOST:PORT of a plaintext Cloud Run gRPC endpoint (tests)")
    return p


def export_main(argv: Sequence[str], out: TextIO, err: TextIO, *, clock: Clock | None = None,
                rng: random.Random | None = None) -> int:
    """Run the export; returns the exit status. `clock`/`rng` are for tests (virtual time)."""
    clock = clock or SystemClock()
    rng = rng or random.Random(0)
    try:
        try:
            args = build_parser().parse_args(list(argv))
        except SystemExit as done:  # --help
            return int(done.code or 0)
        start, end = _window(args)
        deploy = _deploy(args, start, end, clock, rng)
        result = _metrics(args, deploy, start, end, clock, rng)
    except ExportError as problem:
        err.write(f"rollbackd export: {problem}\n")
        return EXIT_ERROR
    except ActionError as failure:
        err.write(f"rollbackd export: {_one_line(str(failure))}\n")
        return EXIT_ERROR
    except Exception as failure:  # noqa: BLE001 - a client or auth error: still one line
        err.write(f"rollbackd export: {type(failure).__name__}: {_one_line(str(failure))}\n")
        return EXIT_ERROR
    out.write(dumps_event(deploy) + "\n")
    for event in result.metrics:
        out.write(dumps_event(event) + "\n")
    if result.end < end:
        err.write(f"rollbackd export: note: exported up to {format_rfc3339(result.end)}; later minutes "
                  f"are not complete in Cloud Monitoring yet (settle {args.settle_s:g}s)\n")
    if not result.metrics:
        err.write(f"rollbackd export: note: no metrics found for {deploy.revision} or {deploy.baseline} "
                  "in the window\n")
    return EXIT_OK


def _window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    try:
        start, end = parse_rfc3339(args.start), parse_rfc3339(args.end)
    except ValueError as bad:
        raise ExportError(f"--from/--to must be RFC 3339 times like 2026-11-28T10:00:00Z ({bad})") from None
    if end <= start:
        raise ExportError("--to must be after --from")
    if bool(args.canary) != bool(args.baseline):
        raise ExportError("give both --canary and --baseline, or neither (to find them from Cloud Run)")
    for flag in ("endpoint", "endpoint_run"):
        value = getattr(args, flag)
        if value is not None and not _ENDPOINT.fullmatch(value):
            raise ExportError(f"--{flag.replace('_', '-')} must be HOST:PORT, got {value!r}")
    if args.settle_s < 0:
        raise ExportError("--settle-s must not be negative")
    return start, end


def _deploy(args: argparse.Namespace, start: datetime, end: datetime, clock: Clock,
            rng: random.Random) -> Deploy:
    common = dict(service=args.service, project=args.project, location=args.location, canary_percent=0)
    if args.canary:
        return Deploy(time=start, revision=_short(args.canary), baseline=_short(args.baseline), **common)
    from daemon.retry import call_with_retry

    client = _run_client(args.endpoint_run)
    parent = f"projects/{args.project}/locations/{args.location}/services/{args.service}"
    revisions = call_with_retry(lambda: list(client.list_revisions(parent=parent, retry=None)),
                                api="run", clock=clock, rng=rng, budget_s=20.0, max_attempts=3)
    revisions.sort(key=lambda r: (r.create_time, r.name))
    created = [r for r in revisions if start <= r.create_time <= end]
    if not created:
        raise ExportError(f"no revision of {args.service} was created between {args.start} and {args.end}; "
                          "pass --canary and --baseline")
    canary = created[-1]
    older = [r for r in revisions if r.create_time < canary.create_time]
    if not older:
        raise ExportError(f"{_short(canary.name)} has no earlier revision to be its baseline; pass --baseline")
    if args.max_instances is None and canary.scaling.max_instance_count:
        args.max_instances = int(canary.scaling.max_instance_count)
    return Deploy(time=_aware(canary.create_time),
                  revision=_short(canary.name), baseline=_short(older[-1].name), **common)


def _metrics(args: argparse.Namespace, deploy: Deploy, start: datetime, end: datetime, clock: Clock,
             rng: random.Random) -> Any:
    from daemon.adapters.monitoring import MonitoringCollector, Target

    collector = MonitoringCollector(_monitoring_client(args.endpoint), project=args.project, clock=clock,
                                    rng=rng, settle_s=args.settle_s)
    target = Target(args.service, args.location, deploy.revision or "", deploy.baseline, args.max_instances)
    result = collector.backfill([target], start, end)
    if not result.ok:
        raise ExportError(f"Cloud Monitoring failed after {format_rfc3339(result.end)}: {_one_line(result.error or '')}")
    return result


def _monitoring_client(endpoint: str | None) -> Any:
    from google.cloud import monitoring_v3

    if endpoint is None:
        return monitoring_v3.MetricServiceClient()
    import grpc
    from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

    return monitoring_v3.MetricServiceClient(
        transport=MetricServiceGrpcTransport(channel=grpc.insecure_channel(endpoint)))


def _run_client(endpoint: str | None) -> Any:
    from google.cloud import run_v2

    if endpoint is None:
        return run_v2.RevisionsClient()
    import grpc
    from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport

    return run_v2.RevisionsClient(transport=RevisionsGrpcTransport(channel=grpc.insecure_channel(endpoint)))


def _aware(when: datetime) -> datetime:
    """Cloud Run's create_time, as a plain aware datetime at second precision (recordings are
    compared as bytes; sub-second noise would only make diffs)."""
    return datetime.fromtimestamp(int(when.timestamp()), tz=timezone.utc)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]

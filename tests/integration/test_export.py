"""`rollbackd export` end to end: real run_v2 and monitoring_v3 clients against the wire fakes, the
output read back by the intake, and every failure one line with exit status 2."""
from __future__ import annotations

import io
import random
from datetime import datetime, timedelta, timezone

import pytest

from daemon.cli_export import export_main
from daemon.clock import VirtualClock
from daemon.core.events import Deploy, Metrics
from daemon.core.intake import parse_line
from detectors.histogram import Histogram
from tests.fakes.cloud_run import CloudRunFake
from tests.fakes.monitoring import FakeMonitoring

# The Cloud Run fake stamps create_time as 2026-01-01T00:00:00Z plus a counter in seconds.
T0 = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
BASE, CANARY = "checkout-00041-mib", "checkout-00042-vux"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0 + timedelta(hours=1))


@pytest.fixture
def monitoring(clock):
    with FakeMonitoring(project="shop", location="europe-west1", clock=clock, visibility_delay_s=180) as fake:
        for m in range(1, 61):
            t = T0 + timedelta(minutes=m)
            fake.add_minute("checkout", BASE, t, by_class={"2xx": 300, "5xx": 1}, memory=0.4, instances=3,
                            latency_hist=Histogram.exponential(64, 1.4, 1.0, [0, 5, 50, 200, 40]))
            fake.add_minute("checkout", CANARY, t, by_class={"2xx": 15, "5xx": m % 2}, memory=0.5, instances=1,
                            latency_hist=Histogram.linear(20, 25.0, 0.0, [0, 2, 9, 3]))
            fake.add_minute("cart", "cart-00007-aaa", t, by_class={"2xx": 50})  # another service
        yield fake


@pytest.fixture
def cloud_run():
    fake = CloudRunFake()
    address = fake.start()
    fake.add_service("checkout", project="shop", location="europe-west1", revisions=[BASE],
                     max_instances=20)
    fake.deploy_revision("checkout", CANARY)
    fake.address = address
    yield fake
    fake.stop()


def run(argv: list[str], clock: VirtualClock) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    code = export_main(argv, out, err, clock=clock, rng=random.Random(1))
    return code, out.getvalue().splitlines(), err.getvalue()


def base_args(monitoring: FakeMonitoring, to: datetime = T0 + timedelta(minutes=30)) -> list[str]:
    return ["--project", "shop", "--location", "europe-west1", "--service", "checkout",
            "--from", "2026-01-01T00:00:00Z", "--to", to.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--endpoint", monitoring.address]


def parse(lines: list[str]) -> list:
    events = []
    for i, line in enumerate(lines):
        parsed = parse_line(line, now=T0 + timedelta(hours=1), where=f"line {i + 1}")
        assert isinstance(parsed, list), parsed
        events.extend(parsed)
    return events


def test_export_finds_deploy_from_cloud_run_and_writes_parseable_lines(monitoring, cloud_run, clock):
    code, lines, err = run(base_args(monitoring) + ["--endpoint-run", cloud_run.address], clock)
    assert code == 0, err
    events = parse(lines)
    deploy, metrics = events[0], events[1:]
    assert isinstance(deploy, Deploy)
    assert (deploy.revision, deploy.baseline, deploy.service) == (CANARY, BASE, "checkout")
    assert deploy.project == "shop" and deploy.location == "europe-west1"
    assert T0 <= deploy.time <= T0 + timedelta(minutes=1)
    assert all(isinstance(m, Metrics) for m in metrics)
    assert len(metrics) == 2 * 30 and {m.service for m in metrics} == {"checkout"}
    assert [m.time for m in metrics] == sorted(m.time for m in metrics)
    canary = [m for m in metrics if m.revision == CANARY]
    assert canary[0].latency == Histogram.linear(20, 25.0, 0.0, [0, 2, 9, 3])
    assert dict(canary[0].requests_by_class) == {"2xx": 15, "5xx": 1}
    assert canary[0].max_instances == 20  # from the revision's scaling
    assert canary[0].instance_count == 1
    # One grouped call per metric type, filtered to the service: not per revision or minute.
    requests = monitoring.requests.of("ListTimeSeries")
    assert len(requests) == 5
    assert all('resource.label.service_name="checkout"' in r.filter for r in requests)
    assert cloud_run.requests.count("ListRevisions") == 1
    # Byte-stable: the same export twice gives the same bytes.
    assert run(base_args(monitoring) + ["--endpoint-run", cloud_run.address], clock)[1] == lines


def test_export_with_flags_needs_no_cloud_run(monitoring, clock):
    code, lines, err = run(base_args(monitoring) + ["--canary", CANARY, "--baseline", BASE], clock)
    assert code == 0, err
    events = parse(lines)
    assert events[0].time == T0 and events[0].revision == CANARY and events[0].baseline == BASE
    assert len(events) == 1 + 60


def test_export_stops_at_settled_minutes_and_says_so(monitoring, clock):
    code, lines, err = run(base_args(monitoring, to=T0 + timedelta(hours=1))
                           + ["--canary", CANARY, "--baseline", BASE], clock)
    assert code == 0
    metrics = parse(lines)[1:]
    assert max(m.time for m in metrics) == T0 + timedelta(minutes=56)  # now - 4 min
    assert "exported up to 2026-01-01T00:56:00Z" in err and err.count("\n") == 1


def test_newest_revision_in_window_is_canary(monitoring, cloud_run, clock):
    # A window that starts after the baseline was created: the baseline is still found before it.
    args = base_args(monitoring) + ["--endpoint-run", cloud_run.address]
    args[args.index("--from") + 1] = "2026-01-01T00:00:03Z"
    code, lines, err = run(args, clock)
    assert code == 0, err
    deploy = parse(lines[:1])[0]
    assert (deploy.revision, deploy.baseline) == (CANARY, BASE)


@pytest.mark.parametrize("change,expected", [
    ({"--from": "yesterday"}, "RFC 3339"),
    ({"--to": "2025-12-31T00:00:00Z"}, "--to must be after --from"),
    ({"--canary": CANARY}, "both --canary and --baseline"),
    ({"--endpoint": "not an endpoint"}, "HOST:PORT"),
    ({"--project": None}, "--project"),
])
def test_bad_arguments_are_one_line_exit_2(monitoring, clock, change, expected):
    args = base_args(monitoring)
    for flag, value in change.items():
        if flag in args:
            i = args.index(flag)
            if value is None:
                del args[i:i + 2]
            else:
                args[i + 1] = value
        else:
            args += [flag, value]
    code, lines, err = run(args, clock)
    assert code == 2 and lines == []
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_no_revision_in_window_is_an_error(monitoring, cloud_run, clock):
    args = base_args(monitoring) + ["--endpoint-run", cloud_run.address]
    args[args.index("--from") + 1] = "2026-01-01T00:10:00Z"
    code, lines, err = run(args, clock)
    assert code == 2 and lines == [] and "no revision of checkout" in err


def test_unknown_service_is_an_error(monitoring, cloud_run, clock):
    args = base_args(monitoring) + ["--endpoint-run", cloud_run.address]
    args[args.index("--service") + 1] = "nope"
    code, lines, err = run(args, clock)
    assert code == 2 and lines == [] and "NOT_FOUND" in err and err.count("\n") == 1


@pytest.mark.parametrize("code_name", ["PERMISSION_DENIED", "UNAVAILABLE"])
def test_monitoring_fault_is_an_error_with_no_output(monitoring, clock, code_name):
    monitoring.faults.inject("ListTimeSeries", code_name, times=-1)
    code, lines, err = run(base_args(monitoring) + ["--canary", CANARY, "--baseline", BASE], clock)
    assert code == 2 and lines == []
    assert code_name in err and err.count("\n") == 1 and "Traceback" not in err

"""The Cloud Monitoring collector against the wire fake, through the real MetricServiceClient.

Checks the things issue 4 asks of metrics collection: grouped calls whose number does not grow with
the number of services, exact latency merging (ALIGN_DELTA + REDUCE_SUM), settled windows, paging,
and that a Monitoring fault yields an error and no metrics.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from google.cloud import monitoring_v3

from daemon.adapters.monitoring import QUERIES, CollectResult, MonitoringCollector, Target
from daemon.clock import VirtualClock
from detectors.histogram import Histogram
from tests.fakes.monitoring import FakeMonitoring

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
Aligner, Reducer = monitoring_v3.Aggregation.Aligner, monitoring_v3.Aggregation.Reducer


def exp_hist(counts: list[int]) -> Histogram:
    return Histogram.exponential(64, 1.4, 1.0, counts)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0 + timedelta(minutes=40))


@pytest.fixture
def fake(clock: VirtualClock):
    with FakeMonitoring(project="p", location="europe-west1", clock=clock) as server:
        yield server


def collector(fake: FakeMonitoring, clock: VirtualClock, **kw) -> MonitoringCollector:
    kw.setdefault("settle_s", 240)
    return MonitoringCollector(fake.client(), project="p", clock=clock, rng=random.Random(7), **kw)


def fill(fake: FakeMonitoring, services: list[str], minutes: range, *, old_revision: bool = False) -> None:
    for i, svc in enumerate(services):
        for m in minutes:
            t = T0 + timedelta(minutes=m)
            fake.add_minute(svc, f"{svc}-00001-base", t, by_class={"2xx": 100 + i, "5xx": 1},
                            latency_hist=exp_hist([0, 10, 20, 30]), memory=0.5, cpu=0.2, instances=2)
            fake.add_minute(svc, f"{svc}-00002-can", t, by_class={"2xx": 10, "4xx": 2, "5xx": m % 3},
                            latency_hist=exp_hist([0, 1, 2, 3, 4]), memory=[0.3, 0.7], cpu=0.4,
                            instances={"active": 1, "idle": 2})
            if old_revision:
                fake.add_minute(svc, f"{svc}-00000-old", t, by_class={"2xx": 5})


def targets(services: list[str]) -> list[Target]:
    return [Target(s, "europe-west1", f"{s}-00002-can", f"{s}-00001-base") for s in services]


def test_grouped_calls_one_per_metric_type(fake, clock):
    fill(fake, ["checkout", "cart"], range(1, 11))
    result = collector(fake, clock).collect(targets(["checkout", "cart"]), T0, T0 + timedelta(minutes=10))
    assert result.ok and result.calls == len(QUERIES) == 5
    requests = fake.requests.of("ListTimeSeries")
    assert len(requests) == 5
    seen = {}
    for req in requests:
        assert req.name == "projects/p"
        assert 'resource.type="cloud_run_revision"' in req.filter
        assert "service_name" not in req.filter  # two services: no per-service filter
        agg = req.aggregation
        assert agg.alignment_period.seconds == 60
        assert "resource.label.revision_name" in agg.group_by_fields
        metric_type = req.filter.split('"')[1]
        seen[metric_type] = (agg.per_series_aligner, agg.cross_series_reducer, list(agg.group_by_fields))
    assert seen["run.googleapis.com/request_latencies"][:2] == (Aligner.ALIGN_DELTA, Reducer.REDUCE_SUM)
    assert seen["run.googleapis.com/request_count"][:2] == (Aligner.ALIGN_DELTA, Reducer.REDUCE_SUM)
    assert "metric.label.response_code_class" in seen["run.googleapis.com/request_count"][2]
    assert seen["run.googleapis.com/container/instance_count"][:2] == (Aligner.ALIGN_MAX, Reducer.REDUCE_SUM)
    assert seen["run.googleapis.com/container/memory/utilizations"][:2] == (
        Aligner.ALIGN_PERCENTILE_99, Reducer.REDUCE_MAX)
    # 2 services x 2 revisions x 10 minutes
    assert len(result.metrics) == 40


def test_call_count_does_not_grow_with_services(fake, clock):
    services = [f"svc{i:02d}" for i in range(50)]
    fill(fake, services, range(1, 6))
    one = collector(fake, clock)
    r1 = one.collect(targets(services[:1]), T0, T0 + timedelta(minutes=5))
    many = collector(fake, clock)
    r50 = many.collect(targets(services), T0, T0 + timedelta(minutes=5))
    assert r1.ok and r50.ok
    assert one.calls_made == many.calls_made == 5
    assert len(r1.metrics) == 2 * 5
    assert len(r50.metrics) == 50 * 2 * 5
    assert {m.service for m in r50.metrics} == set(services)


def test_metrics_fields_and_untargeted_series_dropped(fake, clock):
    fill(fake, ["checkout", "cart"], range(1, 4), old_revision=True)
    fake.add_minute("checkout", "checkout-00002-can", T0 + timedelta(minutes=2), by_class={"2xx": 999},
                    location="us-central1")  # same names, another region: not this target
    result = collector(fake, clock).collect(targets(["checkout"]), T0, T0 + timedelta(minutes=3))
    assert result.ok
    assert {(m.service, m.revision) for m in result.metrics} == {
        ("checkout", "checkout-00001-base"), ("checkout", "checkout-00002-can")}
    canary = [m for m in result.metrics if m.revision == "checkout-00002-can"]
    assert [m.time for m in canary] == [T0 + timedelta(minutes=k) for k in (1, 2, 3)]
    m2 = canary[1]
    assert m2.interval_s == 60 and m2.project == "p" and m2.location == "europe-west1"
    assert dict(m2.requests_by_class) == {"2xx": 10, "4xx": 2, "5xx": 2}
    assert m2.errors == 2
    assert m2.instance_count == 3  # active 1 + idle 2
    assert m2.memory_utilization == pytest.approx(0.7, abs=0.011)  # p99 of (0.3, 0.7), max across
    assert m2.cpu_utilization == pytest.approx(0.4, abs=0.011)
    assert m2.latency == exp_hist([0, 1, 2, 3, 4])


def test_merged_histogram_is_exact_sum_and_p99_from_merged_buckets(fake, clock):
    per_code = {"200": exp_hist([0, 50, 400, 30]), "201": exp_hist([0, 0, 10, 20, 5]),
                "500": exp_hist([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]), "503": exp_hist([1] + [0] * 20 + [3])}
    t = T0 + timedelta(minutes=1)
    fake.add_minute("checkout", "checkout-00002-can", t, by_code={"200": 480, "201": 35, "500": 7, "503": 4},
                    latency_by_code=per_code)
    result = collector(fake, clock).collect(targets(["checkout"]), T0, t)
    (event,) = result.metrics
    expected = exp_hist([0])
    for h in per_code.values():
        expected = expected.merge(h)
    assert event.latency == expected
    assert event.latency.total == sum(h.total for h in per_code.values())
    assert event.latency.quantile(0.99) == pytest.approx(expected.quantile(0.99))
    # The p99 of the merged buckets is not the max of the per-series p99s (why REDUCE_SUM matters).
    assert event.latency.quantile(0.99) != max(h.quantile(0.99) for h in per_code.values())
    assert dict(event.requests_by_class) == {"2xx": 515, "5xx": 11}


def test_only_settled_windows_and_late_minutes_absent(fake, clock):
    fake.visibility_delay_s = 180
    fill(fake, ["checkout"], range(1, 41))  # data up to "now" (T0+40)
    settled = collector(fake, clock, settle_s=240)
    result = settled.collect(targets(["checkout"]), T0, clock.now())
    assert result.end == T0 + timedelta(minutes=36)
    assert max(m.time for m in result.metrics) == T0 + timedelta(minutes=36)
    assert len(result.metrics) == 2 * 36
    # With no settle the collector asks for everything, but the late minutes are simply absent.
    eager = collector(fake, clock, settle_s=0)
    early = eager.collect(targets(["checkout"]), T0, clock.now())
    assert max(m.time for m in early.metrics) == T0 + timedelta(minutes=37)
    assert all(m.requests > 0 for m in early.metrics)  # never a zero-filled "healthy" minute
    # Nothing is complete yet: no call at all.
    quiet = collector(fake, clock)
    nothing = quiet.collect(targets(["checkout"]), T0 + timedelta(minutes=37), clock.now())
    assert nothing.ok and nothing.metrics == [] and quiet.calls_made == 0
    assert nothing.end == nothing.start


def test_gap_minutes_are_absent(fake, clock):
    fill(fake, ["checkout"], range(1, 4))
    fill(fake, ["checkout"], range(7, 9))
    result = collector(fake, clock).collect(targets(["checkout"]), T0, T0 + timedelta(minutes=10))
    minutes = sorted({int((m.time - T0).total_seconds() // 60) for m in result.metrics})
    assert minutes == [1, 2, 3, 7, 8]


def test_paging_gives_same_result_with_more_calls(fake, clock):
    services = [f"svc{i}" for i in range(6)]
    fill(fake, services, range(1, 6))
    whole = collector(fake, clock).collect(targets(services), T0, T0 + timedelta(minutes=5))
    paged_collector = collector(fake, clock, page_size=7)
    paged = paged_collector.collect(targets(services), T0, T0 + timedelta(minutes=5))
    assert paged.ok and paged.metrics == whole.metrics
    tokens = [r.page_token for r in fake.requests.of("ListTimeSeries")[5:]]
    assert paged_collector.calls_made == len(tokens) > 5
    assert any(tokens)  # later pages were requested with the server's token


@pytest.mark.parametrize("code,permanent", [
    ("UNAVAILABLE", False), ("DEADLINE_EXCEEDED", False), ("RESOURCE_EXHAUSTED", False),
    ("INTERNAL", False), ("PERMISSION_DENIED", True), ("NOT_FOUND", True), ("INVALID_ARGUMENT", True),
    ("ABORTED", True), ("FAILED_PRECONDITION", True),
])
def test_fault_gives_error_and_no_metrics(fake, clock, code, permanent):
    fill(fake, ["checkout"], range(1, 6))
    errors: list[tuple[str, str]] = []
    col = collector(fake, clock, on_error=lambda api, c: errors.append((api, c)))
    # Two calls succeed, then every call fails: a partial answer must not leak out.
    fake.faults.inject("ListTimeSeries", None, times=2)
    fake.faults.inject("ListTimeSeries", code, times=-1)
    result: CollectResult = col.collect(targets(["checkout"]), T0, T0 + timedelta(minutes=5))
    assert not result.ok and result.metrics == []
    assert result.error_code == code and code in (result.error or "")
    assert result.permanent is permanent
    assert result.end == result.start  # the window must be asked for again
    assert errors and all(e == ("monitoring", code) for e in errors)
    attempts = 3 if not permanent else 1  # transient errors are retried (max_attempts=3)
    assert col.calls_made == 2 + attempts


def test_transient_fault_is_retried_and_succeeds(fake, clock):
    fill(fake, ["checkout"], range(1, 6))
    fake.faults.inject("ListTimeSeries", "UNAVAILABLE", times=1)
    col = collector(fake, clock)
    result = col.collect(targets(["checkout"]), T0, T0 + timedelta(minutes=5))
    assert result.ok and len(result.metrics) == 10
    assert col.calls_made == 6


def test_slow_monitoring_times_out_and_gives_no_metrics(fake, clock):
    """A response slower than the call deadline is DEADLINE_EXCEEDED: retried, then the minutes
    stay missing (never healthy) and the window is asked for again on the next tick."""
    fill(fake, ["checkout"], range(1, 6))
    fake.faults.inject("ListTimeSeries", None, delay_s=1.0, times=-1)
    col = collector(fake, clock, timeout_s=0.2)
    result = col.collect(targets(["checkout"]), T0, T0 + timedelta(minutes=5))
    assert not result.ok and result.metrics == [] and result.error_code == "DEADLINE_EXCEEDED"
    assert result.permanent is False and result.end == result.start
    fake.faults.clear()
    again = col.collect(targets(["checkout"]), T0, T0 + timedelta(minutes=5))
    assert again.ok and len(again.metrics) == 10


def test_backfill_chunks_through_the_same_path(fake, clock):
    clock.advance_to(T0 + timedelta(hours=3))
    fill(fake, ["checkout"], range(1, 151))
    col = collector(fake, clock, backfill_chunk_s=3600)
    result = col.backfill(targets(["checkout"]), T0, T0 + timedelta(minutes=150))
    assert result.ok and result.end == T0 + timedelta(minutes=150)
    assert col.calls_made == 3 * 5  # 60 + 60 + 30 minutes
    assert len(result.metrics) == 2 * 150
    assert [m.time for m in result.metrics] == sorted(m.time for m in result.metrics)


def test_backfill_stops_at_failed_chunk(fake, clock):
    clock.advance_to(T0 + timedelta(hours=3))
    fill(fake, ["checkout"], range(1, 121))
    fake.faults.inject("ListTimeSeries", None, times=5)
    fake.faults.inject("ListTimeSeries", "PERMISSION_DENIED", times=-1)
    result = collector(fake, clock, backfill_chunk_s=3600).backfill(targets(["checkout"]), T0,
                                                                     T0 + timedelta(minutes=120))
    assert not result.ok and result.end == T0 + timedelta(minutes=60)
    assert max(m.time for m in result.metrics) == T0 + timedelta(minutes=60)


def test_full_resource_names_in_targets_are_shortened(fake, clock):
    fill(fake, ["checkout"], range(1, 3))
    full = "projects/p/locations/europe-west1/services/checkout/revisions/"
    result = collector(fake, clock).collect(
        [("checkout", "europe-west1", full + "checkout-00002-can", full + "checkout-00001-base")],
        T0, T0 + timedelta(minutes=2))
    assert {m.revision for m in result.metrics} == {"checkout-00002-can", "checkout-00001-base"}


def test_poller_returns_each_minute_once_and_backfills_new_rollouts(fake, clock):
    from daemon.adapters.monitoring import MetricsPoller

    fill(fake, ["checkout", "cart"], range(1, 41))
    col = collector(fake, clock)
    poller = MetricsPoller(col)
    checkout, cart = targets(["checkout", "cart"])
    first = poller.poll([(checkout, T0 + timedelta(minutes=20))])
    assert first.ok and {m.time for m in first.metrics} == {T0 + timedelta(minutes=k) for k in range(21, 37)}
    clock.advance_to(T0 + timedelta(minutes=42))
    # cart is new, its phase started at T0: backfilled in the same grouped calls.
    calls_before = col.calls_made
    second = poller.poll([(checkout, T0 + timedelta(minutes=20)), (cart, T0)])
    assert col.calls_made - calls_before == 5
    got = {(m.service, m.time) for m in second.metrics if m.revision.endswith("can")}
    assert {t for s, t in got if s == "checkout"} == {T0 + timedelta(minutes=k) for k in (37, 38)}
    assert {t for s, t in got if s == "cart"} == {T0 + timedelta(minutes=k) for k in range(1, 39)}
    # A failed tick returns nothing and the same minutes come on the next one.
    fake.add_minute("checkout", "checkout-00002-can", T0 + timedelta(minutes=39), by_class={"2xx": 1})
    clock.advance_to(T0 + timedelta(minutes=43))
    fake.faults.inject("ListTimeSeries", "PERMISSION_DENIED")
    failed = poller.poll([(checkout, T0), (cart, T0)])
    assert not failed.ok and failed.metrics == []
    third = poller.poll([(checkout, T0), (cart, T0)])
    assert third.ok and {m.time for m in third.metrics} == {T0 + timedelta(minutes=39)}
    assert len(third.metrics) == 4

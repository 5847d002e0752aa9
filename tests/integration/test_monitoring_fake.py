"""The Monitoring fake itself, through the real client: the aggregation subset it claims to honour,
bucket layouts end to end, and that it refuses what it does not model (instead of guessing)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from google.api_core import exceptions as gexc
from google.cloud import monitoring_v3

from daemon.adapters.monitoring import MonitoringCollector, Target
from daemon.clock import VirtualClock
from detectors.histogram import Histogram
from tests.fakes.monitoring import MEMORY, REQUEST_COUNT, REQUEST_LATENCIES, FakeMonitoring

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
A, R = monitoring_v3.Aggregation.Aligner, monitoring_v3.Aggregation.Reducer


@pytest.fixture
def fake():
    with FakeMonitoring(clock=VirtualClock(T0 + timedelta(hours=1))) as server:
        yield server


def query(fake, metric_type, aligner=A.ALIGN_NONE, reducer=R.REDUCE_NONE, group_by=(), period_s=60,
          minutes=10, extra=""):
    agg = None if aligner == A.ALIGN_NONE else monitoring_v3.Aggregation(
        alignment_period={"seconds": period_s}, per_series_aligner=aligner, cross_series_reducer=reducer,
        group_by_fields=list(group_by))
    request = monitoring_v3.ListTimeSeriesRequest(
        name="projects/p", filter=f'metric.type="{metric_type}"{extra}',
        interval=monitoring_v3.TimeInterval(start_time=T0, end_time=T0 + timedelta(minutes=minutes)),
        aggregation=agg)
    return list(fake.client().list_time_series(request=request, retry=None))


def test_raw_points_newest_first_and_rate(fake):
    for m in (1, 2, 3):
        fake.add_minute("s", "s-1", T0 + timedelta(minutes=m), by_class={"2xx": 60 * m})
    (raw,) = query(fake, REQUEST_COUNT)
    assert [p.value.int64_value for p in raw.points] == [180, 120, 60]
    (rate,) = query(fake, REQUEST_COUNT, A.ALIGN_RATE, R.REDUCE_SUM, ["resource.label.revision_name"])
    assert [p.value.double_value for p in rate.points] == [3.0, 2.0, 1.0]
    (five,) = query(fake, REQUEST_COUNT, A.ALIGN_DELTA, R.REDUCE_SUM, [], period_s=300)
    assert [p.value.int64_value for p in five.points] == [360]


def test_mean_and_max_reducers_on_utilisation(fake):
    fake.add_minute("s", "s-1", T0 + timedelta(minutes=1), memory=[0.2, 0.4])
    fake.add_minute("t", "t-1", T0 + timedelta(minutes=1), memory=[0.9])
    (mean,) = query(fake, MEMORY, A.ALIGN_MEAN, R.REDUCE_MEAN)
    assert mean.points[0].value.double_value == pytest.approx((0.3 + 0.9) / 2)
    (worst,) = query(fake, MEMORY, A.ALIGN_PERCENTILE_99, R.REDUCE_MAX)
    assert worst.points[0].value.double_value == pytest.approx(0.9, abs=0.011)


@pytest.mark.parametrize("hist", [
    Histogram.exponential(64, 1.4, 1.0, [0, 3, 5, 7]),
    Histogram.linear(40, 10.0, 0.0, [1, 2, 3, 0, 0, 4]),
    Histogram.explicit([5.0, 10.0, 50.0, 100.0, 1000.0], [0, 4, 4, 1, 0, 2]),
])
def test_bucket_layouts_survive_the_wire(fake, hist):
    fake.add_minute("s", "s-1", T0 + timedelta(minutes=1), by_class={"2xx": hist.total}, latency_hist=hist)
    collector = MonitoringCollector(fake.client(), project="p", clock=VirtualClock(T0 + timedelta(hours=1)),
                                    rng=random.Random(0))
    (event,) = collector.collect([Target("s", "", "s-1", None)], T0, T0 + timedelta(minutes=1)).metrics
    assert event.latency == hist and event.latency.layout == hist.layout


def test_different_layouts_cannot_be_summed(fake):
    t = T0 + timedelta(minutes=1)
    fake.add_minute("s", "s-1", t, latency_by_code={"200": Histogram.exponential(8, 2.0, 1.0, [1]),
                                                     "500": Histogram.linear(8, 1.0, 0.0, [1])})
    with pytest.raises(gexc.InvalidArgument):
        query(fake, REQUEST_LATENCIES, A.ALIGN_DELTA, R.REDUCE_SUM, ["resource.label.revision_name"])


@pytest.mark.parametrize("kwargs", [
    dict(extra=' OR resource.type="x"'),
    dict(aligner=A.ALIGN_MAX, reducer=R.REDUCE_SUM),  # ALIGN_MAX on a distribution
    dict(aligner=A.ALIGN_DELTA, reducer=R.REDUCE_SUM, period_s=30),
    dict(aligner=A.ALIGN_DELTA, reducer=R.REDUCE_PERCENTILE_99),
])
def test_unmodelled_requests_are_refused(fake, kwargs):
    fake.add_minute("s", "s-1", T0 + timedelta(minutes=1), latency_hist=Histogram.exponential(8, 2.0, 1.0, [1]))
    with pytest.raises(gexc.InvalidArgument):
        query(fake, REQUEST_LATENCIES, **kwargs)


def test_visibility_delay_hides_recent_points(fake):
    fake.visibility_delay_s = 180
    clock_now = T0 + timedelta(hours=1)
    for m in range(55, 61):
        fake.add_minute("s", "s-1", T0 + timedelta(minutes=m), by_class={"2xx": 1})
    request = monitoring_v3.ListTimeSeriesRequest(
        name="projects/p", filter=f'metric.type="{REQUEST_COUNT}"',
        interval=monitoring_v3.TimeInterval(start_time=T0, end_time=clock_now))
    (series,) = list(fake.client().list_time_series(request=request, retry=None))
    assert max(p.interval.end_time for p in series.points) == clock_now - timedelta(minutes=3)

"""The Cloud Monitoring metrics source: per-revision, per-minute `Metrics` events for the engine.

The live daemon's metrics hook calls `MetricsPoller.poll([(target, phase_start), ...])` every
interval for the ACTIVE rollouts only: it keeps a cursor per rollout and drives
`MonitoringCollector.collect`/`backfill` (a rollout seen for the first time, e.g. after a restart,
is backfilled from its phase start). `rollbackd export` (daemon/cli_export.py) uses `backfill` to
write recordings. Results are
the very `Metrics` events a recording holds, so the engine cannot tell live data from a replay.

Why it is shaped like this (issue 4, gcp-formats.md §2):
- One grouped `list_time_series` per metric type per tick, whatever the number of services: the
  filter names only `metric.type` and `resource.type` (plus the service, when there is just one),
  results are grouped by service/location/revision, and series of revisions that are not a target's
  canary or baseline are dropped here. Monitoring's query quota is per project per minute.
- Latency is ALIGN_DELTA + REDUCE_SUM grouped by revision: Monitoring merges the per-response-code
  distributions, so the p99 the detectors compute from the merged buckets is exact.
- Only windows old enough to be complete are asked for (end <= now - settle; points arrive up to
  3-4 minutes late). Minutes without points are absent, never a "healthy zero".
- A failed call (after the retries of `daemon.retry`) fails the whole window: the result carries
  the error and no metrics, so a Monitoring outage can never look healthy.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from google.cloud import monitoring_v3

from daemon.core.events import Metrics
from daemon.ports import ActionError, Clock, TransientError
from daemon.retry import call_with_retry
from detectors.histogram import Histogram

API = "monitoring"
RUN = "run.googleapis.com/"
REQUEST_COUNT = RUN + "request_count"
REQUEST_LATENCIES = RUN + "request_latencies"
MEMORY = RUN + "container/memory/utilizations"
CPU = RUN + "container/cpu/utilizations"
INSTANCES = RUN + "container/instance_count"
RESOURCE_FILTER = 'resource.type="cloud_run_revision"'
_BY_REVISION = ("resource.label.service_name", "resource.label.location", "resource.label.revision_name")
_Aligner, _Reducer = monitoring_v3.Aggregation.Aligner, monitoring_v3.Aggregation.Reducer
_CLASS_ORDER = {"1xx": 0, "2xx": 1, "3xx": 2, "4xx": 3, "5xx": 4}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Query:
    """One grouped call: a metric type and how Monitoring should align and reduce it."""

    name: str
    metric_type: str
    aligner: int
    reducer: int
    extra_group_by: tuple[str, ...] = ()


QUERIES: tuple[Query, ...] = (
    Query("requests", REQUEST_COUNT, _Aligner.ALIGN_DELTA, _Reducer.REDUCE_SUM,
          ("metric.label.response_code_class",)),
    Query("latency", REQUEST_LATENCIES, _Aligner.ALIGN_DELTA, _Reducer.REDUCE_SUM),
    # The worst instance matters for an OOM, so p99 per series and the max across containers.
    Query("memory", MEMORY, _Aligner.ALIGN_PERCENTILE_99, _Reducer.REDUCE_MAX),
    Query("cpu", CPU, _Aligner.ALIGN_PERCENTILE_99, _Reducer.REDUCE_MAX),
    # Active and idle are summed here, so reaching max_instances counts every instance.
    Query("instances", INSTANCES, _Aligner.ALIGN_MAX, _Reducer.REDUCE_SUM, ("metric.label.state",)),
)


@dataclass(frozen=True, slots=True)
class Target:
    """An active rollout: the service and the two revisions (short names) to collect."""

    service: str
    location: str
    canary: str
    baseline: str | None
    max_instances: int | None = None

    @staticmethod
    def of(value: "Target | Sequence[Any]") -> "Target":
        if isinstance(value, Target):
            return value
        service, location, canary, baseline, *rest = value
        return Target(service, location or "", _short(canary), _short(baseline) if baseline else None,
                      rest[0] if rest else None)


@dataclass
class CollectResult:
    """What one collection produced. `end` is how far the windows are complete: the next collection
    should start there (it equals `start` when nothing could be collected)."""

    start: datetime
    end: datetime
    metrics: list[Metrics] = field(default_factory=list)
    error: str | None = None
    error_code: str = ""
    permanent: bool = False
    calls: int = 0
    skipped_points: int = 0  # points Monitoring returned that could not be read (bad distributions)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Minute:
    by_class: dict[str, int] = field(default_factory=dict)
    latency: Histogram | None = None
    memory: float | None = None
    cpu: float | None = None
    instances: int | None = None


class MonitoringCollector:
    """Grouped, settled, fault-honest collection of Cloud Run revision metrics for one project."""

    def __init__(self, client: Any, *, project: str, clock: Clock, rng: random.Random,
                 on_error: Callable[[str, str], None] | None = None, settle_s: float = 240.0,
                 page_size: int = 0, timeout_s: float = 30.0, retry_budget_s: float = 20.0,
                 max_attempts: int = 3, backfill_chunk_s: int = 3600) -> None:
        self._client = client
        self.project = project
        self._clock = clock
        self._rng = rng
        self._on_error = on_error
        self.settle_s = settle_s
        self.page_size = page_size
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
        self.max_attempts = max_attempts
        self.backfill_chunk_s = max(60, int(backfill_chunk_s) // 60 * 60)
        self.calls_made = 0  # every ListTimeSeries request sent, pages and retries included

    def complete_until(self) -> datetime:
        """The newest minute boundary whose data Monitoring should have delivered by now."""
        return _floor_minute(self._clock.now() - timedelta(seconds=self.settle_s))

    def collect(self, targets: Iterable[Target | Sequence[Any]], start: datetime, end: datetime) -> CollectResult:
        """Metrics for the minutes ending in (start, end], clipped to complete windows. Pass
        `result.end` as the next call's `start`: on an error it stays put, so the window is asked
        for again next tick."""
        wanted = [Target.of(t) for t in targets]
        start = _floor_minute(start)
        end = min(_floor_minute(end), self.complete_until())
        if not wanted or end <= start:
            return CollectResult(start, start)
        by_revision: dict[tuple[str, str], list[Target]] = {}
        for t in wanted:
            for rev in (t.canary, t.baseline):
                if rev:
                    by_revision.setdefault((t.service, rev), []).append(t)
        calls_before = self.calls_made
        minutes: dict[tuple[str, str, str, datetime], _Minute] = {}
        skipped = 0
        try:
            for query in QUERIES:
                series = self._fetch(query, self._filter(query, wanted), start, end)
                skipped += _absorb(query, series, by_revision, start, end, minutes)
        except ActionError as err:
            return CollectResult(start, start, error=str(err), error_code=err.code,
                                 permanent=not isinstance(err, TransientError),
                                 calls=self.calls_made - calls_before)
        metrics = [self._event(key, m, by_revision) for key, m in minutes.items()]
        metrics.sort(key=lambda e: (e.time, e.service, e.location, e.revision))
        return CollectResult(start, end, metrics, calls=self.calls_made - calls_before, skipped_points=skipped)

    def backfill(self, targets: Iterable[Target | Sequence[Any]], since: datetime,
                 until: datetime | None = None) -> CollectResult:
        """`collect` over [since, until] in chunks (start-up and export). Stops at the first failed
        chunk: the metrics returned are complete up to `result.end`, and `error` says why it stopped."""
        wanted = [Target.of(t) for t in targets]
        since = _floor_minute(since)
        until = min(_floor_minute(until) if until else self.complete_until(), self.complete_until())
        total = CollectResult(since, since)
        cursor = since
        while cursor < until:
            chunk_end = min(cursor + timedelta(seconds=self.backfill_chunk_s), until)
            part = self.collect(wanted, cursor, chunk_end)
            total.metrics.extend(part.metrics)
            total.calls += part.calls
            total.skipped_points += part.skipped_points
            if not part.ok:
                total.error, total.error_code, total.permanent = part.error, part.error_code, part.permanent
                return total
            cursor = total.end = part.end
            if part.end <= part.start:
                break
        return total

    # --- one grouped call -----------------------------------------------------------------------
    def _filter(self, query: Query, targets: list[Target]) -> str:
        parts = [f'metric.type="{query.metric_type}"', RESOURCE_FILTER]
        services = {t.service for t in targets}
        if len(services) == 1:  # cheaper, and still one call: export and single-rollout ticks
            parts.append(f'resource.label.service_name="{next(iter(services))}"')
        return " AND ".join(parts)

    def _fetch(self, query: Query, filter_: str, start: datetime, end: datetime) -> list[Any]:
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}", filter=filter_,
            interval=monitoring_v3.TimeInterval(start_time=start, end_time=end),
            aggregation=monitoring_v3.Aggregation(
                alignment_period={"seconds": 60}, per_series_aligner=query.aligner,
                cross_series_reducer=query.reducer, group_by_fields=list(_BY_REVISION + query.extra_group_by)),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL, page_size=self.page_size)

        def attempt() -> list[Any]:
            rows: list[Any] = []
            self.calls_made += 1
            # retry=None: retries happen once, in daemon.retry, with the daemon's clock and budget.
            pager = self._client.list_time_series(request=request, retry=None, timeout=self.timeout_s)
            for page in pager.pages:
                rows.extend(type(page).pb(page).time_series)
                if page.next_page_token:
                    self.calls_made += 1  # the pager is about to ask for the next page
            return rows

        return call_with_retry(attempt, api=API, clock=self._clock, rng=self._rng,
                               budget_s=self.retry_budget_s, max_attempts=self.max_attempts,
                               on_error=self._on_error)

    def _event(self, key: tuple[str, str, str, datetime], m: _Minute,
               by_revision: dict[tuple[str, str], list[Target]]) -> Metrics:
        service, location, revision, when = key
        target = _match(by_revision, service, location, revision)
        classes = tuple(sorted(m.by_class.items(), key=lambda kv: (_CLASS_ORDER.get(kv[0], 9), kv[0])))
        return Metrics(time=when, service=service, revision=revision, interval_s=60,
                       requests_by_class=classes, latency=m.latency, memory_utilization=m.memory,
                       cpu_utilization=m.cpu, instance_count=m.instances,
                       max_instances=target.max_instances if target else None,
                       project=self.project, location=location)


class MetricsPoller:
    """The per-tick driver the daemon's metrics hook uses: it remembers, per rollout, how far its
    metrics are complete, and asks for all active rollouts at once. A rollout seen for the first time
    is backfilled from its phase start (`since`) in the same grouped calls; nothing is returned twice;
    a failed tick leaves the cursors where they were, so the next tick asks again."""

    def __init__(self, collector: MonitoringCollector) -> None:
        self.collector = collector
        self._cursor: dict[Target, datetime] = {}

    def forget(self, target: Target | Sequence[Any]) -> None:
        """Start this rollout's metrics again from its `since` at the next poll (a rollout adopted
        from another replica needs its whole evidence re-derived)."""
        self._cursor.pop(Target.of(target), None)

    def poll(self, active: Iterable[tuple[Target | Sequence[Any], datetime]]) -> CollectResult:
        wanted = {Target.of(t): _floor_minute(since) for t, since in active}
        # Forget rollouts that are no longer active (promoted, rolled back, stood down).
        self._cursor = {t: c for t, c in self._cursor.items() if t in wanted}
        for target, since in wanted.items():
            self._cursor.setdefault(target, since)
        if not wanted:
            now = self.collector.complete_until()
            return CollectResult(now, now)
        start = min(self._cursor.values())
        result = self.collector.backfill(list(wanted), start)
        result.metrics = [m for m in result.metrics if m.time > self._cursor[_owner(wanted, m)]]
        for target in wanted:
            self._cursor[target] = max(self._cursor[target], result.end)
        return result


def _owner(wanted: dict[Target, datetime], m: Metrics) -> Target:
    for t in wanted:
        if t.service == m.service and m.revision in (t.canary, t.baseline) and (
                not t.location or not m.location or t.location == m.location):
            return t
    raise KeyError(m.key())  # cannot happen: the collector only returns targeted revisions


def _absorb(query: Query, series: list[Any], by_revision: dict[tuple[str, str], list[Target]],
            start: datetime, end: datetime, minutes: dict[tuple[str, str, str, datetime], _Minute]) -> int:
    """Fold one query's series into per-(revision, minute) accumulators; returns unusable points."""
    skipped = 0
    for ts in series:
        labels = ts.resource.labels
        service, location = labels.get("service_name", ""), labels.get("location", "")
        revision = labels.get("revision_name", "")
        if _match(by_revision, service, location, revision) is None:
            continue  # another service, or a revision that is neither canary nor baseline
        cls = ts.metric.labels.get("response_code_class", "") or "unknown"
        for point in ts.points:
            stamp = point.interval.end_time
            when = _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
            if not start < when <= end:
                continue
            m = minutes.setdefault((service, location, revision, when), _Minute())
            value = point.value
            kind = value.WhichOneof("value")
            if query.name == "latency":
                hist = _histogram(value.distribution_value) if kind == "distribution_value" else None
                if hist is None:
                    if kind != "distribution_value" or value.distribution_value.count > 0:
                        skipped += 1  # not a distribution, or one we cannot read: never "no latency"
                    continue
                if m.latency is not None and not m.latency.same_layout(hist):
                    skipped += 1
                    continue
                m.latency = hist if m.latency is None else m.latency.merge(hist)
                continue
            number = value.int64_value if kind == "int64_value" else value.double_value
            if query.name == "requests":
                m.by_class[cls] = m.by_class.get(cls, 0) + int(number)
            elif query.name == "memory":
                m.memory = float(number) if m.memory is None else max(m.memory, float(number))
            elif query.name == "cpu":
                m.cpu = float(number) if m.cpu is None else max(m.cpu, float(number))
            elif query.name == "instances":
                m.instances = (m.instances or 0) + int(number)
    return skipped


def _histogram(dist: Any) -> Histogram | None:
    """A Monitoring Distribution as a Histogram (trailing zero buckets may be omitted). None when
    empty or unreadable."""
    counts = list(dist.bucket_counts)
    if dist.count == 0 and not any(counts):
        return None
    options = dist.bucket_options
    which = options.WhichOneof("options")
    try:
        if which == "exponential_buckets":
            e = options.exponential_buckets
            return Histogram.exponential(e.num_finite_buckets, e.growth_factor, e.scale, counts)
        if which == "linear_buckets":
            lin = options.linear_buckets
            return Histogram.linear(lin.num_finite_buckets, lin.width, lin.offset, counts)
        if which == "explicit_buckets":
            return Histogram.explicit(list(options.explicit_buckets.bounds), counts)
    except ValueError:
        return None
    return None


def _match(by_revision: dict[tuple[str, str], list[Target]], service: str, location: str,
           revision: str) -> Target | None:
    for t in by_revision.get((service, revision), ()):
        if not t.location or not location or t.location == location:
            return t
    return None


def _short(name: str) -> str:
    """Monitoring labels carry short revision names; accept full resource names too."""
    return name.rsplit("/", 1)[-1]


def _floor_minute(when: datetime) -> datetime:
    # A naive time is taken as UTC (astimezone would read it as local time).
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    return when.replace(second=0, microsecond=0)

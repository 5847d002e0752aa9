"""An in-process, wire-level fake of Cloud Monitoring's `MetricService/ListTimeSeries`.

The real `monitoring_v3.MetricServiceClient` talks to it over loopback gRPC
(`MetricServiceGrpcTransport(channel=grpc.insecure_channel(fake.address))`), so the collector's
request building, paging and error mapping are exercised for real. Used by the integration tests of
`daemon.adapters.monitoring` and `rollbackd export`, and by anything that needs a Monitoring backend.

It stores raw per-minute points of the Cloud Run revision metrics (see gcp-formats.md §2) and
answers queries the way Monitoring does, within the subset rollbackd uses: equality filters,
intervals, alignment (ALIGN_DELTA/RATE/MAX/MIN/MEAN/SUM/COUNT/PERCENTILE_xx), cross-series reducers
(REDUCE_SUM/MAX/MIN/MEAN/COUNT) with group_by_fields, paging by points, a visibility delay (points
younger than `now - visibility_delay` are not returned yet: Monitoring lateness), injected faults
and a request log. Anything outside that subset is answered with INVALID_ARGUMENT, not guessed.
"""
from __future__ import annotations

import bisect
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence

import grpc
from google.api import metric_pb2
from google.cloud import monitoring_v3

from detectors.histogram import Histogram
from tests.fakes.wire import FaultPlan, RequestLog, serve, unary

RUN = "run.googleapis.com/"
REQUEST_COUNT = RUN + "request_count"
REQUEST_LATENCIES = RUN + "request_latencies"
MEMORY = RUN + "container/memory/utilizations"
CPU = RUN + "container/cpu/utilizations"
INSTANCES = RUN + "container/instance_count"
_KINDS = {REQUEST_COUNT: ("DELTA", "INT64", "1"), REQUEST_LATENCIES: ("DELTA", "DISTRIBUTION", "ms"),
          MEMORY: ("DELTA", "DISTRIBUTION", "10^2.%"), CPU: ("DELTA", "DISTRIBUTION", "10^2.%"),
          INSTANCES: ("GAUGE", "INT64", "1")}
_CLASS_CODE = {"1xx": "100", "2xx": "200", "3xx": "302", "4xx": "404", "5xx": "500"}
_Agg = monitoring_v3.Aggregation
_PB_RESPONSE = monitoring_v3.ListTimeSeriesResponse.pb()
_PB_REQUEST = monitoring_v3.ListTimeSeriesRequest.pb()
_PB_SERIES = monitoring_v3.TimeSeries.pb()
_MAX_PAGE_POINTS = 100_000


@dataclass(frozen=True)
class Buckets:
    """Bucket options of a Distribution: ("exponential", n, growth, scale) | ("linear", n, width,
    offset) | ("explicit", bounds...)."""

    spec: tuple

    def edges(self) -> list[float]:
        kind = self.spec[0]
        if kind == "exponential":
            _, n, growth, scale = self.spec
            return [scale * growth ** k for k in range(n + 1)]
        if kind == "linear":
            _, n, width, offset = self.spec
            return [offset + width * k for k in range(n + 1)]
        return list(self.spec[1])

    @staticmethod
    def of_histogram(h: Histogram) -> "Buckets":
        e = h.edges
        if h.layout in ("exponential", "linear") and len(h.params) == 3:
            return Buckets((h.layout, int(h.params[0]), h.params[1], h.params[2]))
        if h.layout == "exponential":
            growth = float(f"{e[1] / e[0]:.12g}") if len(e) > 1 else 2.0
            return Buckets(("exponential", len(e) - 1, growth, e[0]))
        if h.layout == "linear":
            width = float(f"{e[1] - e[0]:.12g}") if len(e) > 1 else 1.0
            return Buckets(("linear", len(e) - 1, width, e[0]))
        return Buckets(("explicit", tuple(e)))


UTILIZATION_BUCKETS = Buckets(("linear", 100, 0.01, 0.0))


@dataclass
class Dist:
    """A Distribution value: bucket counts (underflow first, overflow last) plus count and mean."""

    buckets: Buckets
    counts: list[int]
    mean: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    @staticmethod
    def of_histogram(h: Histogram) -> "Dist":
        d = Dist(Buckets.of_histogram(h), list(h.counts))
        d.mean = d._midpoint_mean()
        return d

    @staticmethod
    def of_samples(values: Sequence[float], buckets: Buckets = UTILIZATION_BUCKETS) -> "Dist":
        edges = buckets.edges()
        counts = [0] * (len(edges) + 1)
        for v in values:
            counts[bisect.bisect_right(edges, v)] += 1
        return Dist(buckets, counts, sum(values) / len(values) if values else 0.0)

    def merged(self, other: "Dist") -> "Dist":
        if self.buckets != other.buckets:
            raise ValueError("distributions with different bucket options cannot be merged")
        total = self.count + other.count
        mean = (self.mean * self.count + other.mean * other.count) / total if total else 0.0
        return Dist(self.buckets, [a + b for a, b in zip(self.counts, other.counts)], mean)

    def percentile(self, q: float) -> float:
        """Linear interpolation inside the bucket holding the q-th value (Monitoring's method is
        not documented; this is close enough for a fake)."""
        edges, total = self.buckets.edges(), self.count
        if total == 0:
            return 0.0
        target, seen = q * total, 0
        for i, c in enumerate(self.counts):
            if c and seen + c >= target:
                if i == 0:
                    return edges[0]
                if i == len(self.counts) - 1:
                    return edges[-1]
                return edges[i - 1] + (edges[i] - edges[i - 1]) * (target - seen) / c
            seen += c
        return edges[-1]

    def _midpoint_mean(self) -> float:
        edges, total = self.buckets.edges(), self.count
        mids = [edges[0]] + [(a + b) / 2 for a, b in zip(edges, edges[1:])] + [edges[-1]]
        return sum(m * c for m, c in zip(mids, self.counts)) / total if total else 0.0


@dataclass
class _Series:
    metric_type: str
    resource: dict[str, str]
    labels: dict[str, str]
    points: dict[datetime, Any] = field(default_factory=dict)  # end time -> int | float | Dist


class FakeMonitoring:
    """The fake server plus its data. `with FakeMonitoring(clock=...) as fake:` starts it."""

    def __init__(self, *, project: str = "p", location: str = "us-central1",
                 clock: Callable[[], datetime] | Any = None, visibility_delay_s: float = 0.0) -> None:
        self.project, self.location = project, location
        self._now = clock.now if hasattr(clock, "now") else clock
        self.visibility_delay_s = visibility_delay_s
        self.faults = FaultPlan()
        self.requests = RequestLog()
        self.max_instances: dict[tuple[str, str], int] = {}  # (project, service): not on the wire
        self._series: dict[tuple[str, str], dict[tuple, _Series]] = {}  # (project, type) -> key -> s
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "FakeMonitoring":
        handler = unary("google.monitoring.v3.MetricService", "ListTimeSeries", self._list_time_series,
                        _PB_REQUEST, _PB_RESPONSE)
        self._server, self.port = serve({"google.monitoring.v3.MetricService": dict([handler])})
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> "FakeMonitoring":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> monitoring_v3.MetricServiceClient:
        """A real client wired to this fake."""
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport
        channel = grpc.insecure_channel(self.address)
        return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))

    # --- data -----------------------------------------------------------------------------------
    def add_point(self, metric_type: str, end_time: datetime, value: Any, *, service: str, revision: str,
                  labels: Mapping[str, str] | None = None, project: str | None = None,
                  location: str | None = None) -> None:
        """One raw point. DELTA values written twice for the same series and minute add up; GAUGE
        values are replaced."""
        project = project or self.project
        resource = {"project_id": project, "service_name": service, "revision_name": revision,
                    "location": location or self.location, "configuration_name": service}
        metric_labels = dict(labels or {})
        key = (tuple(sorted(resource.items())), tuple(sorted(metric_labels.items())))
        end_time = end_time.astimezone(timezone.utc)
        with self._lock:
            bucket = self._series.setdefault((project, metric_type), {})
            series = bucket.get(key) or bucket.setdefault(key, _Series(metric_type, resource, metric_labels))
            old = series.points.get(end_time)
            if old is not None and _KINDS.get(metric_type, ("DELTA",))[0] == "DELTA":
                value = old.merged(value) if isinstance(old, Dist) else old + value
            series.points[end_time] = value

    def add_minute(self, service: str, revision: str, end_time: datetime, *,
                   by_class: Mapping[str, int] | None = None, by_code: Mapping[str, int] | None = None,
                   latency_hist: Histogram | Dist | None = None,
                   latency_by_code: Mapping[str, Histogram | Dist] | None = None,
                   memory: float | Sequence[float] | None = None, cpu: float | Sequence[float] | None = None,
                   instances: int | Mapping[str, int] | None = None, max_instances: int | None = None,
                   project: str | None = None, location: str | None = None) -> None:
        """One minute of a revision, as Cloud Run would report it. `by_class` uses a typical code per
        class; `latency_hist` is recorded under response code 200; memory/cpu are one ratio per
        instance (or one value) turned into a utilisation distribution."""
        where = dict(service=service, revision=revision, project=project, location=location)
        codes = dict(by_code or {})
        for cls, n in (by_class or {}).items():
            codes[_CLASS_CODE.get(cls, cls)] = codes.get(_CLASS_CODE.get(cls, cls), 0) + int(n)
        for code, n in codes.items():
            self.add_point(REQUEST_COUNT, end_time, int(n), labels=_code_labels(code), **where)
        lat = dict(latency_by_code or {})
        if latency_hist is not None:
            lat["200"] = latency_hist
        for code, h in lat.items():
            d = Dist.of_histogram(h) if isinstance(h, Histogram) else h
            self.add_point(REQUEST_LATENCIES, end_time, d, labels=_code_labels(code), **where)
        for metric_type, value in ((MEMORY, memory), (CPU, cpu)):
            if value is not None:
                samples = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
                self.add_point(metric_type, end_time, Dist.of_samples(samples),
                               labels={"container_name": "app"}, **where)
        if instances is not None:
            states = {"active": int(instances)} if isinstance(instances, int) else dict(instances)
            for state, n in states.items():
                self.add_point(INSTANCES, end_time, int(n), labels={"state": state, "container_name": "app"},
                               **where)
        if max_instances is not None:
            self.max_instances[(project or self.project, service)] = max_instances

    # --- the RPC --------------------------------------------------------------------------------
    def _list_time_series(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.add("ListTimeSeries", monitoring_v3.ListTimeSeriesRequest.wrap(request))
        self.faults.apply("ListTimeSeries", context)
        try:
            series = self._query(request)
        except _Invalid as bad:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(bad))
        limit = request.page_size if 0 < request.page_size <= _MAX_PAGE_POINTS else _MAX_PAGE_POINTS
        try:
            first = int(request.page_token) if request.page_token else 0
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token")
        response, points, index = _PB_RESPONSE(), 0, first
        while index < len(series) and (index == first or points + len(series[index].points) <= limit):
            response.time_series.append(series[index])
            points += len(series[index].points)
            index += 1
        if index < len(series):
            response.next_page_token = str(index)
        return response

    def _query(self, request: Any) -> list[Any]:
        match = re.fullmatch(r"projects/([^/]+)", request.name)
        if not match:
            raise _Invalid(f"name must be projects/PROJECT, got {request.name!r}")
        where = _parse_filter(request.filter)
        metric_type = where.pop("metric.type")
        end = _ts(request.interval.end_time)
        if end is None:
            raise _Invalid("interval.end_time is required")
        start = _ts(request.interval.start_time) or end
        visible_until = self._now() - timedelta(seconds=self.visibility_delay_s) if self._now else None
        kind, value_type, unit = _KINDS.get(metric_type, ("GAUGE", "DOUBLE", "1"))
        selected: list[tuple[_Series, dict[datetime, Any]]] = []
        with self._lock:
            for s in self._series.get((match.group(1), metric_type), {}).values():
                if not all(_field(s, k) == v for k, v in where.items()):
                    continue
                pts = {t: v for t, v in s.points.items() if start < t <= end or (t == end == start)}
                if visible_until is not None:
                    pts = {t: v for t, v in pts.items() if t <= visible_until}
                if pts:
                    selected.append((s, pts))
        return _aggregate(selected, request.aggregation, start, end, kind, value_type, unit)


class _Invalid(ValueError):
    pass


def _code_labels(code: str) -> dict[str, str]:
    return {"response_code": code, "response_code_class": code[0] + "xx" if code[:1].isdigit() else code,
            "route": ""}


_CLAUSE = re.compile(r'\s*(metric\.type|resource\.type|(?:resource|metric)\.labels?\.[A-Za-z_]+)\s*=\s*"([^"]*)"\s*')


def _parse_filter(text: str) -> dict[str, str]:
    where: dict[str, str] = {}
    for clause in re.split(r"\s+AND\s+", text.strip()):
        m = _CLAUSE.fullmatch(clause)
        if not m:
            raise _Invalid(f"unsupported filter clause {clause!r}")
        where[m.group(1).replace(".labels.", ".label.")] = m.group(2)
    if "metric.type" not in where:
        raise _Invalid("the filter must name exactly one metric.type")
    return where


def _field(s: _Series, name: str) -> str:
    if name == "resource.type":
        return "cloud_run_revision"
    scope, _, key = name.split(".", 2)
    return (s.resource if scope == "resource" else s.labels).get(key, "")


def _ts(stamp: Any) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=timezone.utc)



# --- aggregation: alignment per series, then the cross-series reduction -------------------------
_PERCENTILES = {_Agg.Aligner.ALIGN_PERCENTILE_99: 0.99, _Agg.Aligner.ALIGN_PERCENTILE_95: 0.95,
                _Agg.Aligner.ALIGN_PERCENTILE_50: 0.50, _Agg.Aligner.ALIGN_PERCENTILE_05: 0.05}


def _align(values: list[Any], aligner: int, kind: str, vt: str, period_s: float) -> tuple[Any, str, str]:
    """One aligned value from the raw points of one series in one alignment period."""
    A, dist = _Agg.Aligner, vt == "DISTRIBUTION"
    if aligner == A.ALIGN_DELTA:
        if kind != "DELTA":
            raise _Invalid("ALIGN_DELTA needs a DELTA or CUMULATIVE metric")
        return _sum(values, vt), "DELTA", vt
    if aligner == A.ALIGN_RATE and kind == "DELTA" and not dist:
        return sum(values) / period_s, "GAUGE", "DOUBLE"
    if aligner in (A.ALIGN_MAX, A.ALIGN_MIN) and not dist:
        return (max if aligner == A.ALIGN_MAX else min)(values), "GAUGE", vt
    if aligner == A.ALIGN_MEAN:
        return (_sum(values, vt).mean if dist else sum(values) / len(values)), "GAUGE", "DOUBLE"
    if aligner == A.ALIGN_SUM:
        return _sum(values, vt), kind, vt
    if aligner == A.ALIGN_COUNT:
        return len(values), "GAUGE", "INT64"
    if aligner in _PERCENTILES and dist:
        return _sum(values, vt).percentile(_PERCENTILES[aligner]), "GAUGE", "DOUBLE"
    raise _Invalid(f"aligner {A(aligner).name} is not valid for a {kind} {vt} metric in this fake")


def _reduce(values: list[Any], reducer: int, vt: str) -> tuple[Any, str]:
    R, dist = _Agg.Reducer, vt == "DISTRIBUTION"
    if reducer == R.REDUCE_SUM:
        return _sum(values, vt), vt
    if reducer in (R.REDUCE_MAX, R.REDUCE_MIN) and not dist:
        return (max if reducer == R.REDUCE_MAX else min)(values), vt
    if reducer == R.REDUCE_MEAN:
        return (_sum(values, vt).mean if dist else sum(values) / len(values)), "DOUBLE"
    if reducer == R.REDUCE_COUNT:
        return len(values), "INT64"
    raise _Invalid(f"reducer {R(reducer).name} is not valid for {vt} in this fake")


def _sum(values: list[Any], vt: str) -> Any:
    if vt == "DISTRIBUTION":
        total = values[0]
        for v in values[1:]:
            try:
                total = total.merged(v)
            except ValueError as exc:
                raise _Invalid(str(exc)) from None
        return total
    return sum(values)


def _aggregate(selected: list[tuple[_Series, dict[datetime, Any]]], agg: Any, start: datetime,
               end: datetime, kind: str, vt: str, unit: str) -> list[Any]:
    aligner, reducer = agg.per_series_aligner, agg.cross_series_reducer
    period_s = agg.alignment_period.seconds
    if aligner == _Agg.Aligner.ALIGN_NONE:
        if reducer != _Agg.Reducer.REDUCE_NONE:
            raise _Invalid("a cross_series_reducer needs a per_series_aligner other than ALIGN_NONE")
        rows = [(s.resource, s.labels, pts) for s, pts in selected]
        return [_series_pb(r, m, pts, kind, vt, unit, 60) for r, m, pts in sorted(rows, key=_order)]
    if period_s < 60:
        raise _Invalid("alignment_period must be at least 60s")
    aligned: list[tuple[_Series, dict[datetime, Any]]] = []
    out_kind, out_vt = kind, vt
    for s, pts in selected:
        bins: dict[datetime, list[Any]] = {}
        for t, v in pts.items():
            # Periods end at `end`, `end - period`, ...: a point belongs to the first one ending at/after it.
            k = math.floor((end - t).total_seconds() / period_s)
            bins.setdefault(end - timedelta(seconds=k * period_s), []).append(v)
        out: dict[datetime, Any] = {}
        for pend, values in bins.items():
            out[pend], out_kind, out_vt = _align(values, aligner, kind, vt, period_s)
        aligned.append((s, out))
    if reducer == _Agg.Reducer.REDUCE_NONE:
        rows = [(s.resource, s.labels, pts) for s, pts in aligned]
        return [_series_pb(r, m, p, out_kind, out_vt, unit, period_s) for r, m, p in sorted(rows, key=_order)]
    groups: dict[tuple, list[tuple[_Series, dict[datetime, Any]]]] = {}
    fields = [f.replace(".labels.", ".label.") for f in agg.group_by_fields]
    for f in fields:
        if not re.fullmatch(r"(resource|metric)\.label\.[A-Za-z_]+", f):
            raise _Invalid(f"unsupported group_by field {f!r}")
    for s, pts in aligned:
        groups.setdefault(tuple(_field(s, f) for f in fields), []).append((s, pts))
    result = []
    for values_key, members in groups.items():
        resource = {f.split(".", 2)[2]: v for f, v in zip(fields, values_key) if f.startswith("resource.")}
        labels = {f.split(".", 2)[2]: v for f, v in zip(fields, values_key) if f.startswith("metric.")}
        resource.setdefault("project_id", members[0][0].resource["project_id"])
        by_end: dict[datetime, list[Any]] = {}
        for _, pts in members:
            for t, v in pts.items():
                by_end.setdefault(t, []).append(v)
        reduced, red_vt = {}, out_vt
        for t, values in by_end.items():
            reduced[t], red_vt = _reduce(values, reducer, out_vt)
        result.append((resource, labels, reduced, red_vt))
    result.sort(key=lambda row: _order(row[:3]))
    return [_series_pb(r, m, p, out_kind, v, unit, period_s) for r, m, p, v in result]


def _order(row: tuple) -> tuple:
    return tuple(sorted(row[0].items())), tuple(sorted(row[1].items()))


def _series_pb(resource: dict, labels: dict, points: dict[datetime, Any], kind: str, vt: str, unit: str,
               period_s: float) -> Any:
    ts = _PB_SERIES()
    ts.metric.labels.update(labels)
    ts.resource.type = "cloud_run_revision"
    ts.resource.labels.update(resource)
    ts.metric_kind = metric_pb2.MetricDescriptor.MetricKind.Value(kind)
    ts.value_type = metric_pb2.MetricDescriptor.ValueType.Value(vt)
    ts.unit = unit
    for t in sorted(points, reverse=True):  # Monitoring returns the newest point first
        p = ts.points.add()
        p.interval.end_time.FromDatetime(t)
        p.interval.start_time.FromDatetime(t - timedelta(seconds=period_s) if kind == "DELTA" else t)
        v = points[t]
        if vt == "DISTRIBUTION":
            _fill_distribution(p.value.distribution_value, v)
        elif vt == "INT64":
            p.value.int64_value = int(v)
        else:
            p.value.double_value = float(v)
    return ts


def _fill_distribution(out: Any, d: Dist) -> None:
    out.count = d.count
    out.mean = d.mean
    spec = d.buckets.spec
    if spec[0] == "exponential":
        e = out.bucket_options.exponential_buckets
        e.num_finite_buckets, e.growth_factor, e.scale = spec[1], spec[2], spec[3]
    elif spec[0] == "linear":
        lin = out.bucket_options.linear_buckets
        lin.num_finite_buckets, lin.width, lin.offset = spec[1], spec[2], spec[3]
    else:
        out.bucket_options.explicit_buckets.bounds.extend(spec[1])
    counts = list(d.counts)
    while counts and counts[-1] == 0:  # Monitoring omits trailing zero buckets
        counts.pop()
    out.bucket_counts.extend(counts)


__all__ = ["FakeMonitoring", "Dist", "Buckets", "UTILIZATION_BUCKETS", "REQUEST_COUNT", "REQUEST_LATENCIES",
           "MEMORY", "CPU", "INSTANCES"]

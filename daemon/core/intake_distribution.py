"""Cloud Monitoring Distributions (JSON form) as `Histogram`s: the `request_latencies` of a
native `metrics` event. Called by `daemon.core.intake_native`; written back by
`daemon.core.codec.histogram_to_json`.

camelCase as `MessageToJson` writes it is the norm; the snake_case of proto-plus `to_json` is
accepted too. int64 values may be JSON numbers or strings. Bucket 0 is underflow and the last
bucket overflow; trailing zero counts may be omitted; more counts than buckets, a `count` that
disagrees with their sum, or impossible bucket options raise `Bad`.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Mapping

from daemon.core.intake_fields import INT64_MAX, Bad, as_count, as_float, as_int, short, type_name
from detectors.histogram import Histogram

MAX_FINITE_BUCKETS = 10_000  # Cloud Monitoring's own limit
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)  # fits int64 without a range check


def _pick(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def parse_distribution(raw: Any, path: str) -> Histogram:
    """A Cloud Monitoring Distribution (JSON) as a Histogram. Bucket 0 is underflow, the last is
    overflow; trailing zero counts may be omitted; `count`, when present, must equal their sum."""
    if not isinstance(raw, dict):
        raise Bad(f"{path}: expected a Distribution object, got {type_name(raw)}")
    options = _pick(raw, "bucketOptions", "bucket_options")
    if not isinstance(options, dict):
        raise Bad(f"{path}.bucketOptions: " + ("missing" if options is None else
                                              f"expected an object, got {type_name(options)}"))
    counts_raw = _pick(raw, "bucketCounts", "bucket_counts")
    if counts_raw is None:
        counts_raw = []
    if not isinstance(counts_raw, list):
        raise Bad(f"{path}.bucketCounts: expected an array, got {type_name(counts_raw)}")
    counts = _counts(counts_raw, f"{path}.bucketCounts")
    count = raw.get("count")
    if count is not None:
        declared = as_count(count, f"{path}.count")
        if declared != sum(counts):
            raise Bad(f"{path}.count: {declared} disagrees with the sum of bucketCounts {sum(counts)}")
    for key in ("mean", "sumOfSquaredDeviation", "sum_of_squared_deviation"):
        if raw.get(key) is not None:
            as_float(raw[key], f"{path}.{key}")
    layouts = [k for k in options if k in _LAYOUTS]
    if len(layouts) != 1:
        raise Bad(f"{path}.bucketOptions: expected exactly one of exponentialBuckets, linearBuckets, "
                  f"explicitBuckets, got {short(sorted(str(k) for k in options), 80)}")
    name = layouts[0]
    spec = options[name]
    if not isinstance(spec, dict):
        raise Bad(f"{path}.bucketOptions.{name}: expected an object, got {type_name(spec)}")
    return _LAYOUTS[name](spec, counts, f"{path}.bucketOptions.{name}")


def _num_finite(spec: Mapping[str, Any], path: str) -> int:
    value = _pick(spec, "numFiniteBuckets", "num_finite_buckets")
    if value is None:
        raise Bad(f"{path}.numFiniteBuckets: missing")
    n = as_int(value, f"{path}.numFiniteBuckets")
    if not 1 <= n <= MAX_FINITE_BUCKETS:
        raise Bad(f"{path}.numFiniteBuckets: {n} is not between 1 and {MAX_FINITE_BUCKETS}")
    return n


def _check_len(counts: list[int], n_buckets: int, path: str) -> None:
    if len(counts) > n_buckets:
        raise Bad(f"{path}: {len(counts)} bucketCounts for a layout of {n_buckets} buckets")


def _exponential(spec: Mapping[str, Any], counts: list[int], path: str) -> Histogram:
    n = _num_finite(spec, path)
    growth = as_float(_required(spec, "growthFactor", "growth_factor", path), f"{path}.growthFactor")
    scale = as_float(_required(spec, "scale", "scale", path), f"{path}.scale")
    if growth <= 1.0:
        raise Bad(f"{path}.growthFactor: {growth} is not greater than 1")
    if scale <= 0.0:
        raise Bad(f"{path}.scale: {scale} is not greater than 0")
    _check_len(counts, n + 2, path)
    return _build(("exponential", n, growth, scale), counts, path)


def _linear(spec: Mapping[str, Any], counts: list[int], path: str) -> Histogram:
    n = _num_finite(spec, path)
    width = as_float(_required(spec, "width", "width", path), f"{path}.width")
    offset_raw = spec.get("offset")
    offset = 0.0 if offset_raw is None else as_float(offset_raw, f"{path}.offset")  # proto3 omits 0
    if width <= 0.0:
        raise Bad(f"{path}.width: {width} is not greater than 0")
    _check_len(counts, n + 2, path)
    return _build(("linear", n, width, offset), counts, path)


def _explicit(spec: Mapping[str, Any], counts: list[int], path: str) -> Histogram:
    bounds_raw = spec.get("bounds")
    if not isinstance(bounds_raw, list) or not bounds_raw:
        raise Bad(f"{path}.bounds: expected a non-empty array of numbers")
    if len(bounds_raw) > MAX_FINITE_BUCKETS + 1:
        raise Bad(f"{path}.bounds: {len(bounds_raw)} bounds is more than {MAX_FINITE_BUCKETS + 1}")
    bounds = [as_float(b, f"{path}.bounds[{i}]") for i, b in enumerate(bounds_raw)]
    for i in range(1, len(bounds)):
        if bounds[i] <= bounds[i - 1]:
            raise Bad(f"{path}.bounds[{i}]: bounds must be strictly increasing")
    _check_len(counts, len(bounds) + 1, path)
    return _build(("explicit", *bounds), counts, path)


def _required(spec: Mapping[str, Any], camel: str, snake: str, path: str) -> Any:
    value = _pick(spec, camel, snake)
    if value is None:
        raise Bad(f"{path}.{camel}: missing")
    return value


def _counts(raw: list[Any], path: str) -> list[int]:
    """Bucket counts; the common shapes (ints, or decimal strings) skip the general reader."""
    out = []
    for i, value in enumerate(raw):
        if type(value) is int and 0 <= value <= INT64_MAX:
            out.append(value)
        elif type(value) is str and _DIGITS.fullmatch(value):
            out.append(int(value))
        else:
            out.append(as_count(value, f"{path}[{i}]"))
    return out


def _build(key: tuple[Any, ...], counts: list[int], path: str) -> Histogram:
    try:
        layout = _layout(key)
    except (ValueError, OverflowError) as exc:  # e.g. edges overflowing to inf
        raise Bad(f"{path}: {exc}") from None
    return Histogram(layout.layout, layout.edges, tuple(counts) + (0,) * (len(layout.counts) - len(counts)),
                     layout.params)


@lru_cache(maxsize=64)  # bounded: explicit layouts can hold 10k bounds
def _layout(key: tuple[Any, ...]) -> Histogram:
    """An empty histogram per bucket layout, built (and validated) once by the Histogram
    constructors; messages reuse its edges. Computing 65 powers per message was most of the cost
    of parsing a metrics line. Callers have checked the count length against the layout."""
    if key[0] == "exponential":
        return Histogram.exponential(key[1], key[2], key[3], ())
    if key[0] == "linear":
        return Histogram.linear(key[1], key[2], key[3], ())
    return Histogram.explicit(key[1:], ())


_LAYOUTS: dict[str, Callable[[Mapping[str, Any], list[int], str], Histogram]] = {
    "exponentialBuckets": _exponential, "exponential_buckets": _exponential,
    "linearBuckets": _linear, "linear_buckets": _linear,
    "explicitBuckets": _explicit, "explicit_buckets": _explicit,
}

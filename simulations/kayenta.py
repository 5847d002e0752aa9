"""A Kayenta NetflixACAJudge look-alike, vectorised across runs, for the detection benchmark.

Faithful to the defaults in canary-statistics.md §1: per-minute series; NaN `remove` (latency) or
`replace` with 0 (errors); the identical/constant shortcuts; Mann-Whitney with the Hodges-Lehmann
estimate and a 98% CI found by root-finding on the normal-approximation Wilcoxon statistic (midranks,
continuity correction 0.5*sign(dz), tie-corrected variance) exactly as R's `wilcox.test`, which
Kayenta ports; High when CI_lower > 0.25*|HL| and mean ratio >= allowedIncrease; group scoring with
critical metrics; marginal 75 / pass 95. Called by `simulations.baselines`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

TOLERANCE = 0.25
CONF_LEVEL = 0.98
MARGINAL = 75.0
PASS = 95.0

# Metric classifications, as small ints so they vectorise.
PASS_, HIGH, NODATA = 0, 1, 2


def wdiff(x: np.ndarray, y: np.ndarray, mu: np.ndarray, zq: float, correct: bool) -> np.ndarray:
    """R's `wdiff(d, zq)` for every row: (dz - correction)/sigma - zq for the shift `mu` (per row),
    with experiment `x` (rows x nx) and control `y` (rows x ny); NaN entries are left out."""
    z = np.concatenate([x - mu[:, None], y], axis=1)
    rows, n_all = z.shape
    order = np.argsort(z, axis=1, kind="stable")  # NaN sorts last
    s = np.take_along_axis(z, order, axis=1)
    valid = ~np.isnan(s)
    new_group = np.ones(s.shape, dtype=bool)
    new_group[:, 1:] = s[:, 1:] != s[:, :-1]
    pos = np.broadcast_to(np.arange(1, n_all + 1), s.shape)
    first = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
    end_group = np.ones(s.shape, dtype=bool)
    end_group[:, :-1] = new_group[:, 1:]
    last = np.minimum.accumulate(np.where(end_group, pos, n_all + 1)[:, ::-1], axis=1)[:, ::-1]
    midrank = (first + last) / 2.0
    ranks = np.empty_like(midrank)
    np.put_along_axis(ranks, order, midrank, axis=1)
    x_valid = ~np.isnan(x)
    nx = x_valid.sum(axis=1).astype(float)
    ny = (~np.isnan(y)).sum(axis=1).astype(float)
    rank_sum = np.where(x_valid, ranks[:, : x.shape[1]], 0.0).sum(axis=1)
    dz = rank_sum - nx * (nx + 1) / 2 - nx * ny / 2
    size = (last - first + 1).astype(float)
    ties = np.where(valid, size * size - 1.0, 0.0).sum(axis=1)  # = sum over groups of t^3 - t
    n = nx + ny
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt(nx * ny / 12.0 * ((n + 1) - ties / (n * (n - 1))))
        correction = np.sign(dz) * 0.5 if correct else 0.0
        return (dz - correction) / sigma - zq


def _root(x: np.ndarray, y: np.ndarray, zq: float, correct: bool, iterations: int = 60) -> np.ndarray:
    """R's `root(zq)`: the shift where `wdiff` crosses zero, by bisection inside
    [min x - max y, max x - min y]; the bracket ends when wdiff does not change sign."""
    lo = np.nanmin(x, axis=1) - np.nanmax(y, axis=1)
    hi = np.nanmax(x, axis=1) - np.nanmin(y, axis=1)
    f_lo = wdiff(x, y, lo, zq, correct)
    f_hi = wdiff(x, y, hi, zq, correct)
    out = np.where(f_lo <= 0, lo, np.where(f_hi >= 0, hi, np.nan))
    todo = np.isnan(out)
    a, b = lo.copy(), hi.copy()
    for _ in range(iterations):
        if not todo.any():
            break
        mid = (a + b) / 2.0
        f_mid = wdiff(x, y, mid, zq, correct)
        exact = todo & (f_mid == 0)
        out = np.where(exact, mid, out)
        todo &= ~exact
        a = np.where(todo & (f_mid > 0), mid, a)
        b = np.where(todo & (f_mid < 0), mid, b)
    return np.where(todo, (a + b) / 2.0, out)


def hodges_lehmann_ci(x: np.ndarray, y: np.ndarray, conf_level: float = CONF_LEVEL
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, CI lower, CI upper) of the location shift x - y for every row, as Kayenta does."""
    alpha = 1.0 - conf_level
    lower = _root(x, y, float(norm.ppf(1 - alpha / 2)), True)
    upper = _root(x, y, float(norm.ppf(alpha / 2)), True)
    estimate = _root(x, y, 0.0, False)
    return estimate, lower, upper


def classify(x: np.ndarray, y: np.ndarray, allowed_increase: float = 1.0, rng: np.random.Generator | None = None,
             tolerance: float = TOLERANCE, conf_level: float = CONF_LEVEL) -> np.ndarray:
    """Per-row classification (PASS_/HIGH/NODATA) of one metric, direction "increase".
    `x` is the canary's series, `y` the baseline's; NaNs have already been replaced or mean `remove`."""
    rows = x.shape[0]
    result = np.full(rows, PASS_, dtype=np.int8)
    nx = (~np.isnan(x)).sum(axis=1)
    ny = (~np.isnan(y)).sum(axis=1)
    nodata = (nx == 0) | (ny == 0)
    result[nodata] = NODATA
    live = ~nodata
    if not live.any():
        return result
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are NODATA already
        xmin, xmax = np.nanmin(x, axis=1), np.nanmax(x, axis=1)
        ymin, ymax = np.nanmin(y, axis=1), np.nanmax(y, axis=1)
    one_value = (xmin == xmax) & (ymin == ymax) & (xmin == ymin)
    identical = np.zeros(rows, dtype=bool)
    if x.shape[1] == y.shape[1]:
        identical = (nx == ny) & np.all(np.sort(x, axis=1) == np.sort(y, axis=1), axis=1)
    live &= ~(one_value | identical)
    # Both sides constant (but different): Kayenta adds noise with sd 1e-5 * value to each side.
    both_constant = live & (xmin == xmax) & (ymin == ymax)
    if both_constant.any():
        rng = rng or np.random.default_rng(0)
        x, y = x.copy(), y.copy()
        x[both_constant] += rng.standard_normal(x[both_constant].shape) * 1e-5 * np.abs(x[both_constant])
        y[both_constant] += rng.standard_normal(y[both_constant].shape) * 1e-5 * np.abs(y[both_constant])
    if not live.any():
        return result
    idx = np.flatnonzero(live)
    xs, ys = x[idx], y[idx]
    z_hi = float(norm.ppf(1 - (1 - conf_level) / 2))
    # CI_lower > 0.25*|HL| >= 0 needs CI_lower > 0, i.e. wdiff(0) > 0: root-find only those rows.
    candidates = wdiff(xs, ys, np.zeros(len(idx)), z_hi, True) > 0
    if not candidates.any():
        return result
    idx, xs, ys = idx[candidates], xs[candidates], ys[candidates]
    estimate = _root(xs, ys, 0.0, False, iterations=40)
    lower = _root(xs, ys, z_hi, True, iterations=40)
    with np.errstate(all="ignore"):
        effect = np.nanmean(xs, axis=1) / np.nanmean(ys, axis=1)
    effect = np.where(np.isfinite(effect) & (effect != 0), effect, np.nan)
    high = (lower > tolerance * np.abs(estimate)) & (np.isnan(effect) | (effect >= allowed_increase))
    result[idx[high]] = HIGH
    return result


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    group: str
    critical: bool = False


def score(classes: dict[str, np.ndarray], specs: list[MetricSpec]) -> np.ndarray:
    """Kayenta's summary score per row: group score = 100 * #Pass / (#Pass + #High) (plain Nodata
    excluded; a group without data counts 100); unweighted groups share equally; a critical
    non-Pass metric or >= 50% Nodata metrics give 0."""
    rows = next(iter(classes.values())).shape[0]
    groups = sorted({s.group for s in specs})
    total = np.zeros(rows)
    for group in groups:
        members = [s for s in specs if s.group == group]
        passed = sum((classes[s.name] == PASS_).astype(float) for s in members)
        judged = sum((classes[s.name] != NODATA).astype(float) for s in members)
        with np.errstate(invalid="ignore", divide="ignore"):
            total += np.where(judged > 0, 100.0 * passed / np.maximum(judged, 1), 100.0)
    summary = total / len(groups)
    nodata = sum((classes[s.name] == NODATA).astype(float) for s in specs)
    summary = np.where(nodata / len(specs) >= 0.5, 0.0, summary)
    for s in specs:
        if s.critical:
            summary = np.where(classes[s.name] == HIGH, 0.0, summary)
    return summary

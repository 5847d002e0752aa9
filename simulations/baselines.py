"""Reference detectors for the benchmark, vectorised across runs: oracle SPRT, Kayenta-style (per
phase and every minute), Flagger-style and a naive per-minute z-test.

Each method takes the simulated `Minutes` (runs x minutes) and returns, per run, when it rolled back
in minutes of data after the deploy, including the points' visibility delay (NaN: never). They see
only what the daemon sees: per-minute counts and histograms, with missing points left out.
Called by `simulations.benchmark`; the closed forms here are tested in tests/unit/test_baselines.py.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta as beta_dist

from simulations import kayenta
from simulations.scenario_model import Scenario, lognormal_bucket_probs
from simulations.scenario_sim import Minutes

SLOW_MS = 500.0  # the runbook's p99 limit; "slow" requests for the naive test and for harm


# --- closed forms -------------------------------------------------------------------------------
def sprt_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """Wald's log boundaries: (upper, lower) = (log((1-b)/a), log(b/(1-a)))."""
    return math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))


def expected_llr_to_detect(alpha: float, beta: float) -> float:
    """Numerator of Wald's E1[N]: (1-b) log((1-b)/a) + b log(b/(1-a)); divide by D for N*1."""
    upper, lower = sprt_bounds(alpha, beta)
    return (1 - beta) * upper + beta * lower


def kl_bernoulli(p: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    p, q = np.asarray(p, float), np.asarray(q, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    return a + b


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes out of n."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    lower = 0.0 if k == 0 else float(beta_dist.ppf(tail, k, n - k + 1))
    upper = 1.0 if k == n else float(beta_dist.ppf(1 - tail, k + 1, n - k))
    return lower, upper


def slow_mask(edges: np.ndarray, slow_ms: float = SLOW_MS) -> np.ndarray:
    """Buckets (underflow, finite, overflow) whose lower edge is >= slow_ms: conservative, as
    `Histogram.count_at_or_above`."""
    lower = np.concatenate([[-np.inf], edges])
    return lower >= slow_ms


def hist_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """Vectorised `detectors.histogram.quantile` for exponential buckets; NaN where empty."""
    total = counts.sum(axis=-1)
    cum = np.cumsum(counts, axis=-1)
    target = q * total
    index = np.minimum((cum < target[..., None]).sum(axis=-1), counts.shape[-1] - 1)
    k = counts.shape[-1]
    inner = np.clip(index, 1, k - 2)  # finite bucket i covers [edges[i-1], edges[i])
    lower, upper = edges[inner - 1], edges[inner]
    below = np.where(index > 0, np.take_along_axis(cum, np.maximum(index - 1, 0)[..., None], -1)[..., 0], 0)
    inside = np.take_along_axis(counts, index[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.where(inside > 0, (target - below) / inside, 0.0), 0.0, 1.0)
        value = lower * (upper / lower) ** frac
    value = np.where(index == 0, edges[0], np.where(index == k - 1, edges[-1], value))
    return np.where(total > 0, value, np.nan)


def _first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along the last axis, -1 if none."""
    hit = mask.any(axis=-1)
    return np.where(hit, mask.argmax(axis=-1), -1)


def _decision_time(m: Minutes, index: np.ndarray) -> np.ndarray:
    """Minutes after the deploy at which a decision on data minute `index` (0-based) can be made:
    the minute's end plus the later of the two arms' visibility delays. NaN for -1."""
    safe = np.maximum(index, 0)
    rows = np.arange(m.runs)
    delay = np.maximum(m.delay_c[rows, safe], m.delay_b[rows, safe])
    return np.where(index >= 0, safe + 1 + delay, np.nan).astype(float)


def _both(m: Minutes) -> np.ndarray:
    return m.present_c & m.present_b


# --- M0: oracle SPRT ----------------------------------------------------------------------------
def oracle_llr(m: Minutes, latency_warmup_min: int = 0) -> np.ndarray:
    """Per-minute log-likelihood-ratio increments (runs x minutes) of the two-sample conditional
    oracle: given the minute's totals, canary share of 5xx (and of each latency bucket) under the
    true parameters against equal per-request behaviour (canary-statistics.md §5). The latency part
    leaves out the canary's first `latency_warmup_min` minutes, as the daemon's warm-up does (a fair
    oracle cannot use the minutes a cold start would make unusable)."""
    both = _both(m)
    n_c, n_b = m.n_c.astype(float), m.n_b.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = n_c / (n_c + n_b)
        r = np.where(m.p_b > 0, m.ratio, 1.0)
        q1 = r * pi / (r * pi + 1 - pi)
        err = m.e_c * np.log(q1 / pi) + m.e_b * np.log((1 - q1) / (1 - pi))
        lat_c, lat_b = n_c[..., None] * m.probs_c, n_b[..., None] * m.probs_b
        q1k = lat_c / (lat_c + lat_b)
        pik = pi[..., None]
        same = np.isclose(m.probs_c, m.probs_b, rtol=1e-12, atol=1e-15)
        lat = np.where(same, 0.0, m.lat_c * np.log(q1k / pik) + m.lat_b * np.log((1 - q1k) / (1 - pik)))
        lat = np.nan_to_num(lat, nan=0.0, posinf=0.0, neginf=0.0).sum(axis=-1)
        lat[:, :latency_warmup_min] = 0.0
    inc = np.nan_to_num(err, nan=0.0, posinf=0.0, neginf=0.0) + lat
    return np.where(both, inc, 0.0)


def oracle(m: Minutes, alpha: float = 0.01, latency_warmup_min: int = 0) -> np.ndarray:
    """One-sided oracle: the likelihood ratio of the true alternative against the null, with the
    true parameters, crossing log(1/alpha). It never stops by accepting the null (a rollback
    detector that could stop looking would be given an unfair edge by Wald's lower boundary); it
    has power one and, by Ville's inequality, false-alarm rate <= alpha at every look."""
    llr = np.cumsum(oracle_llr(m, latency_warmup_min), axis=1)
    return _decision_time(m, _first(llr >= math.log(1.0 / alpha)))


def oracle_wald(m: Minutes, alpha: float = 0.01, beta: float = 0.05) -> np.ndarray:
    """Wald's two-sided SPRT on `oracle_llr` (rollback at the upper boundary unless the lower came
    first): kept for comparison with the earlier reports; the benchmark uses `oracle`."""
    upper, lower = sprt_bounds(alpha, beta)
    llr = np.cumsum(oracle_llr(m), axis=1)
    up, down = _first(llr >= upper), _first(llr <= lower)
    hit = np.where((up >= 0) & ((down < 0) | (up < down)), up, -1)
    return _decision_time(m, hit)


def oracle_analytic_minutes(s: Scenario, alpha: float = 0.01, beta: float | None = None,
                            horizon: int | None = None, latency_warmup_min: int = 0) -> float | None:
    """Minutes until the oracle's expected information reaches its boundary, from nominal
    parameters (no nuisance) under the scenario's schedule; None if not within the horizon. The
    boundary is log(1/alpha) (the one-sided `oracle`); with `beta`, Wald's N*1 numerator."""
    need = math.log(1.0 / alpha) if beta is None else expected_llr_to_detect(alpha, beta)
    edges = s.buckets.edges
    got = 0.0
    for t in range(1, (horizon or s.minutes) + 1):
        w = float(s.canary_fraction(t))
        if w >= 1.0:
            break
        rate = 60.0 * s.rps
        r = float(s.error_ratio.at(t))
        p_b, p_c = s.p0, min(s.p0 * r, 0.95)
        errors = rate * (w * p_c + (1 - w) * p_b)
        q1 = w * p_c / (w * p_c + (1 - w) * p_b)
        got += errors * float(kl_bernoulli(q1, w))
        pb = lognormal_bucket_probs(edges, np.array([math.log(s.latency_median_ms)]), s.latency_sigma)[0]
        scale = float(s.canary_latency_scale.at(t)) * (s.cold_start_factor if t <= s.cold_start_minutes else 1.0)
        pc = lognormal_bucket_probs(edges, np.array([math.log(s.latency_median_ms * scale)]), s.latency_sigma)[0]
        tail = float(s.canary_tail_fraction.at(t))
        if tail > 0:
            slow = lognormal_bucket_probs(edges, np.array([math.log(s.tail_median_ms)]), s.tail_sigma)[0]
            pc = (1 - tail) * pc + tail * slow
        mix = w * pc + (1 - w) * pb
        with np.errstate(divide="ignore", invalid="ignore"):
            q1k = np.where(mix > 0, w * pc / mix, w)
        if t > latency_warmup_min:
            got += float((rate * mix * kl_bernoulli(q1k, w)).sum())
        if got >= need:
            return float(t)
    return None


# --- M2: Kayenta-style --------------------------------------------------------------------------
KAYENTA_METRICS = [
    kayenta.MetricSpec("error_rate", "errors", critical=True),
    kayenta.MetricSpec("latency_mean", "latency"),
    kayenta.MetricSpec("latency_p99", "latency"),
]


def kayenta_series(m: Minutes, edges: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-minute (canary, baseline) series with Kayenta's NaN strategies applied: error rate with
    `replace` (missing -> 0), latency mean (ALIGN_MEAN) and p99 with `remove` (left NaN)."""
    mids = np.sqrt(np.concatenate([[edges[0]], edges]) * np.concatenate([edges, [edges[-1]]]))
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for arm in ("c", "b"):
            present = getattr(m, f"present_{arm}")
            n = getattr(m, f"n_{arm}").astype(float)
            rate = np.where(present & (n > 0), getattr(m, f"e_{arm}") / n, 0.0)
            lat = getattr(m, f"lat_{arm}").astype(float)
            mean = np.where(present & (n > 0), (lat * mids).sum(-1) / n, np.nan)
            p99 = np.where(present, hist_quantile(lat, edges, 0.99), np.nan)
            out.setdefault("error_rate", []).append(rate)
            out.setdefault("latency_mean", []).append(mean)
            out.setdefault("latency_p99", []).append(p99)
    return {k: (v[0], v[1]) for k, v in out.items()}


def kayenta_score(series: dict[str, tuple[np.ndarray, np.ndarray]], lo: int, hi: int,
                  allowed_increase: float, rng: np.random.Generator) -> np.ndarray:
    classes = {name: kayenta.classify(c[:, lo:hi], b[:, lo:hi], allowed_increase, rng)
               for name, (c, b) in series.items()}
    return kayenta.score(classes, KAYENTA_METRICS)


def kayenta_runs(m: Minutes, s: Scenario, looks: list[tuple[int, int]], rng: np.random.Generator,
                 allowed_increase: float = 1.0) -> np.ndarray:
    """Rollback time per run: the first look (lo, hi) scoring below marginal, or the last look
    scoring below pass (Spinnaker: any run under marginal fails; the last must exceed pass)."""
    series = kayenta_series(m, s.buckets.edges)
    index = np.full(m.runs, -1)
    for number, (lo, hi) in enumerate(looks):
        active = np.flatnonzero(index < 0)  # a rolled-back canary is not judged again
        if active.size == 0:
            break
        subset = {name: (c[active], b[active]) for name, (c, b) in series.items()}
        score = kayenta_score(subset, lo, hi, allowed_increase, rng)
        fail = score < kayenta.MARGINAL
        if number == len(looks) - 1:
            fail |= score < kayenta.PASS
        index[active[fail]] = hi - 1
    return _decision_time(m, index)


def kayenta_per_phase(m: Minutes, s: Scenario, rng: np.random.Generator) -> np.ndarray:
    ends = [e for e in s.phase_ends() if e <= m.minutes]
    starts = [0] + ends[:-1]
    return kayenta_runs(m, s, list(zip(starts, ends)), rng)


def kayenta_every_minute(m: Minutes, s: Scenario, rng: np.random.Generator, window: int = 60,
                         first: int = 3) -> np.ndarray:
    horizon = min(m.minutes, max(s.phase_ends(), default=m.minutes))
    looks = [(max(0, t - window), t) for t in range(first, horizon + 1)]
    return kayenta_runs(m, s, looks, rng)


# --- M3: Flagger-style --------------------------------------------------------------------------
def flagger(m: Minutes, s: Scenario, min_success: float = 0.99, max_p99_ms: float = 500.0,
            threshold: int = 5) -> np.ndarray:
    """Canary alone, every minute: a check fails when the success rate (non-5xx) is under 99%, the
    interpolated p99 is over 500 ms, or there is no data (Flagger's "no values found"); roll back
    when failed checks reach `threshold` (cumulative)."""
    horizon = min(m.minutes, max(s.phase_ends(), default=m.minutes))
    n = m.n_c[:, :horizon].astype(float)
    present = m.present_c[:, :horizon] & (n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        success = 1.0 - m.e_c[:, :horizon] / n
    p99 = hist_quantile(m.lat_c[:, :horizon], s.buckets.edges, 0.99)
    failed = ~present | (success < min_success) | (p99 > max_p99_ms)
    return _decision_time(m, _first(np.cumsum(failed, axis=1) >= threshold))


# --- M4: naive peeking --------------------------------------------------------------------------
def _z_two_proportions(x_c: np.ndarray, n_c: np.ndarray, x_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (x_c + x_b) / (n_c + n_b)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
        z = (x_c / n_c - x_b / n_b) / se
    return np.where(np.isfinite(z), z, 0.0)


def naive(m: Minutes, s: Scenario, alpha: float = 0.05) -> np.ndarray:
    """Every minute, a one-sided two-proportion z-test at `alpha` on the cumulative 5xx share and on
    the cumulative share of requests slower than 500 ms; roll back on the first rejection."""
    from scipy.stats import norm

    horizon = min(m.minutes, max(s.phase_ends(), default=m.minutes))
    crit = float(norm.ppf(1 - alpha))
    pc, pb = m.present_c[:, :horizon], m.present_b[:, :horizon]
    n_c = np.cumsum(np.where(pc, m.n_c[:, :horizon], 0), axis=1).astype(float)
    n_b = np.cumsum(np.where(pb, m.n_b[:, :horizon], 0), axis=1).astype(float)
    e_c = np.cumsum(np.where(pc, m.e_c[:, :horizon], 0), axis=1)
    e_b = np.cumsum(np.where(pb, m.e_b[:, :horizon], 0), axis=1)
    slow = slow_mask(s.buckets.edges)
    s_c = np.cumsum(np.where(pc, m.lat_c[:, :horizon][..., slow].sum(-1), 0), axis=1)
    s_b = np.cumsum(np.where(pb, m.lat_b[:, :horizon][..., slow].sum(-1), 0), axis=1)
    reject = (_z_two_proportions(e_c, n_c, e_b, n_b) > crit) | (_z_two_proportions(s_c, n_c, s_b, n_b) > crit)
    return _decision_time(m, _first(reject))


# --- harm ---------------------------------------------------------------------------------------
def harm(m: Minutes, s: Scenario, rollback_at: np.ndarray) -> np.ndarray:
    """Expected excess bad canary requests (5xx, or slower than 500 ms) served until the rollback
    (or the end of the rollout), from the true per-minute probabilities."""
    slow = slow_mask(s.buckets.edges)
    excess_err = np.clip(m.p_c - m.p_b, 0.0, None)
    excess_slow = np.clip(m.probs_c[..., slow].sum(-1) - m.probs_b[..., slow].sum(-1), 0.0, None)
    per_minute = m.n_c * (excess_err + excess_slow)
    minutes = np.arange(1, m.minutes + 1)[None, :]
    stop = np.where(np.isnan(rollback_at), m.minutes, rollback_at)[:, None]
    return np.where(minutes <= stop, per_minute, 0.0).sum(axis=1)

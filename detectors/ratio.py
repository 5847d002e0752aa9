"""Anytime-valid test of a canary/baseline rate ratio on per-minute counts (reference §2a).

Called by `daemon.core.evaluation` for 5xx (canary errors vs baseline errors) and for slow
requests (latency exceedances), and by the benchmark on arrays of runs.

Model: in minute t the canary served n_c requests and the baseline n_b, with c and b events
(5xx, or requests above a latency threshold). If the per-request event rate of the canary is r
times the baseline's, then given the minute's events m = c + b, the canary's share is
Binomial(m, q_t(r)) with

    pi_t = n_c / (n_c + n_b),   q_t(r) = r pi_t / (r pi_t + 1 - pi_t).

The base rate cancels, so it may drift freely, and pi_t is recomputed every minute, so phases
with different traffic splits just change pi_t. For H0: r <= r0 the e-process is a mixture over
onset candidates k (weights w_k summing to one; candidate k starts at informative minute start_k)
of capped mixtures over the alternatives r_j > r0:

    E_T = sum_k w_k prod_{t >= start_k} min(e^C, sum_j p_{k,j,t} LR_t(r_j)),
    LR_t(r) = (q_t(r)/q_t(r0))^c_t ((1-q_t(r))/(1-q_t(r0)))^b_t,

where p_{k,j,t} is the posterior weight of r_j after candidate k's earlier minutes (equal prior),
so without the cap each candidate's product is exactly the equal-weight mixture of the
alternatives' likelihood ratios. Each factor has conditional expectation <= 1 under H0 (monotone
likelihood ratio in r; sampling without replacement is dominated in convex order by the binomial,
Hoeffding 1963; predictable weights; min(e^C, x) <= x), so each candidate is a test
supermartingale and so is their fixed-weight average. The cap C is on the *mixture's* minute
factor, so one burst minute (a crash loop, a retry storm) cannot roll back on its own, while two
saturated minutes can; the onset candidates (an e-detector, Shin, Ramdas and Rinaldo) let a
regression that starts late be judged from near its onset. Optional tempering (LR^(1/phi)) is for
minute-level overdispersion (`detectors.dispersion`). Exact for rare events at any r0, and at any event rate for r0 = 1; for
rates of tens of percent and r0 > 1 the odds ratio exceeds the rate ratio and the test is slightly
anti-conservative (documented).

The confidence bounds shown in a decision come from the same capped, tempered likelihood ratios,
from the rollout's start, capped per alternative (the cheaper v2 construction; each capped
alternative's product is a test supermartingale, so the mixture is valid): for each r on a log
grid, the mixture for "ratio <= r" (alternatives r x the test's factors) gives the lower bound, the mirror image ("ratio >= r", alternatives r /
factors) the upper bound, each at the rollout-start candidate's threshold. So a decision record
cannot say FAIL and show a lower bound under r0, or PASS and show one above it (the bounds are
clamped to the test's verdict at r0, which only grid resolution could contradict).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors.dispersion import temper

# Alternatives as multiples of r0, equal weights. Concentrated where regressions that matter are
# (x1.5 to x50): each costs log(7) = 1.9 nats over an oracle that knew the size, against log(10)
# for the earlier 1.25..200 grid, and x200 (an outage) is left to the level test's breaker.
ALT_FACTORS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 8.0, 15.0, 50.0)
# Grid for the confidence sequence: 1/256 .. 256 in steps of 2^(1/4).
CS_GRID: np.ndarray = 2.0 ** (np.arange(-32, 33) / 4.0)


@dataclass(frozen=True, slots=True)
class RatioSpec:
    """Everything fixed before the first minute: r0, its alternatives, the per-minute cap, the onset
    schedule and the CS grid."""

    r0: float
    alternatives: np.ndarray  # r_j > r0
    grid: np.ndarray  # CS grid (sorted)
    cap_log: float  # per-minute cap on each start's mixture log likelihood ratio (inf: none)
    all_r: np.ndarray  # [alternatives, r0, grid, grid x factors, grid / factors]
    log_all: np.ndarray  # log of all_r
    start_at: np.ndarray  # informative-minute index at which each onset candidate starts (0 first)
    log_w: np.ndarray  # log weight of each onset candidate (the weights sum to one)

    @staticmethod
    def make(r0: float, cap_log: float = math.inf, factors: tuple[float, ...] = ALT_FACTORS,
             onset_every: int = 0, onset_starts: int = 1, first_weight: float = 1.0) -> "RatioSpec":
        """`onset_starts` candidate onsets, one every `onset_every` informative minutes: the first
        (the rollout's start) weighs `first_weight`, the others share the rest equally."""
        if not (r0 > 0 and math.isfinite(r0)):
            raise ValueError("r0 must be a positive ratio")
        if onset_starts < 1 or (onset_starts > 1 and (onset_every < 1 or not 0.0 < first_weight < 1.0)):
            raise ValueError("an onset mixture needs onset_every >= 1 and 0 < first_weight < 1")
        fs = np.asarray(factors, dtype=float)
        if fs.size == 0 or np.any(fs <= 1.0):
            raise ValueError("alternative factors must be > 1")
        alternatives = r0 * fs
        up = (CS_GRID[:, None] * fs[None, :]).ravel()
        down = (CS_GRID[:, None] / fs[None, :]).ravel()
        all_r = np.concatenate((alternatives, [r0], CS_GRID, up, down))
        if onset_starts == 1:
            weights = np.ones(1)
        else:
            weights = np.concatenate(([first_weight], np.full(onset_starts - 1, (1.0 - first_weight)
                                                               / (onset_starts - 1))))
        start_at = np.arange(onset_starts) * max(onset_every, 0)
        log_w = np.log(weights)
        log_all = np.log(all_r)
        for array in (alternatives, all_r, log_all, start_at, log_w):
            array.setflags(write=False)
        return RatioSpec(float(r0), alternatives, CS_GRID, float(cap_log), all_r, log_all, start_at, log_w)

    @property
    def first_weight(self) -> float:
        return float(math.exp(self.log_w[0]))

    def split(self, terms: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
        """Per-r log-likelihood terms -> (alternatives, r0, grid, grid x factors, grid / factors)."""
        j, g = len(self.alternatives), len(self.grid)
        return (terms[:j], float(terms[j]), terms[j + 1:j + 1 + g], terms[j + 1 + g:j + 1 + g + g * j].reshape(g, j),
                terms[j + 1 + g + g * j:].reshape(g, j))


def cap_for(alpha: float, share: float, first_weight: float = 1.0) -> float:
    """The per-minute cap: `share` of the log threshold the rollout-start process must reach,
    log(1 / (alpha * first_weight)). With share 1/2 one minute can never roll back on its own and
    two saturated minutes always can."""
    return share * math.log(1.0 / (alpha * first_weight))


def capped_mixture_step(sums: np.ndarray, capped: np.ndarray, llr: np.ndarray, cap: float,
                        active: np.ndarray | bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One minute of capped mixtures, row by row (last axis: the alternatives, equal prior).

    Row i's factor is the Bayes mixture of this minute's likelihood ratios under the posterior of
    the earlier minutes (a predictable weighting, so the factor has conditional expectation <= 1
    under the null), capped at e^cap: log f = min(cap, logsumexp(sums - lse(sums) + llr)). Without
    a cap the product of factors is exactly mean_j exp(sum_t llr_j). Returns (sums + llr, capped
    + log f) for active rows; inactive rows are unchanged."""
    top = sums.max(axis=-1, keepdims=True)
    post = sums - (top + np.log(np.exp(sums - top).sum(axis=-1, keepdims=True)))
    x = post + llr
    top_x = x.max(axis=-1, keepdims=True)
    inc = (top_x + np.log(np.exp(x - top_x).sum(axis=-1, keepdims=True)))[..., 0]
    if cap < math.inf:
        inc = np.minimum(inc, cap)
    active = np.asarray(active)
    return (np.where(active[..., None], sums + llr, sums), np.where(active, capped + inc, capped))


@dataclass(frozen=True, slots=True)
class RatioState:
    """Immutable running state; arrays are never mutated (every update builds new ones)."""

    sums: np.ndarray  # (starts, alternatives): tempered log LR summed since each onset candidate
    capped: np.ndarray  # (starts,): log of each onset candidate's capped mixture e-process
    cs_up: np.ndarray  # (grid, factors): sum_t min(cap, tempered log LR_t(r x f vs r)), "ratio <= r"
    cs_up_e: np.ndarray  # (grid,): unused (kept zero)
    cs_down: np.ndarray  # (grid, factors): sum_t min(cap, tempered log LR_t(r / f vs r)), "ratio >= r"
    cs_down_e: np.ndarray  # (grid,): unused (kept zero)
    log_e: float  # log E_T = log sum_k w_k E_T^(k), the mixture over onset candidates
    max_log_e: float  # running max of log E (anytime p-value)
    canary_events: float
    baseline_events: float
    canary_requests: float
    baseline_requests: float
    minutes: int  # minutes that carried information (both arms served, at least one event)

    @staticmethod
    def empty(spec: RatioSpec) -> "RatioState":
        shape = (len(spec.grid), len(spec.alternatives))
        starts = len(spec.start_at)
        return RatioState(np.zeros((starts, len(spec.alternatives))), np.zeros(starts), np.zeros(shape),
                          np.zeros(len(spec.grid)), np.zeros(shape), np.zeros(len(spec.grid)), 0.0, 0.0,
                          0.0, 0.0, 0.0, 0.0, 0)

    @property
    def log_e_alt(self) -> np.ndarray:
        """Per alternative, the tempered log likelihood ratio since the rollout's start (uncapped)."""
        return self.sums[0]

    # --- per minute ---------------------------------------------------------------------------
    def update(self, spec: RatioSpec, canary_events: float, canary_requests: float,
               baseline_events: float, baseline_requests: float, share_variance: float = 0.0) -> "RatioState":
        """Add one minute. `share_variance` (s^2 of the canary share's per-minute log-odds, estimated
        from earlier minutes only) tempers the minute's likelihood ratios to LR^(1/phi), phi =
        1 + (m - 1) q0 (1 - q0) s^2 (`detectors.dispersion.temper`); s^2 = 0 is the plain test."""
        c, b = float(canary_events), float(baseline_events)
        n_c, n_b = float(canary_requests), float(baseline_requests)
        totals = (self.canary_events + c, self.baseline_events + b,
                  self.canary_requests + n_c, self.baseline_requests + n_b)
        if n_c <= 0 or n_b <= 0 or c + b <= 0:  # no information about the ratio this minute
            return RatioState(self.sums, self.capped, self.cs_up, self.cs_up_e, self.cs_down, self.cs_down_e,
                              self.log_e, self.max_log_e, *totals, self.minutes)
        pi = n_c / (n_c + n_b)
        # log q(r) = log r + log pi - log(r pi + 1 - pi); log(1 - q(r)) = log(1 - pi) - log(r pi + 1 - pi):
        # the log-likelihood of (c, b) is c log r - (c + b) log(r pi + 1 - pi) + terms free of r.
        # One log over every r the test and the bounds need (this is the per-minute hot path).
        terms = c * spec.log_all - (c + b) * np.log(spec.all_r * pi + (1.0 - pi))
        alt, at_r0, grid, up, down = spec.split(terms)
        llr, llr_up, llr_down = alt - at_r0, up - grid[:, None], down - grid[:, None]
        if share_variance > 0:
            q0 = spec.r0 * pi / (spec.r0 * pi + 1.0 - pi)
            phi = temper(share_variance, c + b, q0)
            llr, llr_up, llr_down = llr / phi, llr_up / phi, llr_down / phi
        active = spec.start_at <= self.minutes
        sums, capped = capped_mixture_step(self.sums, self.capped, llr[None, :], spec.cap_log, active)
        # the bounds cap each alternative (cheaper than a capped mixture per grid row, and as
        # conservative: each capped alternative's product is itself a test supermartingale)
        cs_up = self.cs_up + np.minimum(llr_up, spec.cap_log)
        cs_down = self.cs_down + np.minimum(llr_down, spec.cap_log)
        cs_up_e, cs_down_e = self.cs_up_e, self.cs_down_e
        log_e = _logsumexp(spec.log_w + capped)
        return RatioState(sums, capped, cs_up, cs_up_e, cs_down, cs_down_e, log_e,
                          max(self.max_log_e, log_e), *totals, self.minutes + 1)

    # --- read-outs ----------------------------------------------------------------------------
    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))

    @property
    def p_value(self) -> float:
        """Anytime-valid p-value: min(1, 1 / max_t E_t)."""
        return min(1.0, math.exp(-self.max_log_e))

    def rejects(self, alpha: float) -> bool:
        return self.log_e >= math.log(1.0 / alpha)

    def observed_ratio(self) -> float | None:
        """Point estimate (for people, never for decisions): canary rate / baseline rate."""
        if self.canary_requests <= 0 or self.baseline_requests <= 0:
            return None
        rate_b = self.baseline_events / self.baseline_requests
        rate_c = self.canary_events / self.canary_requests
        if rate_b <= 0:
            return math.inf if rate_c > 0 else None
        return rate_c / rate_b

    def confidence_sequence(self, spec: RatioSpec, alpha: float) -> tuple[float, float]:
        """Time-uniform bounds for r at the grid's resolution (2^(1/4)): each side one-sided at
        `alpha`, from the same capped mixture as the test (from the rollout's start, at the start
        process's threshold), and clamped to the test's verdict at r0: lower > r0 exactly when
        `rejects(alpha)`."""
        if self.minutes == 0:
            return 0.0, math.inf
        level = math.log(1.0 / alpha)
        up = _logmeanexp_rows(self.cs_up) + spec.log_w[0] >= level  # "ratio <= grid[i]" rejected
        down = _logmeanexp_rows(self.cs_down) + spec.log_w[0] >= level  # "ratio >= grid[i]" rejected
        grid = spec.grid
        lo_run = int(np.argmin(up)) if not up.all() else len(grid)  # rejected from the bottom
        lower = 0.0 if lo_run == 0 else float(grid[lo_run - 1])
        hi_run = int(np.argmin(down[::-1])) if not down.all() else len(grid)
        upper = math.inf if hi_run == 0 else float(grid[len(grid) - hi_run])
        if self.rejects(alpha):
            lower = max(lower, spec.r0)
        elif lower >= spec.r0:
            below = grid[grid < spec.r0]
            lower = float(below[-1]) if below.size else 0.0
        return lower, max(upper, lower)


def log_e_process_array(spec: RatioSpec, c: np.ndarray, n_c: np.ndarray, b: np.ndarray,
                        n_b: np.ndarray, phi: np.ndarray | float = 1.0,
                        share_variance: np.ndarray | float | None = None) -> np.ndarray:
    """Vectorised: log E_t for runs x minutes arrays (shape (..., T)); returns the same shape, the
    e-process after each minute, computed exactly as `RatioState.update` does (onset candidates,
    capped mixtures; with `share_variance`, phi comes from it as in `update`). Minutes without
    information contribute nothing."""
    c, n_c, b, n_b = (np.asarray(x, dtype=float) for x in (c, n_c, b, n_b))
    phi = np.broadcast_to(np.asarray(phi, dtype=float), c.shape)
    informative = (n_c > 0) & (n_b > 0) & (c + b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.where(informative, n_c / np.where(informative, n_c + n_b, 1.0), 0.5)
    alts = spec.alternatives
    q0 = (spec.r0 * pi / (spec.r0 * pi + 1.0 - pi))[..., None]
    qa = alts * pi[..., None] / (alts * pi[..., None] + 1.0 - pi[..., None])
    if share_variance is not None:
        s2 = np.broadcast_to(np.asarray(share_variance, dtype=float), c.shape)
        phi = np.where(s2 > 0, 1.0 + np.maximum(c + b - 1.0, 0.0) * q0[..., 0] * (1.0 - q0[..., 0]) * s2, 1.0)
    llr = (c[..., None] * np.log(qa / q0) + b[..., None] * np.log((1.0 - qa) / (1.0 - q0))) / phi[..., None]
    lead = c.shape[:-1]
    starts, j = len(spec.start_at), len(alts)
    sums = np.zeros(lead + (starts, j))
    capped = np.zeros(lead + (starts,))
    seen = np.zeros(lead, dtype=int)
    out = np.zeros(c.shape)
    log_e = np.zeros(lead)
    for t in range(c.shape[-1]):
        info = informative[..., t]
        active = (spec.start_at <= seen[..., None]) & info[..., None]
        sums, capped = capped_mixture_step(sums, capped, llr[..., t, None, :], spec.cap_log, active)
        seen = seen + info
        x = spec.log_w + capped
        top = x.max(axis=-1)
        log_e = top + np.log(np.exp(x - top[..., None]).sum(axis=-1))
        out[..., t] = log_e
    return out


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


def _logmeanexp_rows(values: np.ndarray) -> np.ndarray:
    top = values.max(axis=1)
    return top + np.log(np.exp(values - top[:, None]).mean(axis=1))

"""Scenario generator: shapes, determinism, rates against parameters, bucket layouts, events,
the closed-loop model and scenario files."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from daemon.core.events import Deploy, Metrics, Tick
from simulations.scenarios import (DEFAULT_START, Profile, ScenarioFileError, TrafficModel, catalogue, generate,
                                   get_scenario, load_scenario_file, scenario_from_file, simulate, to_events)
from simulations.scenario_file import parse_scenario_text

EXAMPLES = ["good-canary", "bad-canary", "slow-leak"]


def _dump(records):
    return [(r.minute, r.canary_percent, r.canary, r.baseline, r.canary_visible_at) for r in records]


def test_catalogue_covers_s0_to_s13():
    names = list(catalogue())
    for prefix in [f"S{i}-" for i in range(14)]:
        assert any(n.startswith(prefix) for n in names), prefix
    rates = [s.rps for s in catalogue().values()]
    assert min(rates) <= 0.2 and max(rates) >= 1000


def test_same_seed_same_output_and_different_seed_differs():
    a = generate("S2-aa-overdispersed", np.random.default_rng(7))
    b = generate("S2-aa-overdispersed", np.random.default_rng(7))
    c = generate("S2-aa-overdispersed", np.random.default_rng(8))
    assert _dump(a) == _dump(b)
    assert _dump(a) != _dump(c)


def test_records_follow_the_runbook_schedule_and_shapes():
    s = get_scenario("S0-aa-clean")
    records = generate(s, np.random.default_rng(1))
    assert len(records) == 40
    assert [r.canary_percent for r in records[:10]] == [5] * 10
    assert {r.canary_percent for r in records[10:25]} == {25}
    assert {r.canary_percent for r in records[25:40]} == {50}
    for r in records:
        assert r.end_time == DEFAULT_START + timedelta(minutes=r.minute)
        for m in (r.canary, r.baseline):
            assert isinstance(m, Metrics) and m.interval_s == 60
            assert sum(m.latency.counts) == m.requests  # every request lands in one bucket
            assert dict(m.requests_by_class).keys() == {"2xx", "4xx", "5xx"}
            assert all(c >= 0 for _, c in m.requests_by_class)
    share = sum(r.canary.requests for r in records[:10]) / sum(r.canary.requests + r.baseline.requests
                                                              for r in records[:10])
    assert 0.04 < share < 0.06


def test_bucket_layout_is_valid_cloud_monitoring_exponential():
    for growth in (1.4, 2.0):
        s = get_scenario("S0-aa-clean").with_(buckets=get_scenario("S0-aa-clean").buckets.__class__(40, growth, 1.0))
        m = generate(s, np.random.default_rng(2), minutes=2)[0].baseline
        assert m.latency.layout == "exponential"
        assert len(m.latency.edges) == 41 and len(m.latency.counts) == 42
        assert m.latency.edges[0] == 1.0
        assert np.allclose(np.diff(np.log(m.latency.edges)), np.log(growth))


def test_error_and_traffic_rates_match_parameters():
    s = get_scenario("S4-errors-x5").with_(error_nuisance_sd=0.0, traffic_noise_sd=0.0)
    m = simulate(s, np.random.default_rng(3), runs=300)
    phase1 = slice(0, 10)
    expected_canary = 60 * s.rps * 0.05
    assert abs(m.n_c[:, phase1].mean() - expected_canary) < 0.02 * expected_canary
    p_c = m.e_c.sum() / m.n_c.sum()
    p_b = m.e_b.sum() / m.n_b.sum()
    assert abs(p_b - 0.001) < 0.0001
    assert abs(p_c - 0.005) < 0.0003
    assert abs(m.f_b.sum() / (m.n_b - m.e_b).sum() - s.p_4xx) < 0.001


def test_latency_quantiles_match_the_lognormal():
    s = get_scenario("S0-aa-clean").with_(latency_drift_sd=0.0)
    m = simulate(s, np.random.default_rng(4), runs=50)
    from simulations.baselines import hist_quantile
    merged = m.lat_b.sum(axis=(0, 1))
    p99 = float(hist_quantile(merged[None, :], s.buckets.edges, 0.99)[0])
    assert 370 < p99 < 430  # LogNormal(ln 100, 0.596): p99 = 400 ms
    tail = get_scenario("S6-latency-tail").with_(latency_drift_sd=0.0)
    mt = simulate(tail, np.random.default_rng(4), runs=50)
    p99_c = float(hist_quantile(mt.lat_c.sum(axis=(0, 1))[None, :], s.buckets.edges, 0.99)[0])
    assert 520 < p99_c < 700


def test_profiles_step_and_ramp():
    p = Profile.onset(1.0, 5.0, at=10, ramp_min=20)
    assert p.at(10) == 1.0 and p.at(20) == pytest.approx(3.0) and p.at(40) == 5.0
    q = Profile.onset(1.0, 2.0, at=5)
    assert q.at(5) == 1.0 and q.at(6) == 2.0


def test_missing_gap_and_zero_traffic_give_no_points():
    records = generate("S11-aa-missing", np.random.default_rng(5))
    gap = [r for r in records if 12 < r.minute <= 22]
    assert all(r.canary is None and r.baseline is None for r in gap)
    low = generate("S0-aa-clean-0.2rps", np.random.default_rng(5))
    assert any(r.canary is None for r in low)  # 0.6 canary requests a minute: empty minutes exist


def test_events_are_deploy_then_metrics_in_visibility_order():
    s = get_scenario("S11-late-errors")
    records = generate(s, np.random.default_rng(6))
    events = to_events(s, records, include_ticks=True)
    assert isinstance(events[0], Deploy) and events[0].revision == s.canary_revision
    visible = []
    for e in events[1:]:
        if isinstance(e, Metrics):
            rec = next(r for r in records if r.end_time == e.time)
            visible.append(rec.canary_visible_at if e.revision == s.canary_revision else rec.baseline_visible_at)
        else:
            assert isinstance(e, Tick)
    assert visible == sorted(visible)
    assert sum(isinstance(e, Metrics) for e in events) == sum((r.canary is not None) + (r.baseline is not None)
                                                               for r in records)


def test_closed_loop_counts_follow_the_requested_split():
    s = get_scenario("S0-aa-clean").with_(traffic_noise_sd=0.0)
    model = TrafficModel(s)
    rng = np.random.default_rng(9)
    canary, baseline = [], []
    for minute in range(1, 31):
        c, b = model.minute(DEFAULT_START + timedelta(minutes=minute), 20 if minute <= 15 else 100, rng)
        canary.append(c)
        baseline.append(b)
    share = sum(c.requests for c in canary[:15]) / sum(c.requests + b.requests for c, b in zip(canary[:15],
                                                                                               baseline[:15]))
    assert 0.18 < share < 0.22
    assert all(b is None for b in baseline[15:])  # at 100% the baseline serves nothing: no points
    assert all(c.revision == s.canary_revision for c in canary)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_scenario_files_load(name):
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "simulations" / "scenarios" / f"{name}.yaml"
    spec = load_scenario_file(path)
    s = scenario_from_file(spec)
    assert s.service == spec.service and s.minutes == 60
    records = generate(s, np.random.default_rng(spec.seed))
    assert len(records) == 60


def test_bad_canary_file_models_a_five_fold_error_rate():
    text = """
name: x
traffic: {rps: 100}
baseline: {revision: a, error_rate: 0.1%}
canary: {revision: b, error_rate: 0.5%}
"""
    s = scenario_from_file(parse_scenario_text(text))
    assert s.error_ratio.at(1) == pytest.approx(5.0) and s.kind == "errors" and s.onset_min == 0.0


@pytest.mark.parametrize("text, fragment", [
    ("name: x\ntraffic: {rps: 100}\nbaseline: {revision: a}\ncanary: {revision: b, colour: red}\n",
     ":4: canary.colour: Extra inputs are not permitted"),
    ("name: x\ntraffic: {rps: 100}\nbaseline: {revision: a, error_rate: 0.1}\ncanary: {revision: b}\n",
     "baseline.error_rate"),
    ("name: x\ntraffic: {rps: 100}\nbaseline: {revision: a}\ncanary: {revision: a}\n", "different revisions"),
    ("name: x\ntraffic: {rps: -1}\nbaseline: {revision: a}\ncanary: {revision: b}\n", "traffic.rps"),
    ("name: [unclosed\n", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
])
def test_scenario_file_errors_are_one_clear_line(text, fragment):
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario_text(text, "f.yaml")
    message = str(info.value)
    assert fragment in message and "\n" not in message and message.startswith("f.yaml")


def test_missing_scenario_file_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioFileError, match="cannot read"):
        load_scenario_file(tmp_path / "nope.yaml")

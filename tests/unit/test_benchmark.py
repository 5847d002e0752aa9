"""Benchmark smoke test: a tiny run writes results.json with every field, report.md and ttd.png."""
from __future__ import annotations

import json

import numpy as np
import pytest

from daemon.bootstrap import engine_factory
from simulations import benchmark
from simulations.scenario_model import catalogue

BENCHMARK = engine_factory("benchmark")
FIELDS = {"scenario", "method", "runs", "false_rollback_rate", "clopper_pearson_upper95", "detection_rate",
          "ttd_median_min", "ttd_p90_min", "oracle_ratio", "harm_requests"}


def test_tiny_benchmark_writes_valid_outputs(tmp_path):
    names = ["S0-aa-clean", "S4-errors-x20"]
    benchmark.main(["--out", str(tmp_path), "--runs", "3", "--workers", "1"] + sum((["--scenario", n] for n in names), []), build_engine=BENCHMARK)
    data = json.loads((tmp_path / "results.json").read_text())
    rows = data["rows"]
    assert len(rows) == len(names) * len(benchmark.METHODS)
    assert {(r["scenario"], r["method"]) for r in rows} == {(n, m) for n in names for m in benchmark.METHODS}
    for row in rows:
        assert FIELDS <= row.keys()
        assert row["runs"] == 3
        if row["scenario"] == "S0-aa-clean" and row["method"] != "oracle":
            assert 0.0 <= row["false_rollback_rate"] <= row["clopper_pearson_upper95"] <= 1.0
            assert row["detection_rate"] is None and row["ttd_median_min"] is None
        if row["scenario"] == "S4-errors-x20":
            assert row["false_rollback_rate"] is None
            assert 0.0 <= row["detection_rate"] <= 1.0
    oracle = next(r for r in rows if r["scenario"] == "S4-errors-x20" and r["method"] == "oracle")
    assert oracle["detection_rate"] > 0 and oracle["oracle_ratio"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "| S4-errors-x20 | kayenta |" in report
    assert (tmp_path / "ttd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunks_are_seeded_independently_of_workers():
    task = ("S4-errors-x5", 0, 50, 0)
    a = benchmark.run_chunk(task, build_engine=BENCHMARK)[2]["rollback_at"]
    b = benchmark.run_chunk(task, build_engine=BENCHMARK)[2]["rollback_at"]
    for method in a:
        assert np.array_equal(a[method], b[method], equal_nan=True)


def test_plan_sizes():
    full = benchmark.Plan.make(quick=False, runs=None)
    assert full.runs_aa >= 10_000 and full.rollbackd_aa >= 10_000
    tasks = benchmark.tasks_for(["S0-aa-clean"], full)
    assert sum(t[2] for t in tasks) == 10_000 and sum(t[3] for t in tasks) == 10_000


def test_unknown_scenario_is_a_clear_cli_error(capsys):
    with pytest.raises(SystemExit) as info:
        benchmark.main(["--out", "x", "--scenario", "S99"], build_engine=BENCHMARK)
    assert info.value.code == 2
    assert "unknown scenario 'S99'" in capsys.readouterr().err
    assert "S0-aa-clean" in catalogue()

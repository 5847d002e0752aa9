"""Smoke test of the soak benchmark (`benchmarks/soak.py`) at tiny scale: 20 services for ~15 wall
seconds at 60x on the Pub/Sub emulator, the daemon in a subprocess.

Checks the machinery, not the figures (timings belong in the benchmark's output, never in asserts):
memory samples were taken from the daemon's process, every service got a canary deployed, every
published message was handled by the daemon (its journal has an input record for each), lags were
read from the journal, and the report prints a PASS/FAIL line per criterion.
"""
from __future__ import annotations

from benchmarks.soak import SoakConfig, analyse, report, run


def test_soak_machinery_at_tiny_scale(pubsub_emulator: str) -> None:
    config = SoakConfig(services=20, minutes=0.25, speed=60.0, phase_minutes=2, sample_s=1.0, drain_s=90.0)
    result = run(config)
    obs = result["obs"]

    assert len(obs.rss) >= 5 and all(rss > 50_000 for _, rss in obs.rss)  # kB: a Python daemon's own memory
    assert result["publish_failed"] == 0 and result["feeder_errors"] == []
    assert result["published"]["deploy"] >= config.services  # the ramp deployed a canary everywhere
    assert result["published"]["metrics"] > config.services
    published = sum(result["published"].values())
    assert result["drain_s"] is not None and len(obs.inputs) >= published, \
        f"{published} published, {len(obs.inputs)} handled"
    assert result["handle_errors"] == 0 and result["error_lines"] == 0
    # Each metrics message is journaled once: as metrics, or as ignored/rejected (on a loaded machine
    # some arrive past the late-data grace and are rejected, which is the daemon doing its job).
    handled_metrics = sum(obs.records.get(kind, 0) for kind in ("metrics", "ignored", "rejected"))
    assert handled_metrics >= result["published"]["metrics"], obs.records
    assert len(obs.lags) == obs.records["metrics"] and obs.tick_lags
    assert obs.decisions.get("promote", 0) >= config.services  # each canary at least went to 5%

    figures = analyse(result)
    lines = report(result, figures, (0.0, 0.0))
    for criterion in ("memory flat", "lag bounded", "sustained"):
        verdicts = [line for line in lines if line.startswith((f"PASS {criterion}:", f"FAIL {criterion}:"))]
        assert len(verdicts) == 1, criterion

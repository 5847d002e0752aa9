"""Soak benchmark (issue 5, item 9): 1,000 services' metric events through the emulator for 10 minutes
at sandbox speed; the live daemon's memory stays flat and its event lag stays bounded.

Method
- The production daemon (`run_live`, metrics_mode=pubsub, the real google-cloud clients) runs in a
  subprocess (`live_harness.LiveProcess`) on a virtual clock shared with this process, so the
  memory sampled (VmRSS from /proc/PID/status) is the daemon's own. Cloud Run, Monitoring and
  Logging are the in-process gRPC fakes; Pub/Sub is the real emulator.
- Every service is managed and always in a rollout. The first canaries are deployed over the first
  phase (a ramp, so rollouts do not all move in step); whenever a rollout ends (completed, rolled
  back, halted, superseded) a fresh canary revision is deployed at 0% and its ReplaceService audit
  entry published, as CI would. Redeploying rather than one very long rollout keeps the whole life
  cycle in the loop (deploy resolution, traffic changes, terminal states): state kept by a finished
  rollout would show up as memory growth. The soak policy is the runbook schedule (5/25/50/100%)
  with `--phase-minutes` phases and rate limits raised for 1,000 services.
- Every virtual minute `SoakFeeder` publishes one native `metrics` event per serving revision
  following the Cloud Run fake's current split: about 2 events per service per virtual minute, i.e.
  ~2,000 events per wall second for 1,000 services at 60x, ordering key = service as production
  publishes. They go out as plain Publish calls of 500 messages each (in order, so per-key order
  holds): measured on the emulator, the PublisherClient's own batching costs ~0.9 ms of CPU per
  message with 1,000 ordering keys (~0.13 ms without keys), so at 2,000 messages/s it alone would
  need two cores and the soak would measure this process; the direct calls cost ~0.03 ms.
- Lag is read from the daemon's journal as it is written (tailed across rotation): each input
  record carries the daemon's `received_at`. Pipeline lag = received_at minus the moment this
  process began publishing the event's minute (Pub/Sub + queueing + the daemon's handling); event
  lag = received_at minus the event's time, the end of its minute (what rollbackd_event_lag_seconds
  measures; it adds how late this process itself was in publishing, shown as "feeder late"). Tick
  lag = how late the once-a-minute evaluation of every rollout ran: the virtual time at which this
  process reads a tick record minus the tick's time (over-estimated by up to one poll, POLL_S x
  speed). All in virtual seconds (÷ speed = wall seconds), per time window, so growth is visible.
- Warm-up is the first `--warmup` share of the run (default 20%: the ramp plus the first rollouts).

Criteria (one PASS/FAIL line each; the exit code is 0 unless `--strict`):
- memory: every RSS sample after warm-up within ±10% of their mean;
- lag bounded: p99 pipeline lag in every post-warm-up window below the policy's late_data_grace
  (180 virtual s: an event later than that misses its minute's evaluation), and the last window's
  p99 not above the first post-warm-up window's by more than 50% + one tick (60 virtual s);
- sustained: when publishing stopped the backlog (published, not yet handled) was at most two
  virtual minutes' worth of messages, and it drained within `--drain` wall seconds. When it fails,
  the rate the daemon did handle is printed with the speed (or number of services) that would
  match it: run that setting too, and report both.

    python -m benchmarks.soak [--services 1000] [--minutes 10] [--speed 60] [--phase-minutes 30]
    python -m benchmarks.soak --quick          # 200 services, 2 minutes, 5-minute phases

Uses PUBSUB_EMULATOR_HOST when set, otherwise starts the emulator. Figures go in the README.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.soak_world import JournalTail, SoakFeeder, soak_policy
from daemon.clock import VirtualClock
from daemon.core.commands import ANNOTATION_PREFIX
from daemon.core.timefmt import parse_rfc3339
from tests.integration.live_harness import (START, Fakes, LiveProcess, Publisher, SharedClock, Topics, live_settings,
                                            running_emulator, scrape, write_config)

POLL_S = 0.25


@dataclass
class SoakConfig:
    services: int = 1000
    minutes: float = 10.0  # wall minutes
    speed: float = 60.0  # virtual seconds per wall second (the sandbox default)
    phase_minutes: int = 30  # virtual minutes per gated phase
    rps: float = 10.0  # requests per second per service (5% canary: ~30 requests a minute)
    warmup: float = 0.2
    windows: int = 4
    sample_s: float = 5.0
    drain_s: float = 120.0
    ordered: bool = True  # ordering key = service on every message (False: no key)


@dataclass
class Observations:
    """What the daemon did, each item stamped with wall seconds since the soak began."""

    lags: list[tuple[float, float, float]] = field(default_factory=list)  # (wall s, lag virtual s, minute end)
    tick_lags: list[tuple[float, float]] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (wall s, VmRSS kB)
    hwm_kb: int = 0
    inputs: list[float] = field(default_factory=list)  # wall s of each message the daemon handled
    decisions: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)


def read_rss(pid: int) -> tuple[int, int]:
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key = line.split(":")[0]
            if key in values:
                values[key] = int(line.split()[1])
    return values["VmRSS"], values["VmHWM"]


def absorb(lines: list[str], obs: Observations, clock: SharedClock, t0_virtual: datetime, speed: float) -> None:
    """Fold journal lines into `obs`: metrics lag by handling time, tick lag, decisions by action."""
    now = clock.now()
    for line in lines:
        if not line:
            continue
        handled_at = re.search(r'"received_at":"([^"]+)"', line)  # an input record: one per message
        if handled_at:
            obs.inputs.append((parse_rfc3339(handled_at.group(1)) - t0_virtual).total_seconds() / speed)
        kind = "metrics" if '"type":"metrics"' in line else "tick" if line.endswith('"type":"tick"}') else None
        if kind == "tick":
            at = parse_rfc3339(json.loads(line)["time"])
            obs.tick_lags.append(((now - t0_virtual).total_seconds() / speed, (now - at).total_seconds()))
        elif kind == "metrics" and '"received_at"' in line:
            record = json.loads(line)
            received = parse_rfc3339(record["received_at"])
            at = parse_rfc3339(record["time"])
            obs.lags.append(((received - t0_virtual).total_seconds() / speed, (received - at).total_seconds(),
                             at.timestamp()))
        elif '"type":"decision"' in line:
            action = json.loads(line).get("action", "?")
            obs.decisions[action] = obs.decisions.get(action, 0) + 1
            kind = "decision"
        else:
            found = re.findall(r'"type":"([a-z-]+)"', line)  # keys are sorted: the top level's is last
            kind = found[-1] if found else "other"
        obs.records[kind] = obs.records.get(kind, 0) + 1


# --- the run --------------------------------------------------------------------------------------------
def run(cfg: SoakConfig, progress: Any = None) -> dict[str, Any]:
    """One soak; returns the raw observations and counters (`analyse` turns them into figures)."""
    say = progress or (lambda text: None)
    names = [f"soak-{i:04d}" for i in range(cfg.services)]
    with Fakes(VirtualClock(START)) as fakes, tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for name in names:
            fakes.add_managed_service(name, f"{name}-00001-base")
        topics = Topics.create("soak")
        policy = Path(tmp) / "soak-policy.yaml"
        policy.write_text(soak_policy(cfg.phase_minutes), encoding="utf-8")
        journal = Path(tmp) / "journal.jsonl"
        settings = live_settings(fakes, topics, journal, policy=str(policy), metrics_mode="pubsub", notify_topic="")
        config = write_config(settings, Path(tmp) / "rollbackd.yaml")
        clock = SharedClock(START, cfg.speed)
        process = LiveProcess(config, Path(tmp) / "daemon.log", clock=clock).start()
        publisher = Publisher(topics.events, metrics_topic=topics.metrics)
        feeder = SoakFeeder(clock, fakes, publisher, names, ramp_minutes=cfg.phase_minutes, rps=cfg.rps,
                            ordered=cfg.ordered)
        tail, obs = JournalTail(journal), Observations()
        result: dict[str, Any] = {"config": cfg}
        try:
            port = process.port(timeout_s=120)
            pid = process.proc.pid
            t0_wall, t0_virtual = time.monotonic(), clock.now()
            feeder.start()
            say(f"soak: {cfg.services} services at {cfg.speed:g}x for {cfg.minutes:g} min (daemon pid {pid})")
            duration = cfg.minutes * 60
            next_sample = 0.0
            while (elapsed := time.monotonic() - t0_wall) < duration:
                if process.proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {process.proc.returncode}")
                absorb(tail.poll(), obs, clock, t0_virtual, cfg.speed)
                if elapsed >= next_sample:
                    rss, obs.hwm_kb = read_rss(pid)
                    obs.rss.append((elapsed, rss))
                    if len(obs.rss) % max(1, int(60 / cfg.sample_s)) == 1:
                        late = feeder.behind_s[-1][1] if feeder.behind_s else 0.0
                        say(f"  {elapsed:5.0f} s: RSS {rss / 1024:.0f} MiB, published {feeder.total_published}, "
                            f"handled {len(obs.inputs)}, feeder late {late:.0f} virtual s")
                    next_sample += cfg.sample_s
                time.sleep(POLL_S)
            feeder.stop()
            stopped = time.monotonic()
            absorb(tail.poll(), obs, clock, t0_virtual, cfg.speed)
            result["backlog_at_stop"] = feeder.submitted - len(obs.inputs)
            published = feeder.total_published
            while len(obs.inputs) < published and time.monotonic() - stopped < cfg.drain_s:
                absorb(tail.poll(), obs, clock, t0_virtual, cfg.speed)
                time.sleep(POLL_S)
            absorb(tail.poll(), obs, clock, t0_virtual, cfg.speed)
            result["drain_s"] = time.monotonic() - stopped if len(obs.inputs) >= published else None
            result["scrape"] = scrape(port)
        finally:
            feeder.stop()
            process.terminate(timeout_s=60)
        log_text = (Path(tmp) / "daemon.log").read_text(encoding="utf-8", errors="replace")
        result.update(
            obs=obs, duration_s=cfg.minutes * 60, published=dict(feeder.published), publish_failed=feeder.failed,
            publish_errors=feeder.publish_errors[:3], feeder_errors=list(feeder.errors), deploys=feeder.deploys,
            finished=feeder.finished, feeder_behind=feeder.behind_s,
            offered=[((at - t0_virtual).total_seconds() / cfg.speed, n) for at, n in feeder.offered],
            t0_virtual=t0_virtual.timestamp(),
            handle_errors=log_text.count("failed, nacked for redelivery"),
            error_lines=sum(1 for line in log_text.splitlines() if '"severity": "ERROR"' in line
                            or '"severity":"ERROR"' in line),
            statuses=_statuses(fakes, names))
    return result


def _statuses(fakes: Fakes, names: list[str]) -> dict[str, int]:
    """How the services' rollouts stand at the end (from their rollbackd.dev/status annotations)."""
    out: dict[str, int] = {}
    for name in names:
        full = f"projects/{fakes.project}/locations/{fakes.location}/services/{name}"
        status = fakes.cloud_run.annotations_of(full).get(f"{ANNOTATION_PREFIX}status", "none")
        out[status] = out.get(status, 0) + 1
    return out


# --- figures ------------------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def _between(pairs: list[tuple[float, Any]], lo: float, hi: float) -> list[Any]:
    return [value for t, value in pairs if lo <= t < hi]


def analyse(result: dict[str, Any], *, grace_s: float = 180.0) -> dict[str, Any]:
    """Windows (warm-up, `windows` equal post-warm-up windows, drain) and the three criteria."""
    cfg: SoakConfig = result["config"]
    obs: Observations = result["obs"]
    duration = result["duration_s"]
    warm = cfg.warmup * duration
    edges = [0.0, warm] + [warm + (duration - warm) * k / cfg.windows for k in range(1, cfg.windows + 1)]
    spans = list(zip(edges, edges[1:])) + [(duration, float("inf"))]
    windows = []
    # Pipeline lag counts from when the feeder began publishing the event's minute; event-time lag
    # from the minute's end. They differ by how late this process was (starved of CPU) in publishing.
    late = dict(result["feeder_behind"])
    for n, (lo, hi) in enumerate(spans):
        lags = [lag - late.get(at, 0.0) for t, lag, at in obs.lags if lo <= t < hi]
        event_lags = [lag for t, lag, _ in obs.lags if lo <= t < hi]
        handled = sum(1 for t in obs.inputs if lo <= t < hi)
        rss = _between(obs.rss, lo, hi)
        windows.append({"name": "warm-up" if n == 0 else "drain" if hi == float("inf") else f"window {n}",
                        "lo": lo, "hi": hi, "handled": handled,
                        "rate": handled / (hi - lo) if hi != float("inf") and hi > lo else None,
                        "lag_p50": _pct(lags, 50), "lag_p99": _pct(lags, 99), "lag_max": max(lags, default=float("nan")),
                        "event_lag_p99": _pct(event_lags, 99),
                        "feeder_late_max": max((b for at, b in result["feeder_behind"]
                                                if lo <= (at - result["t0_virtual"]) / cfg.speed < hi),
                                               default=float("nan")),
                        "tick_lag_max": max(_between(obs.tick_lags, lo, hi), default=float("nan")),
                        "rss_min": min(rss, default=0), "rss_max": max(rss, default=0)})
    post_rss = _between(obs.rss, warm, duration + 1)
    mean = float(np.mean(post_rss)) if post_rss else float("nan")
    deviation = max(abs(r - mean) for r in post_rss) / mean if post_rss else float("nan")
    memory_ok = bool(post_rss) and deviation <= 0.10
    post_t = [t / 60 for t, _ in obs.rss if warm <= t < duration + 1]
    slope = float(np.polyfit(post_t, post_rss, 1)[0]) if len(post_rss) > 2 else 0.0  # kB per wall minute

    post = windows[1:1 + cfg.windows]
    p99s = [w["lag_p99"] for w in post]
    growth_limit = p99s[0] * 1.5 + 60 if p99s else float("nan")
    lag_ok = bool(p99s) and all(p == p and p <= grace_s for p in p99s) and p99s[-1] <= growth_limit

    # Offered load by the minute it belongs to; handled load by when the daemon handled it. When the
    # daemon keeps up the two rates agree and the backlog stays within about one minute's burst.
    for w in windows:
        offered = sum(n for t, n in result["offered"] if w["lo"] <= t < w["hi"])
        w["offered_rate"] = offered / (w["hi"] - w["lo"]) if w["rate"] is not None else None
    span = duration - warm
    offered_rate = sum(n for t, n in result["offered"] if warm <= t < duration) / span
    handled_rate = sum(1 for t in obs.inputs if warm <= t < duration) / span
    last = post[-1] if post else windows[0]
    ratio = (last["rate"] or 0) / last["offered_rate"] if last["offered_rate"] else float("nan")
    per_minute = offered_rate * 60 / cfg.speed  # messages per virtual minute
    backlog_limit = 2 * per_minute
    sustained_ok = result["backlog_at_stop"] <= backlog_limit and result["drain_s"] is not None
    behind = [b for at, b in result["feeder_behind"]]
    return {"windows": windows, "warm_s": warm, "rss_mean": mean, "rss_deviation": deviation, "rss_slope": slope,
            "rss_first": post_rss[0] if post_rss else 0, "rss_last": post_rss[-1] if post_rss else 0,
            "rss_min": min(post_rss, default=0), "rss_max": max(post_rss, default=0),
            "memory_ok": memory_ok, "lag_ok": lag_ok, "growth_limit": growth_limit, "grace_s": grace_s,
            "offered_rate": offered_rate, "handled_rate": handled_rate, "ratio": ratio, "sustained_ok": sustained_ok,
            "backlog_limit": backlog_limit,
            "matching_speed": cfg.speed * min(1.0, ratio) if ratio == ratio else float("nan"),
            "feeder_behind_max": max(behind, default=0.0)}


def report(result: dict[str, Any], figures: dict[str, Any], load: tuple[float, float]) -> list[str]:
    cfg: SoakConfig = result["config"]
    obs: Observations = result["obs"]
    mib = 1 / 1024
    drained = f"{result['drain_s']:.1f} s" if result["drain_s"] is not None else f"NOT within {cfg.drain_s:.0f} s"
    lines = [
        f"soak: {cfg.services} services, {cfg.minutes:g} wall min at {cfg.speed:g}x ({cfg.minutes * cfg.speed:g} virtual "
        f"min), {cfg.phase_minutes}-min phases, {cfg.rps:g} rps per service; warm-up = first {figures['warm_s']:.0f} s; "
        f"load average {load[0]:.1f} at start, {load[1]:.1f} at end (2 cores, shared)",
        f"published: {result['published']['metrics']} metrics events + {result['published']['deploy']} deploys "
        f"({result['publish_failed']} publish failures); handled by the daemon: {len(obs.inputs)} messages; "
        f"drain after publishing stopped: {drained}",
        f"rollouts ended and redeployed: {result['finished']}; decisions {dict(sorted(obs.decisions.items()))}; "
        f"status at the end {dict(sorted(result['statuses'].items()))}",
        f"journal records {dict(sorted(obs.records.items()))}; handle errors (nacked) {result['handle_errors']}; "
        f"ERROR log lines {result['error_lines']}; Cloud API errors {_api_errors(result.get('scrape', {}))}; "
        f"feeder errors {len(result['feeder_errors'])} {result['feeder_errors'][:2]} {result['publish_errors']}",
        f"after warm-up: offered {figures['offered_rate']:.0f} messages/s, handled {figures['handled_rate']:.0f}/s; "
        f"backlog when publishing stopped {result['backlog_at_stop']} messages; the feeder began a minute at most "
        f"{figures['feeder_behind_max']:.0f} virtual s late",
        "",
        f"lags in virtual seconds (/{cfg.speed:g} = wall seconds): pipeline = publish began -> daemon handled; "
        f"event time = minute end -> handled; feeder late = minute end -> publish began; tick = how late the "
        f"minute's evaluation of all rollouts ran (read from the journal every {POLL_S} s)",
        f"{'window':<9} {'wall s':>11} {'offered/s':>9} {'handled/s':>9}  {'pipeline p50':>12} {'p99':>7} {'max':>7}"
        f"  {'event p99':>9}  {'feeder late':>11}  {'tick max':>8}  {'RSS MiB':>11}"]
    for w in figures["windows"]:
        hi = "end" if w["hi"] == float("inf") else f"{w['hi']:.0f}"
        rate = f"{w['rate']:.0f}" if w["rate"] is not None else "-"
        offered = f"{w['offered_rate']:.0f}" if w["offered_rate"] is not None else "-"
        rss = f"{w['rss_min'] * mib:>5.0f}-{w['rss_max'] * mib:<5.0f}" if w["rss_max"] else f"{'-':>5}"
        lines.append(f"{w['name']:<9} {w['lo']:>5.0f}-{hi:<5} {offered:>9} {rate:>9}  {w['lag_p50']:>12.1f} "
                     f"{w['lag_p99']:>7.1f} {w['lag_max']:>7.1f}  {w['event_lag_p99']:>9.1f}  "
                     f"{w['feeder_late_max']:>11.0f}  {w['tick_lag_max']:>8.0f}  {rss}")
    lines += [
        "",
        f"memory after warm-up: first {figures['rss_first'] * mib:.1f} MiB, last {figures['rss_last'] * mib:.1f}, "
        f"min {figures['rss_min'] * mib:.1f}, max {figures['rss_max'] * mib:.1f}, mean {figures['rss_mean'] * mib:.1f}; "
        f"largest deviation from the mean {figures['rss_deviation']:.1%}; trend {figures['rss_slope'] * mib:+.2f} MiB/min; "
        f"peak (VmHWM) {obs.hwm_kb * mib:.0f} MiB",
        f"{'PASS' if figures['memory_ok'] else 'FAIL'} memory flat: every RSS sample after warm-up within ±10% of the "
        f"mean (largest deviation {figures['rss_deviation']:.1%})",
        f"{'PASS' if figures['lag_ok'] else 'FAIL'} lag bounded: p99 pipeline lag per window after warm-up "
        f"{[round(w['lag_p99'], 1) for w in figures['windows'][1:1 + cfg.windows]]} virtual s; each must be <= "
        f"{figures['grace_s']:.0f} s (late_data_grace) and the last <= {figures['growth_limit']:.1f} s (first x1.5 + 60)",
        f"{'PASS' if figures['sustained_ok'] else 'FAIL'} sustained: backlog when publishing stopped "
        f"{result['backlog_at_stop']} messages (<= {figures['backlog_limit']:.0f}, two virtual minutes' worth), "
        f"drained: {drained}"]
    last = figures["windows"][cfg.windows]
    if last["tick_lag_max"] > figures["grace_s"]:
        lines.append(f"  note: the once-a-minute evaluation of every rollout ran up to {last['tick_lag_max']:.0f} virtual s "
                     f"late in the last window: with {cfg.services} active rollouts the ticks (resync, evaluation, "
                     f"traffic changes, all under the engine's lock) fall behind, not only the event intake")
    if not figures["sustained_ok"]:
        lines.append(f"  the daemon handled {figures['handled_rate']:.0f} messages/s of "
                     f"{figures['offered_rate']:.0f} offered "
                     f"(last window {figures['ratio']:.0%}): "
                     f"about --speed {figures['matching_speed']:.0f} for {cfg.services} services (or "
                     f"--services {int(cfg.services * min(1.0, figures['ratio']))} at {cfg.speed:g}x) would match it")
    return lines


def _api_errors(samples: dict[Any, float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (name, labels), value in samples.items():
        if name == "rollbackd_cloud_api_errors_total" and value:
            key = "/".join(v for _, v in labels)
            out[key] = out.get(key, 0) + int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=None, help="managed services (default 1000)")
    parser.add_argument("--minutes", type=float, default=None, help="wall minutes of publishing (default 10)")
    parser.add_argument("--speed", type=float, default=60.0, help="virtual seconds per wall second (sandbox: 60)")
    parser.add_argument("--phase-minutes", type=int, default=None, help="virtual minutes per phase (default 30)")
    parser.add_argument("--rps", type=float, default=10.0, help="requests per second per service")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the run counted as warm-up")
    parser.add_argument("--sample", type=float, default=5.0, help="wall seconds between memory samples")
    parser.add_argument("--drain", type=float, default=120.0, help="wall seconds allowed to drain the backlog")
    parser.add_argument("--quick", action="store_true", help="smoke: 200 services, 2 minutes, 5-minute phases")
    parser.add_argument("--unordered", action="store_true", help="publish without ordering keys")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a criterion fails")
    args = parser.parse_args(argv)
    quick = args.quick
    cfg = SoakConfig(services=args.services or (200 if quick else 1000),
                     minutes=args.minutes or (2.0 if quick else 10.0),
                     speed=args.speed, phase_minutes=args.phase_minutes or (5 if quick else 30), rps=args.rps,
                     warmup=args.warmup, sample_s=args.sample, drain_s=args.drain,
                     ordered=not args.unordered)
    if cfg.services < 1 or cfg.minutes <= 0 or cfg.speed <= 0 or cfg.phase_minutes < 1 or not 0 <= cfg.warmup < 1:
        print("soak: --services, --minutes, --speed and --phase-minutes must be positive, --warmup in [0, 1)",
              file=sys.stderr)
        return 2
    load_start = os.getloadavg()[0]
    with running_emulator():
        result = run(cfg, progress=lambda text: print(text, flush=True))
    figures = analyse(result)
    print("\n".join(report(result, figures, (load_start, os.getloadavg()[0]))))
    failed = not (figures["memory_ok"] and figures["lag_ok"] and figures["sustained_ok"])
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())

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
  (ordering key = service, as production publishes) following the Cloud Run fake's current split:
  about 2 events per service per virtual minute, i.e. ~2,000 events per wall second for 1,000
  services at 60x.
- Event lag = the daemon's `received_at` minus the event's time (the end of its minute, which is
  when it is published), read from the daemon's journal as it is written (tailed across rotation).
  Reported in virtual seconds (÷ speed = wall seconds) per time window, so growth is visible. Tick
  lag (how late the once-a-minute evaluation of all rollouts runs) is the virtual time at which
  this process reads a tick record minus the tick's time (an over-estimate by up to one poll,
  `POLL_S` x speed).
- Warm-up is the first `--warmup` share of the run (default 20%: the ramp plus the first rollouts).

Criteria (one PASS/FAIL line each; the exit code is 0 unless `--strict`):
- memory: every RSS sample after warm-up within ±10% of their mean;
- lag bounded: p99 lag in every post-warm-up window below the policy's late_data_grace (an event
  later than that misses its minute's evaluation), and the last window's p99 not above the first
  post-warm-up window's by more than 50% + one tick (60 virtual s);
- sustained: the daemon handled >= 98% of what was offered after warm-up and the backlog drained
  within `--drain` seconds after publishing stopped. When it fails, the rate it did sustain is
  printed with the speed that would match it: run that setting too, and report both.

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
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from daemon.clock import VirtualClock, parse_rfc3339
from daemon.core.commands import ANNOTATION_PREFIX
from daemon.core.events import Metrics
from tests.integration.live_harness import (START, Fakes, LiveProcess, Publisher, RevisionProfile, SharedClock,
                                            Topics, TrafficFeeder, audit_replace_service, latency_histogram,
                                            live_settings, running_emulator, scrape, write_config)

POLL_S = 0.25
TERMINAL = {"completed", "rolled-back", "halted", "superseded"}
SHORT_POLICY = Path(__file__).resolve().parents[1] / "tests" / "integration" / "policies" / "short.yaml"


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


def soak_policy(phase_minutes: int) -> str:
    """The e2e test policy with `phase_minutes` phases and rate limits that allow 1,000 services."""
    text = SHORT_POLICY.read_text(encoding="utf-8")
    text = text.replace("name: e2e-short", "name: soak")
    text = re.sub(r"duration: 2m", f"duration: {phase_minutes}m", text)
    text = re.sub(r"max_extension: 4m", f"max_extension: {phase_minutes}m", text)
    text = text.replace("max_actions_per_service_per_hour: 30", "max_actions_per_service_per_hour: 120")
    text = text.replace("max_actions_per_project_per_hour: 500", "max_actions_per_project_per_hour: 1000000")
    return "# Soak benchmark policy, generated by benchmarks/soak.py from tests/integration/policies/short.yaml\n" + text


# --- the world: metrics and deploys ----------------------------------------------------------------
class SoakFeeder(TrafficFeeder):
    """`TrafficFeeder` publishing without waiting (counted by callbacks), with latency histograms
    cached by request count (the feeder must offer ~2,000 events/s), which also (re)deploys a
    canary on every service whose rollout ended, and ramps the first deploys over `ramp_minutes`."""

    def __init__(self, clock: Any, fakes: Fakes, publisher: Publisher, services: list[str], *,
                 ramp_minutes: int, rps: float) -> None:
        super().__init__(clock, fakes.cloud_run, lambda m: None, seed=17)
        self.fakes, self.publisher, self.names = fakes, publisher, services
        self.ramp_minutes = max(1, ramp_minutes)
        self.deployed: dict[str, str] = {}  # service -> the canary we deployed last
        self.generation: dict[str, int] = {}
        self.published: dict[str, int] = {"metrics": 0, "deploy": 0}
        self.failed = self.submitted = self.deploys = self.finished = 0
        self.behind_s: list[tuple[float, float]] = []  # (virtual minute end, how late the feeder began it)
        self.offered: list[tuple[datetime, int]] = []  # (virtual minute end, messages published for it)
        self._hist_cache: dict[int, Any] = {}
        self._count_lock = threading.Lock()
        self._minute_index = 0
        for name in services:
            self.add(name, {}, rps=rps)

    def _done(self, future: Any, kind: str) -> None:
        ok = future.exception() is None
        with self._count_lock:
            if ok:
                self.published[kind] += 1
            else:
                self.failed += 1

    @property
    def total_published(self) -> int:
        return sum(self.published.values())

    def _publish(self, body: dict[str, Any], key: str, attributes: dict[str, str], kind: str) -> None:
        try:
            future = self.publisher.publish_json(body, key=key, attributes=attributes, wait=False)
        except Exception:  # noqa: BLE001 - a paused ordering key: resume it, count the loss
            with self._count_lock:
                self.failed += 1
            self.publisher.client.resume_publish(self.publisher.topic, key)
            return
        with self._count_lock:
            self.submitted += 1
        future.add_done_callback(lambda f: self._done(f, kind))

    def _histogram(self, n: int) -> Any:
        if n not in self._hist_cache:
            self._hist_cache[n] = latency_histogram(n, RevisionProfile(), self.rng)
        return self._hist_cache[n]

    def minute(self, at: datetime) -> list[Metrics]:
        from daemon.core.codec import event_to_json

        self.behind_s.append((at.timestamp(), (self.clock.now() - at).total_seconds()))
        before = self.submitted
        for service in self.names:
            for revision, percent in self.cloud_run.traffic_of(service).items():
                if percent <= 0:
                    continue
                n = int(self.rng.poisson(self.services[service].rps * 60 * percent / 100))
                m = Metrics(time=at, service=service, revision=revision, interval_s=60,
                            requests_by_class=(("2xx", n),) if n else (), latency=self._histogram(n) if n else None,
                            memory_utilization=0.4, cpu_utilization=0.3, instance_count=2,
                            project=self.project, location=self.location)
                self._publish(event_to_json(m), service, {"type": "metrics"}, "metrics")
        self.redeploy(at)
        self.offered.append((at, self.submitted - before))
        self.minutes_fed += 1
        self._minute_index += 1
        return []

    def redeploy(self, at: datetime) -> None:
        """A fresh canary where the last rollout ended; the first canaries spread over the ramp."""
        for i, service in enumerate(self.names):
            canary = self.deployed.get(service)
            if canary is None:
                if i % self.ramp_minutes != self._minute_index % self.ramp_minutes:
                    continue
            else:
                notes = self.cloud_run.annotations_of(service)
                if notes.get(f"{ANNOTATION_PREFIX}canary") != canary or \
                        notes.get(f"{ANNOTATION_PREFIX}status") not in TERMINAL:
                    continue  # still running, or our deploy not handled yet
                self.finished += 1
            split = self.cloud_run.traffic_of(service)
            baseline = max(split, key=lambda r: split[r])
            generation = self.generation.get(service, 1) + 1
            self.generation[service] = generation
            revision = f"{service}-{generation:05d}-can"
            self.fakes.deploy_canary(service, revision)
            self.deployed[service] = revision
            entry = audit_replace_service(service, revision, baseline, self.clock.now())
            self._publish(entry, service, {"logging.googleapis.com/timestamp": entry["timestamp"]}, "deploy")
            self.deploys += 1


# --- the daemon's side: journal and memory ------------------------------------------------------------
class JournalTail:
    """Reads the daemon's journal as it grows, across rotation (`journal.jsonl` -> `.1`): the open
    handle keeps reading the renamed file to its end before the new one is opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._inode = -1
        self._partial = ""

    def _read(self) -> list[str]:
        text = self._partial + self._handle.read()
        lines = text.split("\n")
        self._partial = lines.pop()
        return lines

    def poll(self) -> list[str]:
        if self._handle is None:
            if not self.path.exists():
                return []
            self._handle = open(self.path, encoding="utf-8", errors="replace")
            self._inode = os.fstat(self._handle.fileno()).st_ino
        lines = self._read()
        try:
            rotated = os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            rotated = False  # mid-rotation: the new file appears at once
        if rotated:
            lines += self._read()
            self._handle.close()
            self._handle, self._partial = None, ""
            lines += self.poll()
        return lines


@dataclass
class Observations:
    """What the daemon did, each item stamped with wall seconds since the soak began."""

    lags: list[tuple[float, float, float]] = field(default_factory=list)  # (wall s, lag virtual s, minute end)
    tick_lags: list[tuple[float, float]] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (wall s, VmRSS kB)
    hwm_kb: int = 0
    offered: list[tuple[float, int]] = field(default_factory=list)  # (wall s, published so far)
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
        publisher = Publisher(topics.events)
        feeder = SoakFeeder(clock, fakes, publisher, names, ramp_minutes=cfg.phase_minutes, rps=cfg.rps)
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
                    obs.offered.append((elapsed, feeder.total_published))
                    if len(obs.rss) % max(1, int(60 / cfg.sample_s)) == 1:
                        say(f"  {elapsed:5.0f} s: RSS {rss / 1024:.0f} MiB, published {feeder.total_published}, "
                            f"handled {len(obs.inputs)}, feeder behind {feeder.behind_s[-1][1] if feeder.behind_s else 0:.0f} s")
                    next_sample += cfg.sample_s
                time.sleep(POLL_S)
            feeder.stop()
            stopped = time.monotonic()
            absorb(tail.poll(), obs, clock, t0_virtual, cfg.speed)
            result["backlog_at_stop"] = feeder.submitted - len(obs.inputs)
            while feeder.total_published + feeder.failed < feeder.submitted and time.monotonic() - stopped < 30:
                time.sleep(POLL_S)  # the last minute's publishes still in flight
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
            deploys=feeder.deploys, finished=feeder.finished, feeder_behind=feeder.behind_s,
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
        status = fakes.cloud_run.annotations_of(name).get(f"{ANNOTATION_PREFIX}status", "none")
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
                                                if lo <= (at - result["t0_virtual"]) / cfg.speed < hi), default=float("nan")),
                        "tick_lag_max": max(_between(obs.tick_lags, lo, hi), default=float("nan")),
                        "rss_min": min(rss, default=0), "rss_max": max(rss, default=0)})
    post_rss = _between(obs.rss, warm, duration + 1)
    mean = float(np.mean(post_rss)) if post_rss else float("nan")
    deviation = max(abs(r - mean) for r in post_rss) / mean if post_rss else float("nan")
    memory_ok = bool(post_rss) and deviation <= 0.10
    slope = float(np.polyfit([t / 60 for t, _ in obs.rss if t >= warm], post_rss, 1)[0]) if len(post_rss) > 2 else 0.0

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
            "feeder_behind_max": max(behind, default=0.0), "all_handled": len(obs.inputs) >= sum(result["published"].values())}


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
        f"ERROR log lines {result['error_lines']}; Cloud API errors {_api_errors(result.get('scrape', {}))}",
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
    if not figures["sustained_ok"]:
        lines.append(f"  the daemon handled {figures['handled_rate']:.0f} messages/s of {figures['offered_rate']:.0f} offered "
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
    parser.add_argument("--strict", action="store_true", help="exit 1 when a criterion fails")
    args = parser.parse_args(argv)
    quick = args.quick
    cfg = SoakConfig(services=args.services or (200 if quick else 1000), minutes=args.minutes or (2.0 if quick else 10.0),
                     speed=args.speed, phase_minutes=args.phase_minutes or (5 if quick else 30), rps=args.rps,
                     warmup=args.warmup, sample_s=args.sample, drain_s=args.drain)
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

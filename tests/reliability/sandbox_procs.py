"""Run `rollbackd run --sandbox` as real processes, kill them, and read what they left behind.

`Zygote` talks to `tests.reliability.zygote` (a pre-imported process that forks daemons), so a
crash trial costs a fork instead of a Python start. `RunOutcome.read(state_dir)` reads the state
directory a sandbox leaves: the simulated Cloud Run (`cloud.json`, whose `calls` is the request
log of every UpdateService) and the journal (`journal.jsonl`, every decision).

Used by tests/reliability/test_crash_restart.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHORT_POLICY = str(REPO / "tests" / "integration" / "policies" / "short.yaml")
# Virtual seconds per wall second. The short policy's rollouts take ~10 virtual minutes, so a run is
# about a second; slow enough that the loop never falls behind the virtual clock on a busy machine.
SPEED = 600


def sandbox_argv(state_dir: str, *, speed: float = SPEED, policy: str | None = SHORT_POLICY,
                 scenario: str = "default", extra: tuple[str, ...] = ()) -> list[str]:
    argv = ["run", "--sandbox", "--speed", str(speed), "--state-dir", state_dir, "--json",
            "--scenario", scenario]
    if policy:
        argv += ["--policy", policy]
    return argv + list(extra)


class Zygote:
    """Client of the forking zygote. Not thread-safe; one per test session."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.pop("PUBSUB_EMULATOR_HOST", None)  # the sandbox must use its in-process bus here
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.zygote"], cwd=str(REPO), env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"zygote did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"zygote exited with {self.proc.poll()}")
        return json.loads(line)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], state_dir: str, *, crash_at: str = "") -> int:
        os.makedirs(state_dir, exist_ok=True)
        reply = self._ask({"op": "run", "argv": argv, "crash_at": crash_at,
                           "stdout": os.path.join(state_dir, "stdout.txt"),
                           "stderr": os.path.join(state_dir, "stderr.txt")})
        return int(reply["pid"])

    def wait(self, pid: int, timeout_s: float) -> int | None:
        return self._ask({"op": "wait", "pid": pid, "timeout_s": timeout_s})["rc"]

    def kill(self, pid: int) -> int | None:
        return self._ask({"op": "kill", "pid": pid})["rc"]

    def run(self, argv: list[str], state_dir: str, *, crash_at: str = "", timeout_s: float = 60.0) -> int:
        """Run to the end (or to the crash point). Returns the exit code (-9 for SIGKILL)."""
        pid = self.start(argv, state_dir, crash_at=crash_at)
        rc = self.wait(pid, timeout_s)
        if rc is None:
            self.kill(pid)
            raise AssertionError(f"sandbox {argv} did not finish within {timeout_s}s")
        return rc

    def run_and_kill_when(self, argv: list[str], state_dir: str, *, journal_bytes: int,
                          timeout_s: float = 60.0) -> tuple[int, int]:
        """Start a sandbox and SIGKILL it once its journal has grown past `journal_bytes`.
        Returns (exit code, journal size when killed); exit code 0 when it finished first."""
        journal = os.path.join(state_dir, "journal.jsonl")
        pid = self.start(argv, state_dir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            size = os.path.getsize(journal) if os.path.exists(journal) else 0
            if size >= journal_bytes:
                return int(self.kill(pid) or 0), size
            rc = self.wait(pid, 0.0)
            if rc is not None:
                return rc, size
            time.sleep(0.001)
        self.kill(pid)
        raise AssertionError(f"sandbox did not reach {journal_bytes} journal bytes within {timeout_s}s")

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, AssertionError):
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- what a run left behind ---------------------------------------------------------------------

DECISION_KEYS = ("decision_id", "service", "time", "action", "canary_percent_before", "canary_percent",
                 "phase", "status_before", "status", "acted")


@dataclass
class RunOutcome:
    final_traffic: dict[str, dict[str, int]]
    annotations: dict[str, dict[str, str]]
    updates: list[dict[str, Any]]  # the simulated Cloud Run's UpdateService request log
    decisions: list[dict[str, Any]]  # every decision line of the journal, in order
    stdout_decisions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, state_dir: str) -> "RunOutcome":
        with open(os.path.join(state_dir, "cloud.json"), encoding="utf-8") as handle:
            cloud = json.load(handle)
        # cloud.json keys services by resource name; the sandbox has one location, so its short
        # name (the service's own `name`) is enough here.
        traffic = {s["name"]: {t["revision"]: int(t["percent"]) for t in s["traffic"] if int(t["percent"])}
                   for s in cloud["services"].values()}
        annotations = {s["name"]: dict(s.get("annotations", {})) for s in cloud["services"].values()}
        updates = [args for method, args in cloud["calls"] if method == "UpdateService"]
        decisions = []
        from daemon.adapters.journal import read_lines

        for line in read_lines(os.path.join(state_dir, "journal.jsonl")):
            if '"type":"decision"' in line:
                decisions.append(json.loads(line))
        printed = []
        stdout = os.path.join(state_dir, "stdout.txt")
        if os.path.exists(stdout):
            with open(stdout, encoding="utf-8") as handle:
                for line in handle:
                    if line.endswith("\n") and line.startswith("{"):
                        printed.append(json.loads(line))
        return cls(traffic, annotations, updates, decisions, printed)

    def decision_summary(self) -> list[tuple[Any, ...]]:
        return [tuple(d.get(k) for k in DECISION_KEYS) for d in self.decisions]


def check_no_double_action(outcome: RunOutcome) -> list[str]:
    """Problems with the UpdateService log: a decision applied twice, or the same split sent twice
    in a row to one service (a repeated change)."""
    problems = []
    seen: set[str] = set()
    last: dict[str, dict[str, int]] = {}
    for update in outcome.updates:
        decision_id = update.get("decision_id", "")
        if decision_id in seen:
            problems.append(f"UpdateService for {decision_id} sent twice")
        seen.add(decision_id)
        if last.get(update["service"]) == update["traffic"]:
            problems.append(f"{update['service']}: the same split {update['traffic']} sent twice in a row")
        last[update["service"]] = update["traffic"]
    return problems


def check_journal_contiguous(outcome: RunOutcome) -> list[str]:
    """Problems with the journal: a decision number missing or repeated within a rollout."""
    problems = []
    by_rollout: dict[str, list[int]] = {}
    for decision in outcome.decisions:
        rollout, _, number = decision["decision_id"].rpartition("#")
        if not rollout:
            continue  # kill-switch decisions are not numbered
        by_rollout.setdefault(rollout, []).append(int(number))
    for rollout, numbers in by_rollout.items():
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append(f"{rollout}: decision numbers {numbers} are not 1..{len(numbers)}")
    return problems


def check_traffic_matches_decisions(outcome: RunOutcome) -> list[str]:
    """Every acted traffic decision in the journal reached Cloud Run (an UpdateService carrying its
    decision id), so nothing decided was silently dropped by a crash."""
    sent = {u.get("decision_id") for u in outcome.updates}
    problems = []
    for decision in outcome.decisions:
        changes = decision.get("canary_percent_before") != decision.get("canary_percent")
        if decision.get("acted") and changes and decision["decision_id"] not in sent:
            problems.append(f"{decision['decision_id']} ({decision['action']} to {decision['canary_percent']}%) "
                            "is journaled but never reached Cloud Run")
    return problems

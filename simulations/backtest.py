"""`rollbackd backtest`: replay a whole corpus of recordings and summarise each service's outcome.

Called by `daemon.cli_tools` (the `backtest` subcommand), `tests/scenarios/test_corpus.py` and
`benchmarks/backtest_throughput.py`. Each recording is replayed by `simulations.replay.replay_file`
(the same engine and core as the live daemon, made by the caller's `build_engine`: the bootstrap's
`engine_factory("backtest")`) in a process pool over all cores; the parent only collects one small
`Row` per (recording, service).

Outcome of a service = the status of its last rollout at the end of the recording:
  promoted     the canary reached 100% (completed)
  rolled_back  traffic went back to the baseline
  halted       rollbackd stood down; a human must look
  in_progress  still in a phase, waiting or held (freeze, pause, missing data...) at the end
  none         the recording has no rollout for that service

Expected outcomes (optional) turn a backtest into a regression test for policy changes:
  * `expected.json` beside the recordings: {"file.jsonl": {"service": "outcome", ...}, ...};
    a plain string instead of the inner object means "every service in that file";
  * or a comment line inside the recording (replay ignores lines that start with '#'):
    `# expected: {"checkout": "rolled_back"}`.
Expectations are checked against `--policy` (not `--compare-policy`). A mismatch is listed and
`backtest` exits 1.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from daemon.core.service_id import ServiceId, service_id_of, several_locations
from daemon.ports import EngineFactory

OUTCOMES = ("promoted", "rolled_back", "in_progress", "halted", "none")
EXPECTED_FILE = "expected.json"
EXPECTED_PREFIX = "# expected:"
_STATUS_OUTCOME = {"completed": "promoted", "rolled-back": "rolled_back", "halted": "halted",
                   "phase": "in_progress", "waiting": "in_progress", "held": "in_progress",
                   "superseded": "in_progress", "idle": "none"}


class BacktestError(ValueError):
    """A corpus that cannot be backtested (no files, unreadable expected.json); one line."""


@dataclass
class Row:
    """One (recording, service): what happened, and when."""

    recording: str
    service: str
    outcome: str
    status: str = ""
    canary: str = ""
    baseline: str = ""
    phase: int = 0
    canary_percent: int = 0
    started_at: str | None = None
    first_rollback: str | None = None
    promoted_at: str | None = None  # when the canary reached 100%
    time_to_100_s: float | None = None
    hold_reason: str = ""
    decisions: list[dict[str, Any]] = field(default_factory=list)  # [{time, action, canary_percent}]
    rejected_lines: int = 0
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out


def outcome_of_status(status: str) -> str:
    return _STATUS_OUTCOME.get(status, "in_progress")


def rows_from_result(result: Any, path: str = "") -> list[Row]:
    """Summarise one `ReplayResult` per service (the worker's job; also used by tests)."""
    from daemon.core.timefmt import format_rfc3339

    states = result.engine.states if result.engine is not None else {}
    by_service: dict[ServiceId, list[Any]] = {}
    for decision in result.decisions:
        if decision.service != "*":
            by_service.setdefault(service_id_of(decision), []).append(decision)
    # Services are told apart by project, location and name; the row names the region only when the
    # recording has more than one.
    many = several_locations(set(states) | set(by_service))
    rows = []
    for service in sorted(set(states) | set(by_service)):
        state = states.get(service)
        rollout = state.rollout if state is not None else None
        decisions = by_service.get(service, [])
        row = Row(recording=result.recording, service=service.label(with_location=many), outcome="none",
                  path=path,
                  rejected_lines=len(result.rejected),
                  decisions=[{"time": format_rfc3339(d.time), "action": d.action,
                              "canary_percent": d.canary_percent_after} for d in decisions])
        rollbacks = [d for d in decisions if d.action == "rollback"]
        if rollbacks:
            row.first_rollback = format_rfc3339(rollbacks[0].time)
        if rollout is not None:
            row.status = rollout.status.value
            row.outcome = outcome_of_status(rollout.status.value)
            row.canary, row.baseline = rollout.canary, rollout.baseline
            row.phase, row.canary_percent = rollout.phase_index + 1, rollout.canary_percent
            row.hold_reason = rollout.hold_reason
            row.started_at = format_rfc3339(rollout.started_at)
            full = [d for d in decisions if d.canary == rollout.canary and d.canary_percent_after == 100
                    and d.canary_percent_before < 100]
            if full:
                row.promoted_at = format_rfc3339(full[0].time)
                row.time_to_100_s = (full[0].time - rollout.started_at).total_seconds()
        rows.append(row)
    return rows


# --- the worker pool -------------------------------------------------------------------------
# Set in the parent before the pool forks, so each worker inherits the loaded policies (a Policy
# is a pydantic model: cheaper to inherit than to pickle for every task) and the engine factory.
_POLICIES: tuple[Any, ...] = ()
_BUILD_ENGINE: EngineFactory | None = None


def _replay_one(task: tuple[int, str]) -> tuple[int, list[list[dict[str, Any]]], str]:
    index, path = task
    from simulations.replay import replay_file

    assert _BUILD_ENGINE is not None, "replay_corpus sets the engine factory"
    try:
        per_policy = [[row.to_json() | {"path": path}
                       for row in rows_from_result(replay_file(path, policy, build_engine=_BUILD_ENGINE), path)]
                      for policy in _POLICIES]
        return index, per_policy, ""
    except OSError as error:
        return index, [[] for _ in _POLICIES], f"{os.path.basename(path)}: cannot read: {error}"


def _row(data: dict[str, Any]) -> Row:
    return Row(**data)


def replay_corpus(files: Sequence[str], policies: Sequence[Any], *, build_engine: EngineFactory,
                  workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[list[Row]], list[str]]:
    """Replay every file under each policy. Returns rows per policy (in file order) and errors."""
    global _POLICIES, _BUILD_ENGINE
    _POLICIES, _BUILD_ENGINE = tuple(policies), build_engine
    tasks = list(enumerate(files))
    results: list[tuple[int, list[list[dict[str, Any]]], str]] = []
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            results.append(_replay_one(task))
            if progress:
                progress(len(results), len(tasks))
    else:
        import multiprocessing

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        context = multiprocessing.get_context(method)
        chunk = max(1, min(16, len(tasks) // (workers * 8)))
        with context.Pool(processes=min(workers, len(tasks)), initializer=_init_worker,
                          initargs=(tuple(policies), build_engine)) as pool:
            for item in pool.imap_unordered(_replay_one, tasks, chunksize=chunk):
                results.append(item)
                if progress:
                    progress(len(results), len(tasks))
    results.sort(key=lambda item: item[0])
    per_policy: list[list[Row]] = [[] for _ in policies]
    errors = []
    for _, rows, error in results:
        if error:
            errors.append(error)
        for i, policy_rows in enumerate(rows):
            per_policy[i].extend(_row(r) for r in policy_rows)
    return per_policy, errors


def _init_worker(policies: tuple[Any, ...], build_engine: EngineFactory) -> None:
    global _POLICIES, _BUILD_ENGINE
    _POLICIES, _BUILD_ENGINE = policies, build_engine


# --- inputs and expectations -------------------------------------------------------------------
def collect_files(paths: Iterable[str]) -> list[str]:
    """Recordings named directly, and every *.jsonl under named directories (sorted)."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(".jsonl"))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise BacktestError(f"{path}: no such file or directory")
    if not files:
        raise BacktestError("no recordings (*.jsonl) found in " + ", ".join(paths))
    return files


def load_expectations(files: Sequence[str]) -> dict[str, dict[str, str]]:
    """{path: {service or '*': outcome}} from expected.json files and '# expected:' lines."""
    found: dict[str, dict[str, str]] = {}
    tables: dict[str, dict[str, Any]] = {}
    for path in files:
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in tables:
            tables[folder] = _read_expected_json(os.path.join(folder, EXPECTED_FILE))
        entry = tables[folder].get(os.path.basename(path))
        if entry is not None:
            found[path] = _normalise(entry, f"{EXPECTED_FILE}: {os.path.basename(path)}")
        inline = _inline_expectation(path)
        if inline is not None:
            found[path] = {**found.get(path, {}), **inline}
    return found


def _read_expected_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise BacktestError(f"{path}: not a readable JSON object: {error}") from None
    if not isinstance(data, dict):
        raise BacktestError(f"{path}: expected a JSON object "
                            '{"file.jsonl": {"service": "outcome"}}')
    return {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys are notes


def _inline_expectation(path: str) -> dict[str, str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for _, line in zip(range(5), handle):  # only the head of the file, so this stays cheap
                if line.startswith(EXPECTED_PREFIX):
                    try:
                        value = json.loads(line[len(EXPECTED_PREFIX):])
                    except ValueError:
                        raise BacktestError(f"{path}: '# expected:' is not followed by JSON") from None
                    return _normalise(value, path)
    except OSError:
        return None
    return None


def _normalise(entry: Any, where: str) -> dict[str, str]:
    mapping = {"*": entry} if isinstance(entry, str) else entry
    if not isinstance(mapping, dict):
        raise BacktestError(f"{where}: expected an outcome or {{\"service\": \"outcome\"}}")
    for service, outcome in mapping.items():
        if outcome not in OUTCOMES:
            raise BacktestError(f"{where}: {service}: unknown outcome {outcome!r} "
                                f"(one of {', '.join(OUTCOMES)})")
    return {str(k): str(v) for k, v in mapping.items()}


def check_expectations(rows: Sequence[Row], expected: dict[str, dict[str, str]]) -> list[str]:
    """One line per broken expectation."""
    by_path: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_path.setdefault(row.path, {})[row.service] = row
    problems = []
    for path, wanted in expected.items():
        got = by_path.get(path, {})
        name = os.path.basename(path)
        for service, outcome in sorted(wanted.items()):
            targets = list(got.values()) if service == "*" else [got.get(service)]
            if not targets:
                problems.append(f"{name}: expected {outcome}, but the recording has no service")
            for row in targets:
                actual = row.outcome if row is not None else "none"
                label = row.service if row is not None else service
                if actual != outcome:
                    problems.append(f"{name} {label}: expected {outcome}, got {actual}")
    return problems


# --- report ------------------------------------------------------------------------------------
@dataclass
class BacktestReport:
    rows: list[Row]
    compare_rows: list[Row] | None
    problems: list[str]
    errors: list[str]
    files: int

    def differences(self) -> list[tuple[Row, Row | None]]:
        if self.compare_rows is None:
            return []
        other = {(r.path, r.service): r for r in self.compare_rows}
        out = []
        for row in self.rows:
            twin = other.get((row.path, row.service))
            if twin is None or twin.outcome != row.outcome or twin.decisions != row.decisions:
                out.append((row, twin))
        return out


def run_backtest(paths: Sequence[str], policy: Any, compare: Any = None, *, build_engine: EngineFactory,
                 workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> BacktestReport:
    files = collect_files(paths)
    expected = load_expectations(files)
    policies = [policy] + ([compare] if compare is not None else [])
    per_policy, errors = replay_corpus(files, policies, build_engine=build_engine, workers=workers,
                                       progress=progress)
    rows = per_policy[0]
    return BacktestReport(rows=rows, compare_rows=per_policy[1] if compare is not None else None,
                          problems=check_expectations(rows, expected), errors=errors, files=len(files))


def progress_bar(stream: Any = None) -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr, only when stderr is a terminal."""
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        stream.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} recordings")
        if done == total:
            stream.write("\n")
        stream.flush()
    return show


def _when(text: str | None) -> str:
    return text[11:19] if text else "-"


def format_table(report: BacktestReport) -> str:
    from policies.units import format_duration

    lines = [f"{'RECORDING':<36} {'SERVICE':<16} {'OUTCOME':<12} {'FIRST ROLLBACK':<15} TIME TO 100%"]
    for row in report.rows:
        t100 = format_duration(row.time_to_100_s) if row.time_to_100_s is not None else "-"
        lines.append(f"{row.recording:<36} {row.service:<16} {row.outcome:<12} "
                     f"{_when(row.first_rollback):<15} {t100}")
    lines.append("")
    counts = {kind: sum(1 for r in report.rows if r.outcome == kind) for kind in OUTCOMES}
    lines.append(f"{report.files} recordings, {len(report.rows)} services: "
                 + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n))
    if report.compare_rows is not None:
        diffs = report.differences()
        moved = [(a, b) for a, b in diffs if b is None or a.outcome != b.outcome]
        lines.append(f"policies differ on {len(diffs)} of {len(report.rows)} services "
                     f"({len(moved)} with a different outcome)")
        for row, twin in diffs:
            was = twin.outcome if twin else "none"
            detail = f"{was} → {row.outcome}" if was != row.outcome else \
                f"{row.outcome} either way, decisions differ ({_first_difference(row, twin)})"
            lines.append(f"  {row.recording} {row.service}: {detail}")
    for error in report.errors:
        lines.append(f"error: {error}")
    if report.problems:
        lines.append(f"{len(report.problems)} expectation(s) broken:")
        lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines) + "\n"


def _first_difference(row: Row, twin: Row | None) -> str:
    other = twin.decisions if twin else []
    for mine, theirs in zip(row.decisions, other):
        if mine != theirs:
            return (f"{mine['time'][11:16]} {mine['action']} {mine['canary_percent']}% vs "
                    f"{theirs['time'][11:16]} {theirs['action']} {theirs['canary_percent']}%")
    return f"{len(row.decisions)} vs {len(other)} decisions"


def json_lines(report: BacktestReport) -> str:
    """One object per (recording, service); with a compare policy, its row under `compare`."""
    other = {(r.path, r.service): r for r in report.compare_rows or []}
    lines = []
    for row in report.rows:
        data = row.to_json()
        if report.compare_rows is not None:
            twin = other.get((row.path, row.service))
            data["compare"] = twin.to_json() if twin else None
            data["differs"] = twin is None or twin.outcome != row.outcome or twin.decisions != row.decisions
        lines.append(json.dumps(data, sort_keys=True, separators=(",", ":")))
    return "".join(line + "\n" for line in lines)


"""`rollbackd backtest`: rows per (recording, service), expectations (expected.json and inline),
exit codes, JSON fields, the parallel pool agreeing with the serial path, and policy comparison."""
from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pytest

from daemon import cli
from daemon.bootstrap import engine_factory
from daemon.cli import main
from policies import default_policy_path, load_default_policy
from policies.loader import load_policy
from simulations.backtest import (BacktestError, collect_files, load_expectations, outcome_of_status,
                                  run_backtest)

BACKTEST = engine_factory("backtest")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "simulations", "recordings")
FILES = ("healthy-promoted.jsonl", "errors-x5.jsonl", "multi-service.jsonl", "freeze-friday.jsonl")


@pytest.fixture()
def corpus(tmp_path):
    for name in FILES:
        shutil.copy(os.path.join(CORPUS, name), tmp_path / name)
    return tmp_path


def _run(*argv: str) -> tuple[int, str, str]:
    # daemon.cli.main() appends its extra subcommands on every call; start each call clean.
    cli._EXTRA_COMMANDS.clear()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_outcome_names():
    statuses = ("completed", "rolled-back", "halted", "held", "phase", "idle")
    assert [outcome_of_status(s) for s in statuses] == \
        ["promoted", "rolled_back", "halted", "in_progress", "in_progress", "none"]


def test_one_row_per_recording_and_service(corpus):
    report = run_backtest([str(corpus)], load_default_policy(), workers=1, build_engine=BACKTEST)
    got = {(r.recording, r.service): r for r in report.rows}
    assert set(got) == {("healthy-promoted.jsonl", "checkout"), ("errors-x5.jsonl", "checkout"),
                        ("multi-service.jsonl", "checkout"), ("multi-service.jsonl", "payments"),
                        ("multi-service.jsonl", "search"), ("freeze-friday.jsonl", "checkout")}
    healthy = got[("healthy-promoted.jsonl", "checkout")]
    assert healthy.outcome == "promoted" and healthy.time_to_100_s == 2400 and healthy.first_rollback is None
    errors = got[("errors-x5.jsonl", "checkout")]
    assert errors.outcome == "rolled_back" and errors.first_rollback is not None
    assert errors.promoted_at is None
    assert errors.decisions[-1]["action"] == "rollback"
    assert got[("freeze-friday.jsonl", "checkout")].hold_reason == "freeze"


def test_pool_gives_the_same_rows_as_serial(corpus):
    policy = load_default_policy()
    serial = run_backtest([str(corpus)], policy, workers=1, build_engine=BACKTEST).rows
    parallel = run_backtest([str(corpus)], policy, workers=2, build_engine=BACKTEST).rows
    assert [r.to_json() for r in serial] == [r.to_json() for r in parallel]


def test_expectations_pass_and_break(corpus):
    (corpus / "expected.json").write_text(json.dumps({
        "healthy-promoted.jsonl": "promoted",
        "multi-service.jsonl": {"checkout": "promoted", "payments": "rolled_back"}}))
    code, out, _ = _run("backtest", "--workers", "1", str(corpus))
    assert code == 0, out
    (corpus / "expected.json").write_text(json.dumps({"errors-x5.jsonl": {"checkout": "promoted"}}))
    code, out, _ = _run("backtest", "--workers", "1", str(corpus))
    assert code == 1
    assert "errors-x5.jsonl checkout: expected promoted, got rolled_back" in out


def test_inline_expectation_line(corpus):
    path = corpus / "errors-x5.jsonl"
    path.write_text('# expected: {"checkout": "halted"}\n' + path.read_text())
    assert load_expectations([str(path)]) == {str(path): {"checkout": "halted"}}
    code, out, _ = _run("backtest", "--workers", "1", str(path))
    assert code == 1 and "expected halted, got rolled_back" in out


def test_bad_inputs_are_one_line_errors(corpus, tmp_path):
    (corpus / "expected.json").write_text('{"errors-x5.jsonl": "exploded"}')
    code, _, err = _run("backtest", str(corpus))
    assert code == 2 and "unknown outcome" in err and "Traceback" not in err
    code, _, err = _run("backtest", str(tmp_path / "nowhere"))
    assert code == 2 and "no such file or directory" in err
    with pytest.raises(BacktestError):
        collect_files([str(tmp_path / "profile-does-not-exist")])


def test_json_has_the_documented_fields(corpus):
    code, out, _ = _run("backtest", "--json", "--workers", "2", str(corpus))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert {"recording", "service", "outcome", "first_rollback", "time_to_100_s", "decisions"} <= set(row)
        assert row["outcome"] in ("promoted", "rolled_back", "in_progress", "halted")
        assert all({"time", "action", "canary_percent"} <= set(d) for d in row["decisions"])


def test_compare_policy_lists_differences(corpus, tmp_path):
    text = open(default_policy_path(), encoding="utf-8").read()
    assert "      end: Mon 08:00" in text
    lenient = tmp_path / "no-freeze.yaml"
    # The same policy without the weekend freeze: the Friday-evening deploy is no longer held.
    lenient.write_text(text.replace("    - start: Fri 17:00", "    - start: Sun 03:00")
                           .replace("      end: Mon 08:00", "      end: Sun 03:01"))
    load_policy(str(lenient))
    code, out, _ = _run("backtest", "--workers", "1", "--policy", str(lenient),
                        "--compare-policy", str(default_policy_path()), str(corpus))
    assert code == 0
    assert "policies differ on" in out
    assert "freeze-friday.jsonl checkout: in_progress →" in out
    code, out, _ = _run("backtest", "--json", "--workers", "1", "--policy", str(lenient),
                        "--compare-policy", str(default_policy_path()), str(corpus))
    rows = {(r["recording"], r["service"]): r for r in map(json.loads, out.splitlines())}
    assert rows[("freeze-friday.jsonl", "checkout")]["differs"] is True
    assert rows[("freeze-friday.jsonl", "checkout")]["compare"]["outcome"] == "in_progress"
    assert rows[("healthy-promoted.jsonl", "checkout")]["differs"] is False

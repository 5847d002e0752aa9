"""`rollbackd policy validate|schema|diff` as functions: output lines and exit codes."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from policies import cli, default_policy_path

DEFAULT = str(default_policy_path())
DEFAULT_TEXT = default_policy_path().read_text(encoding="utf-8")


def _run(func, *args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = func(*args, out, err)
    return code, out.getvalue(), err.getvalue()


def _variant(tmp_path: Path, name: str, *edits: tuple[str, str]) -> str:
    text = DEFAULT_TEXT
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_validate_default_summary() -> None:
    code, out, err = _run(cli.validate, [DEFAULT])
    assert code == 0 and err == ""
    summary = "4 phases (5%→25%→50%→100%), alpha 1%, 1 freeze window, 0 overrides"
    assert out == f"{DEFAULT}: ok — {summary}\n"


def test_validate_reports_every_error_as_file_line_col(tmp_path: Path) -> None:
    bad = _variant(tmp_path, "bad.yaml", ("traffic: 25%", "traffic: 2%"), ("duration: 15m", "duration: 15"))
    code, out, err = _run(cli.validate, [DEFAULT, bad])
    assert code == 2
    assert out.startswith(f"{DEFAULT}: ok")  # valid files still get their line
    lines = err.splitlines()
    assert len(lines) == 2
    text_lines = Path(bad).read_text().splitlines()
    for line in lines:
        match = re.match(r"^(.+):(\d+):(\d+): ([\w.]+): (.+)$", line)
        assert match, line
        assert match.group(1) == bad
        assert match.group(4) in text_lines[int(match.group(2)) - 1] or \
            match.group(4).split(".")[-1] in text_lines[int(match.group(2)) - 1]
    assert any("phases.1.traffic: phases must ascend" in line for line in lines)


@pytest.mark.parametrize("target", ["missing.yaml", "."])
def test_validate_missing_file_or_directory_is_clean(tmp_path: Path, target: str) -> None:
    path = str(tmp_path / target)
    code, out, err = _run(cli.validate, [path])
    assert code == 2 and out == ""
    assert err.startswith(f"{path}:1:1: cannot read the file") and "Traceback" not in err


def test_schema_is_json_schema_of_the_policy() -> None:
    out = io.StringIO()
    assert cli.schema(out) == 0
    schema = json.loads(out.getvalue())
    top = {"phases", "key_metrics", "comparison", "evidence", "freeze", "overrides"}
    assert top <= set(schema["properties"])
    assert set(schema["required"]) >= {"phases", "key_metrics", "comparison", "evidence"}
    assert schema["$defs"]["Phase"]["additionalProperties"] is False
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(schema)


def test_diff_explains_changes_in_words(tmp_path: Path) -> None:
    new = _variant(
        tmp_path, "new.yaml",
        ("duration: 10m", "duration: 5m"),
        ("normal: 500ms", "normal: 800ms"),
        ("alpha: 1%", "alpha: 0.5%"),
        ("min_requests: 200", "min_requests: 500"),
        ("      - no_alerts                # \"no alerts\"\n", ""),
        ("      reason: runbook - no promotions from Friday 5pm over the weekend\n",
         "      reason: runbook - no promotions from Friday 5pm over the weekend\n"
         "    - start: Wed 12:00\n      end: Wed 13:00\n"),
    )
    code, out, err = _run(cli.diff, DEFAULT, new)
    assert code == 0 and err == ""
    lines = [line.strip() for line in out.splitlines()[1:]]
    assert "phase 1 duration 10m → 5m" in lines
    assert "p99 latency normal threshold 500ms → 800ms (criterion latency_p99 of phase 2)" in lines
    assert "alpha 1% → 0.5%" in lines
    assert "minimum requests per phase 200 → 500" in lines
    assert "phase 3 no longer requires no_alerts" in lines
    assert "added freeze window Wed 12:00–Wed 13:00" in lines
    assert out.splitlines()[0].endswith(f"{len(lines)} differences")
    # And the other way round.
    _, back, _ = _run(cli.diff, new, DEFAULT)
    assert "removed freeze window Wed 12:00–Wed 13:00" in back and "alpha 0.5% → 1%" in back


def test_diff_of_schedule_and_overrides(tmp_path: Path) -> None:
    old = _variant(tmp_path, "old.yaml", ("overrides: []", "overrides:\n  - match: {service: a}\n"
                                          "    policy: {evidence: {min_requests: 10}}\n"))
    new = _variant(tmp_path, "new.yaml",
                   ("  - name: phase 3                # runbook \"Phase 3\"\n    traffic: 50%",
                    "  - name: phase 3                # runbook \"Phase 3\"\n    traffic: 60%"),
                   ("overrides: []", "overrides:\n  - match: {service: a}\n"
                    "    policy: {evidence: {min_requests: 20}}\n  - match: {service: b}\n    policy: {}\n"))
    _, out, _ = _run(cli.diff, old, new)
    assert "traffic schedule 5%→25%→50%→100% → 5%→25%→60%→100%" in out
    assert "phase 3 traffic 50% → 60%" in out
    assert "override for service a: evidence.min_requests 10 → 20" in out
    assert "added override for service b" in out


def test_diff_identical_and_invalid(tmp_path: Path) -> None:
    code, out, _ = _run(cli.diff, DEFAULT, DEFAULT)
    assert code == 0 and "no differences" in out
    bad = _variant(tmp_path, "bad.yaml", ("alpha: 1%", "alpha: 1"))
    code, out, err = _run(cli.diff, DEFAULT, bad)
    assert code == 2 and out == ""
    assert re.search(rf"^{re.escape(bad)}:\d+:\d+: comparison\.alpha: ", err, re.M)

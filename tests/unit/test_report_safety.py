"""The HTML report with hostile names and text: a `$` in a service or revision name is drawn as it
is (matplotlib would read `$...$` as mathtext and raise on an unknown `\\command`), and credentials
in reasons or captured error logs are redacted."""
from __future__ import annotations

from daemon.bootstrap import engine_factory

import json
import os
from pathlib import Path

import pytest

from policies import load_default_policy
from simulations.replay import replay_file
from simulations.report import render_report

CORPUS = Path(__file__).resolve().parents[2] / "simulations" / "recordings"


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def test_dollar_signs_in_service_and_revision_names(tmp_path: Path, policy) -> None:
    text = "\n".join((CORPUS / "errors-x5.jsonl").read_text().splitlines()[:40])  # a few minutes
    text = (text.replace("checkout-00042-cnry", r"rev-$\\frac{2x").replace("checkout-00041-base", "rev-$1^x$")
            .replace('"checkout"', r'"check$\\out$"'))
    path = tmp_path / "dollars.jsonl"
    path.write_text(text)
    result = replay_file(str(path), policy, keep_journal=True, build_engine=engine_factory("replay"))
    assert result.decisions and result.decisions[0].service == r"check$\out$"
    page = render_report(result, policy)
    assert page.count("<svg") == 3
    assert r"check$\out$: traffic by phase" in page  # the title, drawn literally
    assert r"rev-$1^x$" in page


def test_credentials_in_reasons_and_error_logs_are_redacted(tmp_path: Path, policy, monkeypatch) -> None:
    from simulations import report_plots
    for plot in ("traffic_timeline", "comparison", "evidence"):  # plots draw no reasons; skip their cost
        monkeypatch.setattr(report_plots, plot, lambda *args: "<svg></svg>")
    lines = (CORPUS / "errors-x5.jsonl").read_text().splitlines()
    first = next(json.loads(line) for line in lines if line.startswith("{"))
    pause = {"type": "command", "time": first["time"], "service": "checkout", "action": "pause",
             "by": "sre@olympuscloud.ai", "reason": "rotating creds, password=hunter22hunter"}
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    lines.insert(start + 1, json.dumps(pause))
    path = tmp_path / "secrets.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = replay_file(str(path), policy, keep_journal=True, build_engine=engine_factory("replay"))
    assert any("hunter22hunter" in d.reason for d in result.decisions)  # the core keeps the reason ...
    decision_id = result.decisions[-1].decision_id
    result.journal.append({"type": "decision-logs", "decision_id": decision_id, "service": "checkout",
                           "logs": {"patterns": [{"count": 3, "pattern": "GET /x?api_key=sk9Secret1 failed"}]}})
    result.journal.append({"type": "decision-logs", "decision_id": decision_id, "service": "checkout",
                           "logs": {"raw": "Authorization: Bearer tok-1234567890"}})
    page = render_report(result, policy)
    for secret in ("hunter22hunter", "sk9Secret1", "tok-1234567890"):  # ... the report does not
        assert secret not in page
    assert "password=[REDACTED]" in page and "api_key=[REDACTED]" in page

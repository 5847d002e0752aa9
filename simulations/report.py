"""`rollbackd replay REC --report out.html`: one self-contained HTML file about one replay.

`daemon.cli.cmd_replay` calls `write_report(result, policy, path)` with a `ReplayResult` replayed
with `keep_journal=True`. Per service: the traffic timeline by phase with decision markers; canary
vs baseline (error rate with 95% bands, p50/p99 latency, memory); each detector's evidence over
time against its threshold; the decision records with every criterion; captured error-log
patterns when the journal has them; and, once, the policy in effect. Plots are inline SVG
(`simulations.report_plots`); there is no script, stylesheet or font to fetch, so the file opens
offline. The same replay gives the same bytes. Every text shown is redacted (`daemon.core.redact`).
"""
from __future__ import annotations

import html
import json
import os
from typing import Any

from daemon.core.timefmt import format_rfc3339
from daemon.core.redact import redact
from simulations import report_plots
from simulations.report_data import ServiceData, collect
from simulations.whatif import deciding_criteria

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#212529;
 max-width:1250px}
h1{font-size:22px;margin-bottom:4px}
h2{font-size:18px;border-bottom:2px solid #dee2e6;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin-top:22px} .muted{color:#868e96} .plot svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border:1px solid #dee2e6;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f1f3f5} .promote{color:#2b8a3e;font-weight:600} .rollback{color:#c92a2a;font-weight:600}
.hold,.wait{color:#e67700;font-weight:600} .halt{color:#862e9c;font-weight:600}
.outcome{display:inline-block;padding:2px 8px;border-radius:10px;background:#f1f3f5;font-weight:600}
details{margin:2px 0} summary{cursor:pointer}
pre{background:#f8f9fa;padding:10px;overflow:auto;font-size:11px}
"""
# A rollback decision leaves the rollout "rolling-back" until Cloud Run confirms it; replay's simulated
# Cloud Run confirms every write in the same step, so the decision's outcome is the rollback.
OUTCOME = {"completed": "promoted", "rolled-back": "rolled back", "rolling-back": "rolled back", "halted": "halted"}


def _e(text: Any) -> str:
    """Escaped for HTML, credentials redacted: a recording's reasons and error logs are free text."""
    return html.escape(redact(str(text)))


def write_report(result: Any, policy: Any, path: str) -> None:
    text = render_report(result, policy)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def render_report(result: Any, policy: Any) -> str:
    services = collect(result)
    e = _e
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>rollbackd report: "
             f"{e(result.recording)}</title><style>{CSS}</style></head><body>",
             f"<h1>rollbackd replay report: {e(result.recording)}</h1>",
             f"<p class=muted>Policy <b>{e(str(getattr(policy, 'name', '')))}</b>; "
             f"{len(result.decisions)} decisions for {len(services)} service(s); "
             f"{len(getattr(result, 'rejected', []))} rejected input line(s).</p>"]
    if services:
        parts.append("<ul>" + "".join(f"<li><a href='#svc-{e(s.service)}'>{e(s.service)}</a>: "
                                      f"{e(_outcome(s))}</li>" for s in services) + "</ul>")
    for data in services:
        parts.append(_service_section(data, policy.for_service(data.name or data.service)
                                      if hasattr(policy, "for_service") else policy))
    if not services:
        parts.append("<p>No decisions: the recording started no rollout.</p>")
    parts.append(_rejected(result))
    parts.append("<h2 id=policy>Policy in effect</h2><pre>"
                 + e(json.dumps(policy.model_dump(mode="json"), indent=2, sort_keys=False)) + "</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _outcome(data: ServiceData) -> str:
    last = data.decisions[-1]
    return OUTCOME.get(last.status_after, f"in progress ({last.status_after}, {last.canary_percent_after}%)")


def _service_section(data: ServiceData, policy: Any) -> str:
    e = _e
    timeline = report_plots.traffic_timeline(data)
    comparison = report_plots.comparison(data, policy)
    out = [f"<h2 id='svc-{e(data.service)}'>{e(data.service)} "
           f"<span class=outcome>{e(_outcome(data))}</span></h2>",
           f"<p>canary <b>{e(data.canary)}</b> against baseline <b>{e(data.baseline)}</b></p>",
           "<h3>Traffic by phase</h3>", f"<div class='plot timeline'>{timeline}</div>",
           "<h3>Canary vs baseline</h3>", f"<div class='plot comparison'>{comparison}</div>"]
    evidence = report_plots.evidence(data)
    out.append("<h3>Detector evidence over time</h3>")
    out.append(f"<div class='plot evidence'>{evidence}</div>" if evidence else
               "<p class=muted>No minute was evaluated (no evidence recorded).</p>")
    out.append("<h3>Decisions</h3>")
    out.append(_decision_table(data))
    out.append(_logs(data))
    return "\n".join(out)


def _decision_table(data: ServiceData) -> str:
    e = _e
    rows = ["<table class=decisions><tr><th>#</th><th>time</th><th>action</th><th>phase</th><th>traffic</th>"
            "<th>reason</th><th>criteria</th></tr>"]
    for number, d in enumerate(data.decisions, start=1):
        deciding = {c.name for c in deciding_criteria(d)}
        criteria = "".join(
            f"<div>{'<b>' if c.name in deciding else ''}{e(c.name)}: {e(c.verdict.outcome.value)}"
            f"{'</b>' if c.name in deciding else ''} <span class=muted>{e(_numbers(c))}</span></div>"
            for c in d.criteria)
        block = (f"<details><summary>{len(d.criteria)} criteria</summary>{criteria}</details>"
                 if d.criteria else "")
        rows.append(f"<tr><td>{number}</td><td>{e(format_rfc3339(d.time))}</td>"
                    f"<td class='{e(d.action)}'>{e(d.action)}</td><td>{d.phase}</td>"
                    f"<td>{d.canary_percent_before}% → {d.canary_percent_after}%</td><td>{e(d.reason)}</td>"
                    f"<td>{block}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _numbers(c: Any) -> str:
    v = c.verdict

    def f(x: Any) -> str:
        return "n/a" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))
    return f"observed {f(v.observed)}, statistic {f(v.statistic)} / threshold {f(v.threshold)} → {c.action}"


def _logs(data: ServiceData) -> str:
    if not data.logs:
        return ("<h3>Captured error logs</h3><p class=muted>None captured in this recording "
                "(the live daemon captures them on rollback; replay does not call Cloud Logging).</p>")
    e = _e
    out = ["<h3>Captured error logs</h3>"]
    for record in data.logs:
        logs = record.get("logs") or {}
        out.append(f"<p>for decision {e(str(record.get('decision_id')))}</p>")
        patterns = logs.get("patterns") if isinstance(logs, dict) else None
        if isinstance(patterns, list) and patterns:
            cells = [(p.get("count", ""), p.get("pattern", p.get("message", p))) if isinstance(p, dict)
                     else ("", p) for p in patterns]
            out.append("<table><tr><th>count</th><th>pattern</th></tr>" + "".join(
                f"<tr><td>{e(str(count))}</td><td>{e(str(text))}</td></tr>" for count, text in cells)
                + "</table>")
        else:
            out.append(f"<pre>{e(json.dumps(logs, indent=1, sort_keys=True)[:20000])}</pre>")
    return "\n".join(out)


def _rejected(result: Any) -> str:
    rejected = getattr(result, "rejected", [])
    if not rejected:
        return ""
    e = _e
    return ("<h2>Rejected input lines</h2><table><tr><th>line</th><th>reason</th></tr>"
            + "".join(f"<tr><td>{n}</td><td>{e(r.reason)}</td></tr>" for n, r in rejected) + "</table>")

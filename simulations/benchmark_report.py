"""The benchmark's human outputs: DIR/report.md (a table and the targets) and DIR/ttd.png.

Called by `simulations.benchmark.run` with the rows it wrote to results.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

METHOD_ORDER = ("oracle", "rollbackd", "kayenta", "kayenta-every-minute", "flagger", "naive")


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | method | runs | false rollbacks (CP upper 95%) | detected | TTD median | TTD p90 "
            "| × oracle | oracle analytic | harm (requests) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        frr = "–" if r["false_rollback_rate"] is None else (
            f"{_fmt(r['false_rollback_rate'], True)} ({_fmt(r['clopper_pearson_upper95'], True)})")
        lines.append(f"| {r['scenario']} | {r['method']} | {r['runs']} | {frr} | {_fmt(r['detection_rate'], True)} "
                     f"| {_fmt(r['ttd_median_min'])} | {_fmt(r['ttd_p90_min'])} | {_fmt(r['oracle_ratio'])} "
                     f"| {_fmt(r['oracle_analytic_min'])} | {_fmt(r['harm_requests'])} |")
    return "\n".join(lines)


def write_report(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    text = [
        "# Detection benchmark",
        "",
        f"Mode **{meta['mode']}**, seed {meta['seed']}, {meta['workers']} workers, {meta['elapsed_s']} s. "
        f"Runs per scenario: {meta['plan']}. Rollout: the runbook schedule (5% 10 min, 25% 15 min, "
        f"50% 15 min), {meta['horizon_min']} minutes of data; `rollbackd` uses {meta['policy']} through "
        f"`{meta['rollbackd_path']}`.",
        "",
        "TTD is minutes of data from the regression's onset to the rollback, including visibility delay, "
        "over detected runs. Harm is the mean expected excess bad canary requests (5xx or slower than "
        "500 ms) served before the rollback or the end of the rollout. False rollbacks apply to A/A "
        "scenarios (kind `aa`); the Clopper–Pearson bound is the upper end of the two-sided 95% interval.",
        "",
        table(rows),
        "",
    ]
    path.write_text("\n".join(text))


def write_plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [r["scenario"] for r in rows if r["method"] == "oracle" and r["kind"] != "aa"]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    markers = dict(zip(METHOD_ORDER, "o*sDv^"))
    for offset, method in enumerate(METHOD_ORDER):
        xs, ys, lo, hi = [], [], [], []
        for i, name in enumerate(scenarios):
            row = next((r for r in rows if r["scenario"] == name and r["method"] == method), None)
            if row is None or row["ttd_median_min"] is None:
                continue
            xs.append(i + (offset - 2.5) * 0.12)
            ys.append(max(row["ttd_median_min"], 0.5))
            lo.append(0.0)
            hi.append(max((row["ttd_p90_min"] or row["ttd_median_min"]) - row["ttd_median_min"], 0.0))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=markers[method], label=method, capsize=2, markersize=6)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("time to detect, minutes of data (median, bar to p90)")
    ax.set_title("Time to detect per regression scenario and method")
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

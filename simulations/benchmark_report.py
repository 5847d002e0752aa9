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


def _ttd(r: dict[str, Any], key: str) -> str:
    if r["detection_rate"] is None:
        return "–"
    return "never" if r[key] is None else _fmt(r[key])


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | method | runs | false rollbacks (CP upper 95%) | detected | TTD median | TTD p90 "
            "| × oracle | TTD median, detected only | oracle analytic | harm (requests) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        frr = "–" if r["false_rollback_rate"] is None else (
            f"{_fmt(r['false_rollback_rate'], True)} ({_fmt(r['clopper_pearson_upper95'], True)})")
        lines.append(f"| {r['scenario']} | {r['method']} | {r['runs']} | {frr} | {_fmt(r['detection_rate'], True)} "
                     f"| {_ttd(r, 'ttd_median_min')} | {_ttd(r, 'ttd_p90_min')} | {_fmt(r['oracle_ratio'])} "
                     f"| {_fmt(r.get('ttd_median_detected_min'))} | {_fmt(r['oracle_analytic_min'])} "
                     f"| {_fmt(r['harm_requests'])} |")
    return "\n".join(lines)


def write_report(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any],
                 closed_rows: list[dict[str, Any]] | None = None) -> None:
    text = [
        "# Detection benchmark",
        "",
        f"Mode **{meta['mode']}**, seed {meta['seed']}, {meta['workers']} workers, {meta['elapsed_s']} s. "
        f"Runs per scenario: {meta['plan']}. Rollout: the runbook schedule (5% 10 min, 25% 15 min, "
        f"50% 15 min), {meta['horizon_min']} minutes of data; `rollbackd` uses {meta['policy']} through "
        f"`{meta['rollbackd_path']}`.",
        "",
        "TTD is minutes from the regression's onset to the rollback decision. Every method is timed the "
        "same way: a decision on a data minute is made when that minute's points are visible (its end "
        "plus the later arm's visibility delay); `rollbackd` is timed by the replay's virtual clock when "
        "the engine decides. Medians and p90 are **censored**: a run not detected within the rollout "
        "counts as never, so a median reads \"never\" when fewer than half the runs are detected; the "
        "median over detected runs only is shown for reference. The **oracle** is one-sided: the "
        "likelihood ratio of the true parameters on the same minutes, rolling back when it reaches "
        "log(1/0.01); it never stops by accepting H0, and its median is over all runs (censored). "
        "× oracle is the ratio of censored medians; \"oracle analytic\" is the minute at which the "
        "oracle's expected log-likelihood ratio reaches log(1/0.01). Harm is the mean expected "
        "excess bad canary requests (5xx or slower than 500 ms) served before the rollback or the end "
        "of the rollout. False rollbacks apply to A/A scenarios (kind `aa`); the Clopper–Pearson "
        "bound is the upper end of the two-sided 95% interval.",
        "",
        table(rows),
        "",
    ]
    if closed_rows:
        from simulations.benchmark_loop import closed_table

        text += [
            "## Closed loop",
            "",
            "`rollbackd` with its own traffic decisions feeding the simulator (`simulations.benchmark_loop`): "
            "a hold keeps the canary at its share, a rollback sends it nothing; runs end at the rollback, "
            "the promotion to 100% or minute 60. Exposure is the canary's traffic share × minutes served "
            "(1.0 = one minute of all traffic); canary 5xx served and excess bad requests are per run.",
            "",
            closed_table(closed_rows),
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

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
        "## Issue 13's targets on this run",
        "",
        targets_markdown(rows, meta.get("commit")),
        "",
        "## All methods",
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


# --- issue 13's targets, computed from one run's rows --------------------------------------------
HEADLINE_ERRORS = ("S4-errors-x2", "S4-errors-x5", "S4-errors-x20", "S4-errors-x2-1000rps", "S5-outage")


def _row(rows: list[dict[str, Any]], scenario: str, method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == scenario and r["method"] == method), None)


def _minutes(value: float | None) -> float:
    return float("inf") if value is None else float(value)


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers) for each of issue 13's targets that one run can show."""
    out: list[tuple[str, bool, str]] = []
    aa = [r for r in rows if r["method"] == "rollbackd" and r["false_rollback_rate"] is not None]
    bad = [r for r in aa if r["false_rollback_rate"] > 0.01 or r["clopper_pearson_upper95"] > 0.013]
    worst = max(aa, key=lambda r: r["clopper_pearson_upper95"], default=None)
    out.append(("False rollbacks <= 1% with Clopper-Pearson upper <= 1.3% on every A/A scenario", not bad and bool(aa),
                "; ".join(f"{r['scenario']} {100 * r['false_rollback_rate']:.2f}% (<= "
                          f"{100 * r['clopper_pearson_upper95']:.2f}%, n={r['runs']})" for r in bad)
                or (f"all met; worst upper bound {worst['scenario']} {100 * worst['clopper_pearson_upper95']:.2f}%"
                    if worst else "no A/A rows")))
    ratios = []
    for name in HEADLINE_ERRORS:
        r = _row(rows, name, "rollbackd")
        if r is not None:
            ratios.append((name, r["oracle_ratio"], r["ttd_median_min"], _row(rows, name, "oracle")["ttd_median_min"]))
    text = ", ".join(f"{n} {m} vs {o} ({'never' if x is None else f'{x:g}x'})" for n, x, m, o in ratios)
    finite = [x for _, x, _, _ in ratios if x is not None]
    total = sum(_minutes(m) for _, _, m, _ in ratios) / max(sum(_minutes(o) for _, _, _, o in ratios), 1e-9)
    out.append(("5xx ratio >= 2 at >= 100 rps: <= 1.6x the oracle (sum of medians), none above 2x",
                len(finite) == len(ratios) and bool(ratios) and total <= 1.6 and max(finite) <= 2.0,
                f"{text}; sum of medians {total:.2f}x"))
    r = _row(rows, "S4-errors-x5", "rollbackd")
    if r is not None:
        out.append(("x5 at 100 rps within 6 minutes", _minutes(r["ttd_median_min"]) <= 6,
                    f"{r['ttd_median_min']} min (oracle {_row(rows, 'S4-errors-x5', 'oracle')['ttd_median_min']})"))
    r = _row(rows, "S6-latency-tail", "rollbackd")
    if r is not None:
        out.append(("Latency tail within 1.5x of the fair oracle", r["oracle_ratio"] is not None
                    and r["oracle_ratio"] <= 1.5, f"{r['ttd_median_min']} min, {r['oracle_ratio']}x"))
    regressions = [r for r in rows if r["method"] == "rollbackd" and r["false_rollback_rate"] is None]
    slow_kayenta, not_faster = [], []
    for r in regressions:
        ours = _minutes(r["ttd_median_min"])
        kp = _minutes(_row(rows, r["scenario"], "kayenta")["ttd_median_min"])
        km = _minutes(_row(rows, r["scenario"], "kayenta-every-minute")["ttd_median_min"])
        if not (kp >= 3.5 * ours and ours < float("inf")):
            slow_kayenta.append(f"{r['scenario']} {r['ttd_median_min'] or 'never'} vs "
                                f"{'never' if kp == float('inf') else f'{kp:g}'}")
        if not ours < km:
            not_faster.append(f"{r['scenario']} {r['ttd_median_min'] or 'never'} vs "
                              f"{'never' if km == float('inf') else f'{km:g}'}")
    out.append((">= 3.5x faster than per-phase Kayenta on every regression scenario", not slow_kayenta,
                "missed on: " + "; ".join(slow_kayenta) if slow_kayenta else "all met"))
    out.append(("Faster than Kayenta every minute on every regression scenario", not not_faster,
                "missed on: " + "; ".join(not_faster) if not_faster else "all met"))
    return out


def targets_markdown(rows: list[dict[str, Any]], commit: str | None = None) -> str:
    lines = ["| target | met | numbers |", "|---|---|---|"]
    for name, met, numbers in targets(rows):
        lines.append(f"| {name} | {'**met**' if met else '**missed**'} | {numbers} |")
    if commit:
        lines.append(f"\nFrom one run at commit {commit}.")
    return "\n".join(lines)


def readme_table(rows: list[dict[str, Any]], closed_rows: list[dict[str, Any]] | None = None) -> str:
    """The README's one-line-per-scenario table: rollbackd (and closed loop) beside the baselines."""
    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "–"
        if r["false_rollback_rate"] is not None:
            return f"{100 * r['false_rollback_rate']:.2f}% (≤{100 * r['clopper_pearson_upper95']:.2f}%, n={r['runs']})"
        if r["detection_rate"] is None:
            return "–"
        med = "never" if r["ttd_median_min"] is None else f"{r['ttd_median_min']:g}"
        ratio = f" ({r['oracle_ratio']:g}×)" if r["oracle_ratio"] is not None else ""
        return f"{100 * r['detection_rate']:.0f}%, {med}{ratio}"

    closed = {r["scenario"]: r for r in closed_rows or []}
    head = ("| scenario | rollbackd | closed loop | kayenta (per phase) | kayenta every minute | flagger | naive "
            "| oracle |")
    lines = [head, "|" + "---|" * 8]
    for name in dict.fromkeys(r["scenario"] for r in rows):
        oracle = _row(rows, name, "oracle")
        o = "–" if oracle is None or oracle["detection_rate"] is None else (
            "never" if oracle["ttd_median_min"] is None else f"{oracle['ttd_median_min']:g}")
        c = closed.get(name)
        ctext = "–" if c is None else _closed_cell(c)
        lines.append(f"| {name} | **{cell(_row(rows, name, 'rollbackd'))}** | {ctext} | "
                     f"{cell(_row(rows, name, 'kayenta'))} | {cell(_row(rows, name, 'kayenta-every-minute'))} | "
                     f"{cell(_row(rows, name, 'flagger'))} | {cell(_row(rows, name, 'naive'))} | {o} |")
    return "\n".join(lines)


def _closed_cell(c: dict[str, Any]) -> str:
    if c["false_rollback_rate"] is not None:
        head = f"{100 * c['false_rollback_rate']:.1f}% (n={c['runs']})"
    elif c["detection_rate"] is not None:
        med = "never" if c["ttd_median_min"] is None else f"{c['ttd_median_min']:g}"
        head = f"{100 * c['detection_rate']:.0f}%, {med}"
    else:
        return "–"
    return f"{head}, exp {c['exposure_min']}" + (f", 5xx {c['canary_5xx_served']}" if c["false_rollback_rate"] is None else "")


def main(argv: list[str] | None = None) -> int:
    """`python -m simulations.benchmark_report RESULTS.json [COMMIT]`: print the targets and the README table."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    data = json.loads(Path(args[0]).read_text())
    print(targets_markdown(data["rows"], args[1] if len(args) > 1 else None))
    print()
    print(readme_table(data["rows"], data.get("closed_loop_rows")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

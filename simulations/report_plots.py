"""Plots of a replay report as inline SVG (matplotlib, Agg backend, no network, deterministic bytes).

Called by `simulations.report` with one `report_data.ServiceData` at a time: the traffic timeline
by phase with decision markers, canary vs baseline (error rate with 95% bands, p50 and p99
latency, memory), and each detector's statistic over time against its threshold.
"""
from __future__ import annotations

import io
import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from simulations.report_data import ServiceData  # noqa: E402

CANARY, BASELINE = "#d9480f", "#1c7ed6"
ACTION_COLOURS = {"promote": "#2b8a3e", "rollback": "#c92a2a", "hold": "#e67700", "wait": "#868e96",
                  "resume": "#1971c2", "halt": "#862e9c", "supersede": "#495057", "refuse": "#495057"}
OUTCOME_COLOURS = {"pass": "#2b8a3e", "fail": "#c92a2a", "warn": "#e67700", "inconclusive": "#868e96",
                   "nodata": "#ced4da", "error": "#862e9c"}
PHASE_SHADES = ("#f1f3f5", "#e7f5ff", "#fff4e6", "#ebfbee", "#f8f0fc")
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "rollbackd-report", "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False}


def plain(text: str) -> str:
    """Text for matplotlib as it is: a `$` would start mathtext (and an unknown `\\cmd` in it raises
    while the figure is drawn), so service, revision and criterion names escape it."""
    return str(text).replace("$", r"\$")


def to_svg(fig: Any) -> str:
    """The figure as an <svg> element (no XML prolog, no timestamps: same input, same bytes)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)


def _time_axis(ax: Any) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.grid(True, color="#e9ecef", linewidth=0.6)


def _decision_lines(ax: Any, data: ServiceData) -> None:
    for d in data.decisions:
        if d.action in ("promote", "rollback", "hold", "halt"):
            ax.axvline(d.time, color=ACTION_COLOURS.get(d.action, "#495057"), linewidth=0.8, alpha=0.6,
                       linestyle="--")


def traffic_timeline(data: ServiceData) -> str:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(11, 2.6))
        points = data.traffic
        if points:
            end = max([points[-1][0]] + list(data.arms["canary"].times) + list(data.arms["baseline"].times))
            times = [p[0] for p in points] + [end]
            percents = [p[1] for p in points] + [points[-1][1]]
            ax.step(times, percents, where="post", color=CANARY, linewidth=2, label="canary traffic %")
            for start, stop, label, shade in _segments(points, end):
                ax.axvspan(start, stop, color=shade, zorder=0)
                ax.text(start + (stop - start) / 2, 104, label, ha="center", fontsize=8, color="#495057")
        for d in data.decisions:
            ax.scatter([d.time], [d.canary_percent_after], s=46, zorder=3,
                       color=ACTION_COLOURS.get(d.action, "#495057"), edgecolors="white", linewidths=0.8)
        for action, colour in ACTION_COLOURS.items():
            if any(d.action == action for d in data.decisions):
                ax.scatter([], [], s=46, color=colour, label=action)
        ax.set_ylim(-5, 112)
        ax.set_ylabel("canary traffic %")
        ax.set_title(f"{plain(data.service)}: traffic by phase, with decisions", loc="left")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        _time_axis(ax)
        return to_svg(fig)


TERMINAL_LABELS = {"rolled-back": ("rolled back", "#fff5f5"), "halted": ("halted", "#f8f0fc"),
                   "completed": ("100%: complete", "#ebfbee"), "superseded": ("superseded", "#f1f3f5")}


def _segments(points: list[tuple[Any, int, int, str]], end: Any) -> list[tuple[Any, Any, str, str]]:
    """Contiguous spans of one phase (or one terminal state) for shading and labels."""
    spans: list[list[Any]] = []
    for (start, _, phase, status) in points:
        held = " (held)" if status == "held" else ""
        shade_of_phase = PHASE_SHADES[phase % len(PHASE_SHADES)]
        label, shade = TERMINAL_LABELS.get(status, (f"phase {phase}{held}", shade_of_phase))
        if spans and spans[-1][2] == label:
            continue
        if spans:
            spans[-1][1] = start
        spans.append([start, end, label, shade])
    return [tuple(span) for span in spans if span[1] > span[0]]  # type: ignore[misc]


def _broken(times: list[Any], *columns: list[Any]) -> tuple[list[Any], ...]:
    """Insert a NaN row where minutes are missing, so lines and bands do not bridge a data gap."""
    out: tuple[list[Any], ...] = tuple([] for _ in range(len(columns) + 1))
    previous = None
    for row in zip(times, *columns):
        if previous is not None and (row[0] - previous).total_seconds() > 90:
            out[0].append(previous + (row[0] - previous) / 2)
            for column in out[1:]:
                column.append(math.nan)
        previous = row[0]
        for column, value in zip(out, row):
            column.append(math.nan if value is None else value)
    return out


def _plot_arm(ax: Any, arm: Any, values: list[Any], colour: str, label: str, scale: float = 1.0) -> None:
    if not any(v is not None for v in values):
        return
    times, ys = _broken(arm.times, values)
    ax.plot(times, [y * scale for y in ys], color=colour, linewidth=1.4, label=label, marker="o",
            markersize=2)


def comparison(data: ServiceData, policy: Any) -> str:
    canary, baseline = data.arms["canary"], data.arms["baseline"]
    km = policy.key_metrics
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, 2, figsize=(11, 6.4), sharex=True)
        ax = axes[0][0]
        for arm, colour, name in ((baseline, BASELINE, "baseline"), (canary, CANARY, "canary")):
            if any(lo is not None for lo in arm.error_low):
                times, lows, highs = _broken(arm.times, arm.error_low, arm.error_high)
                ax.fill_between(times, [x * 100 for x in lows], [x * 100 for x in highs], color=colour,
                                alpha=0.15, linewidth=0)
            _plot_arm(ax, arm, arm.error_rate, colour, f"{name} {plain(arm.revision)}", 100.0)
        ax.axhline(km.error_rate.normal * 100, color="#2b8a3e", linewidth=0.8, linestyle=":", label="normal")
        ax.axhline(km.error_rate.critical * 100, color="#c92a2a", linewidth=0.8, linestyle=":",
                   label="critical")
        ax.set_title("5xx error rate per minute (%), 95% bands", loc="left")
        ax.legend(frameon=False, fontsize=7)
        ax = axes[0][1]
        for arm, colour, name in ((baseline, BASELINE, "baseline"), (canary, CANARY, "canary")):
            _plot_arm(ax, arm, arm.p99_ms, colour, f"{name} p99")
        ax.axhline(km.latency_p99.normal, color="#2b8a3e", linewidth=0.8, linestyle=":", label="p99 normal")
        ax.set_title("p99 latency per minute (ms)", loc="left")
        ax.legend(frameon=False, fontsize=7)
        ax = axes[1][0]
        for arm, colour, name in ((baseline, BASELINE, "baseline"), (canary, CANARY, "canary")):
            _plot_arm(ax, arm, arm.p50_ms, colour, f"{name} p50")
        ax.set_title("p50 latency per minute (ms)", loc="left")
        ax.legend(frameon=False, fontsize=7)
        ax = axes[1][1]
        for arm, colour, name in ((baseline, BASELINE, "baseline"), (canary, CANARY, "canary")):
            _plot_arm(ax, arm, arm.memory, colour, f"{name} memory", 100.0)
        mem = km.memory_utilization
        memory_levels = ((mem.warning, "#e67700"), (mem.critical, "#c92a2a"))
        for level, colour in memory_levels:
            ax.axhline(level * 100, color=colour, linewidth=0.8, linestyle=":")
        ax.set_title("memory utilisation (%)", loc="left")
        ax.legend(frameon=False, fontsize=7)
        for row in axes:
            for ax in row:
                _decision_lines(ax, data)
                _time_axis(ax)
        fig.suptitle(f"{plain(data.service)}: canary vs baseline", x=0.01, ha="left")
        fig.tight_layout()
        return to_svg(fig)


def evidence(data: ServiceData) -> str | None:
    names = [n for n, s in data.criteria.items() if any(v is not None for v in s.statistic)]
    if not names:
        return None
    columns = 3
    rows = math.ceil(len(names) / columns)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, columns, figsize=(11, 2.3 * rows), sharex=True, squeeze=False)
        for index, name in enumerate(names):
            ax = axes[index // columns][index % columns]
            s = data.criteria[name]
            points = [(t, v, o) for t, v, o in zip(s.times, s.statistic, s.outcome) if v is not None]
            log = any(v > 0 for _, v, _ in points) and max((v for _, v, _ in points), default=0) > 50
            ax.plot([p[0] for p in points], [_clip(p[1], log) for p in points], color="#343a40", linewidth=1)
            ax.scatter([p[0] for p in points], [_clip(p[1], log) for p in points], s=9, zorder=3,
                       color=[OUTCOME_COLOURS.get(p[2], "#495057") for p in points])
            thresholds = [(t, v) for t, v in zip(s.times, s.threshold) if v is not None and math.isfinite(v)]
            if thresholds:
                ax.step([t for t, _ in thresholds], [_clip(v, log) for _, v in thresholds], where="post",
                        color="#c92a2a", linestyle="--", linewidth=1)
            if log:
                ax.set_yscale("log")
            ax.set_title(plain(name) + (" (log)" if log else ""), loc="left", fontsize=9)
            _decision_lines(ax, data)
            _time_axis(ax)
        for index in range(len(names), rows * columns):
            axes[index // columns][index % columns].axis("off")
        fig.suptitle(f"{plain(data.service)}: each detector's statistic (dots coloured by verdict) "
                     "against its threshold (red dashes)", x=0.01, ha="left")
        fig.tight_layout()
        return to_svg(fig)


def _clip(value: float, log: bool) -> float:
    if math.isinf(value):
        return 1e12
    return max(value, 1e-3) if log else value

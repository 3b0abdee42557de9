"""Matplotlib figures of a run, as PNG bytes: one timeline per experiment, one RTO/RPO trend.

Every mark on a figure comes from a journal event (or from history.csv, which holds
values computed from journals), so a reader can trace each one back.  The figures are
drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly: no pyplot, no global
backend switch, nothing left open in the process that hosts pytest.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

from chaoskit.durations import format_duration
from chaoskit.journal import Event
from chaoskit.report.metrics import DR_SITE, dr_site_rpo_series, first_event

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from chaoskit.report.metrics import ExperimentResult

FAULT = "#d62728"
DETECTED = "#ff7f0e"
RECOVERY = "#9467bd"
RECOVERED = "#2ca02c"
REQUEST = "#1f77b4"
PROBE = "#17becf"
WRONG = "#8c564b"
METRIC_COLORS = {"ttd": DETECTED, "rto": RECOVERED, "rpo": "#7f7f7f"}
ERROR_BIN_S = 0.5
MIN_LATENCY_MS = 0.1  # log axis: a latency of 0 is drawn here


def _plain(text: str) -> str:
    """Journal text as literal figure text: '$' would start matplotlib math mode."""
    return text.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def timeline_png(start: Event, events: list[Event], result: ExperimentResult) -> bytes:
    """Latency and errors over time, the fault window, detection and recovery, TTD/RTO/RPO.

    Time 0 is the fault injection (the start of every TTD/RTO/RPO), or the experiment
    start when no fault was injected.
    """
    from matplotlib.figure import Figure

    fault = first_event(events, "fault.injected", start["t"])
    origin = fault["t"] if fault else start["t"]
    end_t = max((e["t"] for e in events), default=start["t"] + 1.0)
    x_min, x_max = start["t"] - origin, max(end_t - origin, start["t"] - origin + 1.0)
    x_max += 0.02 * (x_max - x_min)  # a mark on the last event stays visible

    # a DR site cut off gets a panel of its RPO: rising while recovery points queue
    rpo = _dr_site_rpo(events, fault) if fault is not None else []
    # a quality gate gets a panel of each version's score and the gate's verdict
    verdicts = [e for e in events if e["event"] == "quality.verdict"]
    extra = [p for p, shown in (("rpo", rpo), ("quality", verdicts)) if shown]
    ratios = [1.0, 3.0, 1.5] + [1.5] * len(extra)
    fig = Figure(figsize=(11, 6.2 + 1.4 * len(extra)))
    grid = fig.add_gridspec(
        len(ratios), 1, height_ratios=ratios, hspace=0.08, left=0.08, right=0.98, top=0.9,
        bottom=0.17,
    )  # fmt: skip
    ax_s = fig.add_subplot(grid[0])
    ax_l = fig.add_subplot(grid[1], sharex=ax_s)
    ax_e = fig.add_subplot(grid[2], sharex=ax_s)
    axes = [ax_s, ax_l, ax_e]
    if rpo:
        axes.append(fig.add_subplot(grid[len(axes)], sharex=ax_s))
        _rpo_panel(axes[-1], rpo)
    if verdicts:
        axes.append(fig.add_subplot(grid[len(axes)], sharex=ax_s))
        _quality_panel(axes[-1], verdicts, origin)
    verdict = result.verdict.upper()
    faults = result.faults or result.fault or "none"
    title = _plain(f"{result.name}\nfault: {faults}  -  verdict: {verdict}")
    ax_s.set_title(title, fontsize=10, loc="left", color=FAULT if verdict == "FAIL" else "black")

    _latency(ax_l, events, origin)
    _errors(ax_e, events, origin, x_min, x_max)
    marks = _marks(events, fault, origin, x_max, result)
    for ax in axes:
        for x0, x1 in marks["window"]:
            ax.axvspan(x0, x1, color=FAULT, alpha=0.07, lw=0)
        for x, color, style, width in marks["lines"]:
            ax.axvline(x, color=color, ls=style, lw=width)
    _labels(ax_l, marks["labels"], result)
    ax_s.set_xlim(x_min, x_max)
    _objectives_strip(ax_s, result, fault is not None, x_min, x_max)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel(
        "seconds since the fault was injected" if fault else "seconds since the experiment started"
    )
    _legend(fig)
    return _png(fig)


def _latency(ax: Axes, events: list[Event], origin: float) -> None:
    for kind, color, fail_marker in (("request", REQUEST, "x"), ("probe", PROBE, "+")):
        for ok in (True, False):
            xs = [e["t"] - origin for e in events if e["event"] == kind and bool(e.get("ok")) is ok]
            ys = [
                max(float(e.get("latency_s") or 0.0) * 1000, MIN_LATENCY_MS)
                for e in events
                if e["event"] == kind and bool(e.get("ok")) is ok
            ]
            if not xs:
                continue
            if ok:
                ax.scatter(xs, ys, s=5, color=color, alpha=0.55, lw=0)
            else:
                ax.scatter(xs, ys, s=18, color=FAULT, marker=fail_marker, lw=1)
    _plain_log_axis(ax)
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="major", alpha=0.3)


def _plain_log_axis(ax: Axes) -> None:
    """Log scale labelled 0.5, 1, 10, 1000 (not 4x10^1); minor labels on narrow ranges."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    decades = math.log10(high / max(low, 1e-9))
    if decades < 2:  # few major ticks: label some minor ones too
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0) if decades < 1 else (2.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _errors(ax: Axes, events: list[Event], origin: float, x_min: float, x_max: float) -> None:
    from matplotlib.ticker import MaxNLocator

    # bins aligned on the fault (x = 0), so no bin mixes errors from before and after it
    first = math.floor(x_min / ERROR_BIN_S) * ERROR_BIN_S
    n_bins = max(1, math.ceil((x_max - first) / ERROR_BIN_S))
    series = {
        "failed requests": [0.0] * n_bins,
        "failed probes": [0.0] * n_bins,
        "wrong predictions": [0.0] * n_bins,
    }
    for e in events:
        if e["event"] not in ("request", "probe"):
            continue
        i = min(n_bins - 1, max(0, int((e["t"] - origin - first) // ERROR_BIN_S)))
        if not e.get("ok"):
            series[f"failed {e['event']}s"][i] += 1 / ERROR_BIN_S
        elif e["event"] == "request" and e.get("correct") is False:
            series["wrong predictions"][i] += 1 / ERROR_BIN_S
    edges = [first + i * ERROR_BIN_S for i in range(n_bins + 1)]
    bottom = [0.0] * n_bins
    for label, color in (
        ("failed requests", FAULT), ("failed probes", DETECTED), ("wrong predictions", WRONG)
    ):  # fmt: skip
        values = series[label]
        if any(values):
            top = [b + v for b, v in zip(bottom, values, strict=True)]
            ax.stairs(top, edges, baseline=bottom, fill=True, color=color, alpha=0.8, lw=0)
            bottom = top
    ax.set_ylim(0, max(1.0, max(bottom) * 1.15))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.set_ylabel("errors / s")
    ax.grid(True, axis="y", alpha=0.3)


def _dr_site_rpo(events: list[Event], fault: Event) -> list[tuple[float, float]]:
    """(seconds since the fault, DR-site RPO), if the DR site was cut off after the fault."""
    if first_event(events, "detected", fault["t"], service=DR_SITE) is None:
        return []
    until = max(e["wall"] for e in events)
    series = dr_site_rpo_series(events, until, since_wall=min(e["wall"] for e in events))
    return [(wall - fault["wall"], rpo) for wall, rpo in series]


def _rpo_panel(ax: Axes, series: list[tuple[float, float]]) -> None:
    ax.plot([x for x, _ in series], [r for _, r in series], color=METRIC_COLORS["rpo"], lw=1.4)
    ax.set_ylim(0, max(1.0, max(r for _, r in series) * 1.15))
    ax.set_ylabel("DR-site RPO (s)")
    ax.grid(True, axis="y", alpha=0.3)


def _quality_panel(ax: Axes, verdicts: list[Event], origin: float) -> None:
    """Each judged version's score when the gate judged it: promoted (green), refused
    (red; a version whose outputs were not finite sits at the top, marked x) or
    inconclusive (grey, at the bottom), with its version number."""
    metric = next((e.get("metric") for e in verdicts if e.get("metric")), "score")
    errors = metric == "mse"  # errors span decades: a log axis; an accuracy is 0..1
    scores = [float(e["score"]) for e in verdicts if e.get("score") is not None]
    top = max(scores, default=1.0) * 2.0 if errors else 1.05
    bottom = min(scores, default=1.0) / 2.0 if errors else -0.05
    colors = {"promote": RECOVERED, "breach": FAULT}
    for e in verdicts:
        x = e["t"] - origin
        decision = e.get("decision")
        if e.get("score") is not None:
            y, marker = float(e["score"]), "o"
        else:
            y, marker = (top, "x") if decision == "breach" else (bottom, "s")
        ax.scatter([x], [y], s=30, marker=marker, color=colors.get(str(decision), PROBE), zorder=3)
        ax.annotate(f"v{e.get('version')}", (x, y), xytext=(3, 3), textcoords="offset points",
                    fontsize=7)  # fmt: skip
    if errors:
        ax.set_yscale("log")
        ax.set_ylim(bottom / 1.5, top * 1.5)
    else:
        ax.set_ylim(bottom - 0.05, top + 0.05)
    ax.set_ylabel(_plain(f"quality ({metric})"))
    ax.grid(True, axis="y", alpha=0.3)


def _marks(
    events: list[Event],
    fault: Event | None,
    origin: float,
    x_max: float,
    result: ExperimentResult,
) -> dict[str, list[Any]]:
    """Fault windows and vertical lines: (x, colour, style, width) per line.

    Every injection, detection, recovery start and confirmed steady state after the first
    fault gets a thin line; the moments that define TTD and RTO (taken from the computed
    result, so figure and table can never disagree) get a thick one.
    """
    marks: dict[str, list[Any]] = {"window": [], "lines": [], "labels": []}
    if fault is None:
        return marks
    reverted_used: set[int] = set()
    for injected in (e for e in events if e["event"] == "fault.injected"):
        reverted = next(
            (i for i, e in enumerate(events) if e["event"] == "fault.reverted"
             and e["t"] >= injected["t"] and i not in reverted_used
             and e.get("fault", injected.get("fault")) == injected.get("fault")),
            None,
        )  # fmt: skip
        end = x_max
        if reverted is not None:
            reverted_used.add(reverted)
            end = events[reverted]["t"] - origin
        marks["window"].append((injected["t"] - origin, end))
        marks["labels"].append((injected["t"] - origin, str(injected.get("fault"))))
    kinds = {"fault.injected": (FAULT, "-"), "detected": (DETECTED, "-"),
             "recovery.started": (RECOVERY, ":")}  # fmt: skip
    for e in events:
        if e["t"] < fault["t"]:
            continue
        if e["event"] in kinds:
            marks["lines"].append((e["t"] - origin, *kinds[e["event"]], 1.0))
        elif e["event"] in ("healed", "failback") or (
            e["event"] == "steady_state.ok" and e.get("phase") == "recovery"
        ):  # a confirmation: of the stack, or of one replica by its own probes
            marks["lines"].append((e["t"] - origin, RECOVERED, "-", 1.0))
    if result.ttd_s is not None and math.isfinite(result.ttd_s):
        marks["lines"].append((result.ttd_s, DETECTED, "-", 2.2))
    if result.rto_s is not None and math.isfinite(result.rto_s):
        marks["lines"].append((result.rto_s, RECOVERED, "-", 2.2))
    return marks


def _labels(ax: Axes, windows: list[tuple[float, str]], result: ExperimentResult) -> None:
    """Name each fault window (at its start, top) and each service and signal detected
    (at its first detection, bottom): a detection of another service than the faulted
    one shows where it happened."""
    where = ax.get_xaxis_transform()  # x in seconds, y in axes fractions
    for i, (x, kind) in enumerate(windows):
        ax.text(x, 0.97 - 0.09 * i, f" {_plain(kind)}", transform=where, va="top",
                fontsize=7.5, color=FAULT)  # fmt: skip
    for i, d in enumerate(result.detections):
        ax.text(d["after_s"], 0.03 + 0.09 * i, f" {_plain(d['service'])}:{_plain(d['signal'])}",
                transform=where, va="bottom", fontsize=7.5, color=DETECTED)  # fmt: skip


def _objectives_strip(
    ax: Axes, result: ExperimentResult, faulted: bool, x_min: float, x_max: float
) -> None:
    """One bar per objective, from the fault to the measured moment, labelled with budget."""
    rows = [("TTD", result.ttd_s, result.ttd_budget_s, "never detected")]
    rows.append(("RTO", result.rto_s, result.rto_budget_s, "steady state never restored"))
    if result.rpo_s is not None or result.rpo_budget_s is not None:
        rows.append(("RPO", result.rpo_s, result.rpo_budget_s, "nothing was restored"))
    span = x_max - x_min
    for y, (label, value, budget, missing) in enumerate(rows):
        color = METRIC_COLORS[label.lower()]
        budget_text = f" (budget {format_duration(budget)})" if budget is not None else ""
        breached = budget is not None and (value is None or value > budget)
        text_color = FAULT if breached or value is None else "black"
        if not faulted:
            ax.text(x_min + 0.01 * span, y, f"{label}: no fault was injected", va="center",
                    fontsize=8.5, color=FAULT)  # fmt: skip
            continue
        if value is None or math.isinf(value):
            why = "unbounded, " + missing if value is not None else "not measured, " + missing
            ax.text(0.01 * span, y, f"{label} {why}{budget_text}", va="center", fontsize=8.5,
                    color=FAULT)  # fmt: skip
            continue
        left, width = (-value, value) if label == "RPO" else (0.0, value)
        clipped = left < x_min
        if clipped:
            left, width = x_min, -x_min
        ax.barh(y, width, left=left, height=0.55, color=color, alpha=0.85)
        text = f"{label} {format_duration(value)}{budget_text}"
        if label == "RPO" and result.rpo_steps is not None:
            text += f", {result.rpo_steps} steps"
        if clipped:
            text += " (starts off the left edge)"
        mark = budget if budget is not None and label != "RPO" and budget <= x_max else None
        if mark is not None:
            ax.plot([mark, mark], [y - 0.42, y + 0.42], color="#333333", ls="--", lw=1.4,
                    zorder=4)  # fmt: skip
        # the label goes right of the bar and of its budget mark; near the right edge it
        # goes inside the bar, so it never leaves the figure or hides the budget mark
        anchor = 0.0 if label == "RPO" else max(value, value if mark is None else mark)
        x, align = _label_place(text, anchor, (left, left + width), mark, x_min, x_max)
        ax.text(x, y, text, va="center", ha=align, fontsize=8.5, color=text_color,
                fontweight="bold" if breached else "normal", zorder=5,
                bbox={"facecolor": "white", "alpha": 0.85, "lw": 0, "pad": 1})  # fmt: skip
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8.5)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _label_place(
    text: str,
    anchor: float,
    bar: tuple[float, float],
    budget: float | None,
    x_min: float,
    x_max: float,
) -> tuple[float, str]:
    """Where a bar label fits: right of *anchor*, else inside the bar; never over the budget."""
    span = x_max - x_min
    pad, width = 0.01 * span, len(text) * 0.0062 * span  # 8.5 pt text on an 11-inch axis
    bar_lo, bar_hi = bar
    candidates = [
        (anchor + pad, "left", x_min, x_max),
        (bar_lo + pad, "left", bar_lo, bar_hi),
        (bar_hi - pad, "right", bar_lo, bar_hi),
        (anchor - pad, "right", x_min, x_max),  # left of the bar's end, over the axis
    ]
    for x, align, low, high in candidates:
        lo, hi = (x, x + width) if align == "left" else (x - width, x)
        covers_budget = budget is not None and lo - pad / 2 < budget < hi + pad / 2
        if lo >= low and hi <= high and not covers_budget:
            return x, align
    return candidates[0][:2]


def _legend(fig: Figure) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], ls="", marker="o", ms=4, color=REQUEST, label="request ok"),
        Line2D([], [], ls="", marker="o", ms=4, color=PROBE, label="probe ok"),
        Line2D([], [], ls="", marker="x", ms=6, color=FAULT, label="request failed"),
        Line2D([], [], ls="", marker="+", ms=7, color=FAULT, label="probe failed"),
        Patch(color=FAULT, alpha=0.15, label="fault window"),
        Line2D([], [], color=FAULT, label="fault injected"),
        Line2D([], [], color=DETECTED, lw=2.2, label="detected (thick: TTD)"),
        Line2D([], [], color=RECOVERY, ls=":", label="recovery started"),
        Line2D([], [], color=RECOVERED, lw=2.2, label="steady state back (thick: RTO)"),
        Line2D([], [], color="#333333", ls="--", label="budget"),
        Patch(color=FAULT, alpha=0.8, label="failed requests"),
        Patch(color=DETECTED, alpha=0.8, label="failed probes"),
        Patch(color=WRONG, alpha=0.8, label="wrong predictions"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip


def trend_png(history: pd.DataFrame, name: str, run_id: str, *, last: int = 30) -> bytes | None:
    """TTD/RTO/RPO of experiment *name* across the last *last* runs; None before 2 runs."""
    import pandas as pd
    from matplotlib.figure import Figure

    rows = history[history["name"] == name]
    if rows.empty:
        return None
    rows = rows.sort_values("started_wall", na_position="first").drop_duplicates(
        "run_id", keep="last"
    )
    rows = rows.tail(last)
    if len(rows) < 2:
        return None  # one point is not a trend
    runs = [str(r) for r in rows["run_id"]]
    xs = list(range(len(runs)))
    fig = Figure(figsize=(11, 3.0))
    fig.subplots_adjust(left=0.08, right=0.83, top=0.88, bottom=0.3)
    ax = fig.add_subplot()
    if run_id in runs:
        i = runs.index(run_id)
        ax.axvspan(i - 0.4, i + 0.4, color="#ffd54f", alpha=0.35, lw=0, label="this run")
    finite: list[float] = []
    for metric, color in METRIC_COLORS.items():
        values = pd.to_numeric(rows[f"{metric}_s"], errors="coerce").astype(float).tolist()
        budgets = pd.to_numeric(rows[f"{metric}_budget_s"], errors="coerce").astype(float)
        budget = float(budgets.iloc[-1])
        if all(math.isnan(v) for v in values) and math.isnan(budget):
            continue
        plotted = [v if math.isfinite(v) else math.nan for v in values]
        ax.plot(xs, plotted, marker="o", ms=4, color=color, label=metric.upper())
        finite += [v for v in plotted if not math.isnan(v) and v > 0]
        faulted = [isinstance(f, str) and bool(f) for f in rows["fault"]]
        for marker, label, picked in (
            ("^", "unbounded", [x for x, v in zip(xs, values, strict=True) if math.isinf(v)]),
            ("x", "not measured", [
                x for x, v, f in zip(xs, values, faulted, strict=True) if math.isnan(v) and f
            ]),
        ):  # fmt: skip
            if picked and (label == "unbounded" or metric != "rpo"):
                ax.plot(picked, [0.97] * len(picked), ls="", marker=marker, ms=8, color=color,
                        transform=ax.get_xaxis_transform(), clip_on=False,
                        label=f"{metric.upper()} {label}")  # fmt: skip
        if not math.isnan(budget):
            ax.axhline(budget, color=color, ls="--", lw=1, alpha=0.8,
                       label=f"{metric.upper()} budget {format_duration(budget)}")  # fmt: skip
            finite.append(budget)
    if finite and max(finite) / max(min(finite), 1e-3) > 50:
        _plain_log_axis(ax)
    ax.set_xticks(xs, runs, rotation=25, ha="right", fontsize=7)
    for tick, verdict in zip(ax.get_xticklabels(), rows["verdict"], strict=True):
        if verdict != "pass":
            tick.set_color(FAULT)
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_ylabel("seconds")
    title = _plain(f"{name}: TTD / RTO / RPO by run (failed runs in red)")
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)

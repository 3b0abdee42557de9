"""report.html: one self-contained page (inline CSS, PNGs as data URIs, no script, no URL).

A report must open from a CI artifact, an air-gapped laptop or an e-mail attachment, so
nothing in it may point outside the file.  Every string that came from a journal is
escaped: experiment names, fault parameters and error messages are user-controlled.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from html import escape

from chaoskit.durations import format_duration
from chaoskit.journal import Event
from chaoskit.report.metrics import ExperimentResult, detections_text

NOISY = frozenset({"probe", "request"})
MAX_KEY_EVENTS = 80

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;word-break:break-all}
.meta{color:#666;font-size:13px;margin-bottom:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}table.summary{width:100%}
table.summary td:first-child{max-width:340px;overflow-wrap:anywhere}
table.summary td:last-child{min-width:140px}.wide{overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;white-space:nowrap}
.pass{color:#fff;background:#2e7d32;padding:1px 7px;border-radius:3px;font-weight:600}
.fail{color:#fff;background:#c62828;padding:1px 7px;border-radius:3px;font-weight:600}
.breach{color:#c62828;font-weight:600}.muted{color:#888}
.notes{background:#fff8e1;border:1px solid #ffcc80;padding:8px 12px;font-size:13px}
.reasons{margin:4px 0 8px;color:#c62828;font-size:13px}
section{border-top:2px solid #eee;margin-top:18px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
details{font-size:13px;margin:6px 0}td.details{font-family:monospace;font-size:12px;
word-break:break-all}
"""


@dataclass
class ExperimentView:
    """What the page shows for one experiment."""

    result: ExperimentResult
    start: Event
    events: list[Event]
    timeline_png: bytes | None
    trend_png: bytes | None = None
    anchor: str = field(default="")


def _img(png: bytes, alt: str, css_class: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css_class}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(float(seconds), tz=dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _measure(value: float | None, budget: float | None) -> str:
    """'4.21s / 20.00s', red when the budget is breached or the value was never measured."""
    shown = escape(format_duration(value))
    if budget is None:
        return shown if value is not None else '<span class="muted">-</span>'
    limit = escape(format_duration(budget))
    if value is None or value > budget:
        return f'<span class="breach">{shown}</span> / {limit}'
    return f"{shown} / {limit}"


def _count(value: int | None) -> str:
    return '<span class="muted">-</span>' if value is None else str(value)


def _breakable(name: str) -> str:
    """Escaped test id that may wrap after '/' and '::' and before '[' rather than mid-word."""
    return escape(name).replace("::", "::<wbr>").replace("/", "/<wbr>").replace("[", "<wbr>[")


def _badge(verdict: str) -> str:
    css = "pass" if verdict == "pass" else "fail"
    return f'<span class="{css}">{escape(verdict.upper())}</span>'


def _summary(views: list[ExperimentView]) -> list[str]:
    head = (
        "<tr><th>experiment</th><th>fault</th><th>TTD / budget</th><th>detected by</th>"
        "<th>RTO / budget</th><th>recovered by</th>"
        "<th>RPO / budget</th><th>failed req.</th><th>retried req.</th><th>wrong pred.</th>"
        "<th>integrity</th>"
        "<th>verdict</th><th>reasons</th></tr>"
    )
    rows = ['<div class="wide"><table class="summary">', head]
    for view in views:
        r = view.result
        integrity = {None: '<span class="muted">-</span>', True: "ok", False: "FAILED"}
        rows.append(
            "<tr>"
            f'<td><a href="#{view.anchor}">{_breakable(r.name)}</a></td>'
            f"<td>{escape(r.faults or r.fault or '-')}</td>"
            f'<td class="num">{_measure(r.ttd_s, r.ttd_budget_s)}</td>'
            f"<td>{escape(r.detected_by or '-')}</td>"
            f'<td class="num">{_measure(r.rto_s, r.rto_budget_s)}</td>'
            f"<td>{escape(r.recovered_by or '-')}</td>"
            f'<td class="num">{_measure(r.rpo_s, r.rpo_budget_s)}</td>'
            f'<td class="num">{_count(r.failed_requests)}</td>'
            f'<td class="num">{_count(r.retried_requests)}</td>'
            f'<td class="num">{_count(r.wrong_predictions)}</td>'
            f"<td>{integrity[r.integrity]}</td>"
            f"<td>{_badge(r.verdict)}</td>"
            f"<td>{escape('; '.join(r.reasons)) or '-'}</td>"
            "</tr>"
        )
    rows.append("</table></div>")
    return rows


def _details(event: Event) -> str:
    rest = {k: v for k, v in event.items() if k not in ("t", "wall", "event", "source")}
    text = json.dumps(rest, default=str, separators=(", ", "="))[1:-1]
    return text if len(text) <= 300 else text[:297] + "..."


def _key_events(view: ExperimentView) -> list[str]:
    """The journal events behind the figure (all but probes and requests), fault-relative."""
    fault = next((e for e in view.events if e["event"] == "fault.injected"), None)
    origin = fault["t"] if fault else view.start["t"]
    chosen = [view.start, *(e for e in view.events if e["event"] not in NOISY)]
    counts = {
        kind: sum(1 for e in view.events if e["event"] == kind) for kind in sorted(NOISY)
    }
    lines = [
        "<details><summary>journal events "
        f"({len(chosen)} shown; {counts['probe']} probes and {counts['request']} requests "
        "are in the figure)</summary>",
        "<table><tr><th>t - fault (s)</th><th>event</th><th>source</th><th>details</th></tr>",
    ]
    for event in chosen[:MAX_KEY_EVENTS]:
        lines.append(
            f'<tr><td class="num">{event["t"] - origin:+.3f}</td>'
            f"<td>{escape(str(event['event']))}</td>"
            f"<td>{escape(str(event.get('source', '')))}</td>"
            f'<td class="details">{escape(_details(event))}</td></tr>'
        )
    if len(chosen) > MAX_KEY_EVENTS:
        lines.append(f"<tr><td colspan=4>... {len(chosen) - MAX_KEY_EVENTS} more</td></tr>")
    lines += ["</table></details>"]
    return lines


def render_html(
    run_id: str, views: list[ExperimentView], *, notes: list[str], journal: str
) -> str:
    """The whole report page for one run."""
    passed = sum(v.result.verdict == "pass" for v in views)
    started = min((v.result.started_wall for v in views if v.result.started_wall), default=None)
    backends = sorted({v.result.backend for v in views if v.result.backend})
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>chaoskit run {escape(run_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>chaoskit run {escape(run_id)}</h1>",
        f'<div class="meta">{passed} of {len(views)} experiments passed &middot; started '
        f"{escape(_wall(started))} &middot; backend {escape(', '.join(backends) or '-')} "
        f"&middot; journal {escape(journal)}</div>",
    ]
    if notes:
        out.append('<div class="notes"><b>While reading the journal:</b><ul>')
        out += [f"<li>{escape(note)}</li>" for note in notes]
        out.append("</ul></div>")
    if not views:
        out.append("<p>The journal holds no experiment.</p>")
    else:
        out += _summary(views)
        out.append(
            '<p class="meta">TTD = fault to first detection; RTO = first fault until every '
            "service a fault took down or the DR engine found failing is back and confirmed; "
            "RPO = data lost: the newest state that existed before the fault minus the "
            "state the stack resumed from (a restored checkpoint: fault time minus its "
            "creation, steps at the fault minus its step; a trainer resumed without a "
            "restore: the steps it lost; a restored model version: the newest version "
            "minus the one serving again, 0 when the damaged version itself was restored; "
            "a DR site cut off: the worst moment until it caught up), the worst of those "
            "that apply. Empty (-) = no data was at risk in this experiment.</p>"
        )
    for view in views:
        r = view.result
        out.append(f'<section id="{view.anchor}"><h2>{escape(r.name)} {_badge(r.verdict)}</h2>')
        if r.reasons:
            out.append('<div class="reasons">' + "<br>".join(escape(x) for x in r.reasons))
            out.append("</div>")
        if r.detections:  # every service the DR engine found failing, not only the faulted
            out.append(f'<p class="meta">detected (service:signal@after the fault): '
                       f"{escape(detections_text(r.detections))}</p>")  # fmt: skip
        if view.timeline_png is not None:
            out.append(_img(view.timeline_png, f"timeline of {r.name}", "timeline"))
        else:
            out.append('<p class="breach">The timeline could not be drawn (see the notes at '
                       "the top); the events are listed below.</p>")  # fmt: skip
        if view.trend_png is not None:
            out.append(_img(view.trend_png, f"TTD/RTO/RPO trend of {r.name}", "trend"))
        else:
            out.append('<p class="meta">No TTD/RTO/RPO trend yet: it needs two runs.</p>')
        out += _key_events(view)
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"

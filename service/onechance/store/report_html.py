"""``onechance report --format html``: one self-contained page a supervisor can mail on.

Inline CSS, inline SVG charts drawn here (no JavaScript, no external file, font or service), and the report's
tables.  The page is well-formed XHTML (it parses as XML), so mail clients and XML tools read it alike; every
text from the data (queue, operator and PBX names) is escaped.  Webmail that drops inline SVG (Gmail) still shows
the tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from .report import (
    OperatorRow,
    Period,
    QueueRow,
    Report,
    describe,
    operator_table_cells,
    operator_table_head,
    queue_table_cells,
    queue_table_head,
)

COLORS = {"offered": "#8aa9d6", "answered": "#3f9b4f", "lost": "#d9534f", "sl": "#1f5fa8", "sl2": "#c07a1c",
          "transfers": "#8a6bbf"}
CSS = """
body { font-family: Arial, Helvetica, sans-serif; color: #222; margin: 16px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 6px; }
h3 { font-size: 14px; margin: 14px 0 2px; }
p.meta { color: #555; margin: 0 0 12px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0 18px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eef2f7; }
th.t, td.t { text-align: left; }
tr.total td { font-weight: bold; background: #f4f4f4; }
tr.grand td { font-weight: bold; background: #e4e8ee; }
table.summary td { font-size: 14px; }
svg { display: block; margin: 4px 0 12px; }
"""


def x(text: object) -> str:
    """Text escaped for XHTML content and attribute values."""
    return escape(str(text), quote=True)


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _nice_max(value: float) -> tuple[float, float]:
    """A round upper bound for an axis and its tick step (about 5 ticks)."""
    if value <= 0:
        return 1.0, 1.0
    raw = value / 5
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * power
        if step >= raw:
            break
    if step < 1 and value >= 1:
        step = 1.0
    return step * math.ceil(value / step), step


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: str
    values: Sequence[float | None]
    dashed: bool = False


class _Frame:
    """The plot area of a chart, its axes and category labels."""

    def __init__(self, title: str, categories: Sequence[str], y_max: float, y_step: float, unit: str,
                 width: int = 760, height: int = 260) -> None:
        self.title = title
        self.categories = list(categories)
        self.width = width
        longest = max((len(c) for c in self.categories), default=0)
        self.rotate = len(self.categories) > 8 or longest * 7 > (width - 70) / max(1, len(self.categories))
        self.left, self.right, self.top = (max(52, min(longest, 24) * 4) if self.rotate else 52), 12, 34
        self.bottom = 26 + (min(longest, 24) * 5 if self.rotate else 0)
        self.height = height + self.bottom
        self.plot_w = width - self.left - self.right
        self.plot_h = height - self.top
        self.y_max, self.y_step, self.unit = y_max, y_step, unit

    def slot(self) -> float:
        return self.plot_w / max(1, len(self.categories))

    def cx(self, i: int) -> float:
        return self.left + (i + 0.5) * self.slot()

    def y(self, value: float) -> float:
        return self.top + self.plot_h * (1 - min(value, self.y_max) / self.y_max)

    def open(self, series: Sequence[Series]) -> list[str]:
        out = [f"<h3>{x(self.title)}</h3>",
               f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
               f'viewBox="0 0 {self.width} {self.height}" role="img" aria-label="{x(self.title)}" '
               f'font-family="Arial, Helvetica, sans-serif" font-size="11">',
               f"<title>{x(self.title)}</title>",
               f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="#ffffff"/>']
        # grid and y axis
        ticks = round(self.y_max / self.y_step)
        for k in range(ticks + 1):
            v = k * self.y_step
            yy = self.y(v)
            out.append(f'<line x1="{self.left}" y1="{yy:.1f}" x2="{self.width - self.right}" y2="{yy:.1f}" '
                       f'stroke="{"#999" if k == 0 else "#e3e3e3"}" stroke-width="1"/>')
            out.append(f'<text x="{self.left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#555">'
                       f"{x(_num(v) + self.unit)}</text>")
        # legend
        lx = self.left
        for s in series:
            out.append(f'<rect x="{lx}" y="8" width="12" height="12" fill="{s.color}"/>')
            out.append(f'<text x="{lx + 16}" y="18" fill="#333">{x(s.name)}</text>')
            lx += 24 + 7 * len(s.name)
        # category labels, as many as fit
        every = max(1, math.ceil(len(self.categories) * (14 if self.rotate else 60) / self.plot_w))
        base = self.top + self.plot_h
        for i, label in enumerate(self.categories):
            if i % every:
                continue
            cx = self.cx(i)
            if self.rotate:
                out.append(f'<text x="{cx:.1f}" y="{base + 12}" text-anchor="end" fill="#333" '
                           f'transform="rotate(-45 {cx:.1f} {base + 12})">{x(label[:24])}</text>')
            else:
                out.append(f'<text x="{cx:.1f}" y="{base + 16}" text-anchor="middle" fill="#333">{x(label)}</text>')
        return out


def bar_chart(title: str, categories: Sequence[str], series: Sequence[Series], unit: str = "") -> str:
    """A heading and grouped vertical bars, one group per category."""
    top = max((v for s in series for v in s.values if v is not None), default=0.0)
    y_max, y_step = _nice_max(top)
    f = _Frame(title, categories, y_max, y_step, unit)
    out = f.open(series)
    group = f.slot() * 0.8
    bar = group / max(1, len(series))
    for i, label in enumerate(f.categories):
        left = f.cx(i) - group / 2
        for k, s in enumerate(series):
            v = s.values[i]
            if v is None:
                continue
            yy = f.y(v)
            h = f.top + f.plot_h - yy
            out.append(f'<rect x="{left + k * bar:.2f}" y="{yy:.2f}" width="{max(bar - 1, 0.5):.2f}" '
                       f'height="{h:.2f}" fill="{s.color}"><title>{x(f"{label}: {s.name} {_num(v)}{unit}")}'
                       f"</title></rect>")
    out.append("</svg>")
    return "\n".join(out)


def line_chart(title: str, categories: Sequence[str], series: Sequence[Series], y_max: float = 100.0,
               unit: str = "%") -> str:
    """A heading and lines over the categories, broken where a value is missing, with a dot per value."""
    f = _Frame(title, categories, y_max, y_max / 5, unit)
    out = f.open(series)
    for s in series:
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
                continue
            runs[-1].append((f.cx(i), f.y(v)))
            out.append(f'<circle cx="{f.cx(i):.2f}" cy="{f.y(v):.2f}" r="2.5" fill="{s.color}">'
                       f"<title>{x(f'{f.categories[i]}: {s.name} {_num(v)}{unit}')}</title></circle>")
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{px:.2f},{py:.2f}" for px, py in run)
                out.append(f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
    out.append("</svg>")
    return "\n".join(out)


# ---- the page ------------------------------------------------------------------------------------------
def _table(head: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], text_columns: int) -> str:
    def cls(i: int) -> str:
        return ' class="t"' if i < text_columns else ""

    out = ["<table>", "<tr>" + "".join(f"<th{cls(i)}>{x(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    for css, cells in rows:
        row_cls = f' class="{css}"' if css else ""
        out.append(f"<tr{row_cls}>" + "".join(f"<td{cls(i)}>{x(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _queue_css(row: QueueRow) -> str:
    if row.kind != "total":
        return ""
    return "grand" if row.period is None and row.queue is None else "total"


def _operator_css(row: OperatorRow) -> str:
    return "total" if row.kind == "operator_total" else ""


def charts(report: Report) -> list[str]:
    """The SVG charts of a report, each after a heading (none when it has no queue calls)."""
    if not report.queue_rows():
        return []
    periods: Sequence[Period] = report.all_periods()
    totals = {r.period: r for r in report.period_totals()}
    labels = [p.label for p in periods]
    if report.by == "hour":  # 2026-11-22 14:00: the hour alone when every hour is of one day
        labels = [lb[11:] if len({p.label[:10] for p in periods}) == 1 else lb[5:] for lb in labels]

    def per_period(name: str, zero: float | None = 0.0) -> list[float | None]:
        out: list[float | None] = []
        for p in periods:
            row = totals.get(p.label)
            value = getattr(row, name) if row is not None else zero
            out.append(None if value is None else float(value))
        return out

    out = [
        bar_chart(f"Offered, answered and lost per {report.by}", labels, [
            Series("offered", COLORS["offered"], per_period("offered")),
            Series("answered", COLORS["answered"], per_period("answered")),
            Series("lost", COLORS["lost"], per_period("lost")),
        ]),
        line_chart(f"Service level per {report.by}", labels, [
            Series("service level (answered)", COLORS["sl"], per_period("service_level", None)),
            Series("service level (answered + unanswered)", COLORS["sl2"], per_period("service_level2", None),
                   dashed=True),
        ]),
    ]
    queues: dict[tuple[str, str], QueueRow] = {}
    for r in report.queue_rows():
        assert r.pbx is not None and r.queue is not None
        queues.setdefault((r.pbx, r.queue), QueueRow("total", r.pbx, r.queue, None, None)).add(r)
    if len(queues) > 1:
        keys = sorted(queues)
        names = [f"{p}/{q}" if report.several_pbxs else q for p, q in keys]
        out.append(bar_chart("Offered, answered and lost per queue", names, [
            Series(n, COLORS[n], [float(getattr(queues[k], n)) for k in keys])
            for n in ("offered", "answered", "lost")
        ]))
    if report.operators:
        ops = [r for r in report.operators if r.kind == "operator_total"]
        names = [f"{r.pbx}/{r.operator}" if report.several_pbxs else r.operator for r in ops]
        out.append(bar_chart("Calls answered and transfers per operator", names, [
            Series("answered", COLORS["answered"], [float(r.answered) for r in ops]),
            Series("transfers", COLORS["transfers"], [float(r.transfers) for r in ops]),
        ]))
    return out


def render_html(report: Report) -> str:
    """The report as one XHTML page with its charts and tables."""
    title = f"onechance report {report.start_iso[:10]} - {report.end_iso[:10]}"
    body = [
        "<h1>Queue report</h1>",
        f'<p class="meta">{x(describe(report))}</p>',
    ]
    if not report.queue_rows():
        body.append("<p>No queue calls in this period.</p>")
    else:
        g = report.grand_total()
        summary = [("offered", g.offered), ("answered", g.answered), ("abandoned", g.abandoned),
                   ("lost callers", g.lost), ("recovered", g.recovered),
                   ("recovery rate", "-" if g.recovery_rate is None else f"{g.recovery_rate:.1f} %"),
                   ("service level", "-" if g.service_level is None else f"{g.service_level:.1f} %"),
                   ("ASA", "-" if g.asa_seconds is None else f"{g.asa_seconds:.1f} s")]
        body.append('<table class="summary"><tr>' + "".join(f'<th class="t">{x(k)}</th>' for k, _ in summary)
                    + "</tr><tr>" + "".join(f"<td>{x(v)}</td>" for _, v in summary) + "</tr></table>")
        body += ["<h2>Charts</h2>", *charts(report)]
        head = queue_table_head(report)
        body += ["<h2>Queues</h2>", _table(head, [(_queue_css(r), queue_table_cells(report, r)) for r in report.rows],
                                           3 if report.several_pbxs else 2)]
    if report.operators is not None:
        body.append("<h2>Operators</h2>")
        if not report.operators:
            body.append("<p>No operator answered in this period.</p>")
        else:
            body.append(_table(operator_table_head(report),
                               [(_operator_css(r), operator_table_cells(report, r)) for r in report.operators],
                               4 if report.several_pbxs else 3))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{x(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
    ]) + "\n"

"""``report --format html`` (a self-contained page with SVG charts) and the report command's options: the time
zone (``--tz``, ``[report] timezone``, the machine's), ``--by``, ``--operators``, ``--output``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from onechance.cli import main
from onechance.store.report import render
from onechance.store.report_html import Series, bar_chart, line_chart

from .reporthelp import capture_at, moved, stored_report
from .storehelp import DATA, final_records

XHTML = "{http://www.w3.org/1999/xhtml}"
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE_QUEUE = '<script>alert("q")</script> & sales'
HOSTILE_OPERATOR = 'Ann "><img src=x onerror=alert(1)>'


def parse(page: str) -> ET.Element:
    """The page as XML (it must be well-formed XHTML)."""
    return ET.fromstring(page)


def texts(root: ET.Element, tag: str) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{XHTML}{tag}")]


def check_self_contained(page: str, root: ET.Element) -> None:
    """No script, no event handler, nothing fetched from elsewhere."""
    assert "<script" not in page.lower() and "javascript:" not in page.lower()
    for e in root.iter():
        assert e.tag.split("}")[-1] not in ("script", "img", "iframe", "object", "link", "embed", "foreignObject")
        for name in e.attrib:
            assert not name.lower().startswith("on") and name not in ("src", "href") and not name.endswith("}href")
    assert "url(" not in page and "@import" not in page


def hostile(record):
    """A record whose queue and operator have names that would be markup if not escaped."""
    d = dict(record.to_json())
    d["queues"] = [dict(v, queue=HOSTILE_QUEUE, operator=HOSTILE_OPERATOR) for v in d["queues"]]
    d["legs"] = [dict(leg, queue=HOSTILE_QUEUE, operator=HOSTILE_OPERATOR) for leg in d["legs"]]
    return type(record).from_json(d)


async def test_the_html_page_is_well_formed_self_contained_and_escaped(engine):
    day1 = datetime(2026, 11, 22, 9, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 11, 24, 9, tzinfo=UTC).timestamp()
    records = [*capture_at("load_a", day1, suffix="-1"), *capture_at("bounced", day2, suffix="-2"),
               hostile(moved(final_records("answered")[0], day2 + 600, suffix="-3"))]
    tallinn = ZoneInfo("Europe/Tallinn")
    start, end = datetime(2026, 11, 22, tzinfo=tallinn).timestamp(), datetime(2026, 11, 25, tzinfo=tallinn).timestamp()
    report = await stored_report(engine, records, start, end, by="day", tz=tallinn, operator_figures=True)
    page = render(report, "html")
    root = parse(page)
    assert root.tag == f"{XHTML}html"
    check_self_contained(page, root)
    # one SVG per chart, each after its heading: per period (bars), service level (line), per queue, per operator
    charts = root.findall(f".//{SVG}svg")
    headings = texts(root, "h3")
    assert headings == ["Offered, answered and lost per day", "Service level per day",
                        "Offered, answered and lost per queue", "Calls answered and transfers per operator"]
    assert len(charts) == len(headings) and all(c.find(f"{SVG}title") is not None for c in charts)
    assert charts[1].findall(f".//{SVG}polyline") or charts[1].findall(f".//{SVG}circle")
    # the period chart has every day of the report, also the one without calls (23 November), and 3 bars a day
    bars = [r.find(f"{SVG}title").text for r in charts[0].iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [b.split(":")[0] for b in bars[::3]] == ["2026-11-22", "2026-11-23", "2026-11-24"]
    assert bars[:3] == ["2026-11-22: offered 76", "2026-11-22: answered 62", "2026-11-22: lost 14"]
    assert bars[3:6] == ["2026-11-23: offered 0", "2026-11-23: answered 0", "2026-11-23: lost 0"]
    # the hostile names are text, never markup, in the tables and the charts
    cells = texts(root, "td")
    assert HOSTILE_QUEUE in cells and HOSTILE_OPERATOR in cells
    assert any(t.text == f"{HOSTILE_QUEUE}: offered 1" for t in charts[2].iter(f"{SVG}title"))
    assert any(t.text == f"{HOSTILE_OPERATOR}: answered 1" for t in charts[3].iter(f"{SVG}title"))
    assert HOSTILE_QUEUE[:24] in ["".join(t.itertext()) for t in charts[2].iter(f"{SVG}text")]
    assert "<img" not in page and "&lt;script&gt;" in page
    # the tables: the report's rows, totals marked
    tables = root.findall(f".//{XHTML}table")
    assert len(tables) == 3  # summary, queues, operators
    queue_rows = tables[1].findall(f"{XHTML}tr")[1:]
    assert len(queue_rows) == len(report.rows)
    assert [tr.get("class") for tr in queue_rows].count("grand") == 1 and queue_rows[-1].get("class") == "grand"
    assert "time zone Europe/Tallinn" in "".join(root.find(f".//{XHTML}p").itertext())
    summary = dict(zip(texts(tables[0], "th"), texts(tables[0], "td")))
    g = report.grand_total()
    assert summary["offered"] == str(g.offered) and summary["lost callers"] == str(g.lost)


async def test_a_report_without_calls_is_a_page_without_charts(engine):
    report = await stored_report(engine, [], by="hour", tz=UTC, operator_figures=True)
    page = render(report, "html")
    root = parse(page)
    check_self_contained(page, root)
    assert root.findall(f".//{SVG}svg") == [] and "No queue calls in this period." in texts(root, "p")


def test_charts_alone():
    """A heading then the SVG; every value a bar with its title (a missing one none); escaped text."""
    page = "<div>" + bar_chart("t <1>", ["a&b", "c"], [Series("x", "#000", [3.0, 0.0]),
                                                         Series("y", "#111", [1.5, None])]) + "</div>"
    root = ET.fromstring(page)
    assert root.find("h3").text == "t <1>"
    svg = root.find(f"{SVG}svg")
    assert [t.text for t in svg.iter(f"{SVG}title")] == ["t <1>", "a&b: x 3", "a&b: y 1.5", "c: x 0"]
    # the axis up to a round top (3, ticks of 1), then the legend, then the categories
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["0", "1", "2", "3", "x", "y", "a&b", "c"]
    tallest = max(float(r.get("height")) for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None)
    gridlines = sorted(float(g.get("y1")) for g in svg.iter(f"{SVG}line"))
    assert tallest == pytest.approx(gridlines[-1] - gridlines[0], abs=0.01)  # 3 of 3: the full height
    line = ET.fromstring("<div>" + line_chart("sl", ["1", "2", "3", "4"], [
        Series("s", "#000", [50.0, None, 80.0, 90.0])]) + "</div>")
    # a missing value breaks the line: one polyline (3-4), a dot for each of the three values
    assert len(line.findall(f".//{SVG}polyline")) == 1 and len(line.findall(f".//{SVG}circle")) == 3


# ---- the command -------------------------------------------------------------------------------------------
def store_captures(*names: str) -> None:
    for name in names:
        assert main(["replay", str(DATA / f"{name}.ami"), "--store"]) == 0


def cli_env(monkeypatch, tmp_path, sqlite_url):
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ONECHANCE_DATABASE__URL", sqlite_url)


def test_the_zone_is_the_machines_unless_configured_or_given(monkeypatch, tmp_path, sqlite_url, capsys):
    """load_a ran on 22 November from 17:33 UTC: 23 November in Tokyo, 22 November in New York."""
    cli_env(monkeypatch, tmp_path, sqlite_url)
    store_captures("load_a")
    capsys.readouterr()
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the machine's zone
    assert main(["report", "--from", "2026-11-23", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["timezone"] == "Asia/Tokyo" and out["from"] == "2026-11-23T00:00:00+09:00"
    assert {r["period"] for r in out["rows"] if r["kind"] == "queue"} == {"2026-11-23"}

    config = tmp_path / "onechance.toml"
    config.write_text('[report]\ntimezone = "America/New_York"\n')
    assert main(["report", "--config", str(config), "--from", "2026-11-22", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["timezone"] == "America/New_York" and out["from"] == "2026-11-22T00:00:00-05:00"
    assert {r["period"] for r in out["rows"] if r["kind"] == "queue"} == {"2026-11-22"}

    assert main(["report", "--config", str(config), "--tz", "UTC", "--from", "2026-11-22", "--by", "hour",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["timezone"] == "UTC" and out["by"] == "hour"
    assert {r["period"] for r in out["rows"] if r["kind"] == "queue"} == {"2026-11-22 17:00"}

    config.write_text('[report]\ntimezone = "Mars/Olympus"\n')
    assert main(["report", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "report.timezone" in err and "unknown time zone 'Mars/Olympus'" in err


def test_html_with_operators_to_a_file(monkeypatch, tmp_path, sqlite_url, capsys):
    cli_env(monkeypatch, tmp_path, sqlite_url)
    store_captures("load_a", "bounced")
    capsys.readouterr()
    target = tmp_path / "report.html"
    assert main(["report", "--tz", "Europe/Tallinn", "--from", "2026-11-22", "--by", "hour", "--operators",
                 "--format", "html", "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    page = target.read_text(encoding="utf-8")
    root = parse(page)
    check_self_contained(page, root)
    assert len(root.findall(f".//{SVG}svg")) == 4 and "Operators" in texts(root, "h2")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    # the hourly chart has the day's 24 hours (19:00 holds the calls: 17:33 UTC is 19:33 in Tallinn)
    bars = [t.text for t in root.find(f".//{SVG}svg").iter(f"{SVG}title")][1:]
    assert len(bars) == 24 * 3 and bars[19 * 3].startswith("19:00: offered ")

    assert main(["report", "--tz", "UTC", "--from", "2026-11-22", "--operators", "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "\nOperators\n" in table and "Jüri Õunapuu" in table and "all queues" in table
    assert main(["report", "--tz", "UTC", "--from", "2026-11-22", "--operators", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kinds = [line.split(",")[1] for line in lines[1:]]
    assert set(kinds) == {"queue", "total", "operator", "operator_total"}
    assert kinds.index("operator") > max(i for i, k in enumerate(kinds) if k == "total")

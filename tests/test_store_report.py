"""Report figures equal those computed by hand from Asterisk's own queue_log files.

The expectation below reads each capture's ``.queue_log`` (and, for the two things queue_log never
records, the raw AMI bytes), never onechance's journeys or database, and follows the definitions in
``onechance/store/report.py`` / ``docs/database.md``:

* a visit is an ENTERQUEUE; it ends with CONNECT (answered, ``holdtime`` = data1), ABANDON (abandoned,
  ``waittime`` = data3), EXITWITHTIMEOUT / EXITEMPTY / WITHDRAW (timeout, waittime = data3) or
  EXITWITHKEY (left, counted in offered only);
* within the service level (20 s): ``holdtime``/``waittime`` <= 20, Asterisk's whole seconds;
  ServicelevelPerf = answered within / answered; ServicelevelPerf2 = (answered within + abandoned or
  timed out within) / (answered + abandoned + timed out);
* short abandon: ABANDON with ``waittime`` < 5;
* transfers: BLINDTRANSFER and ATTENDEDTRANSFER lines of the queue;
* bounced: a callid with 2 transfers or more, counted in the queue of its first ENTERQUEUE;
* every visit counts as queue_log ends it, the consultation call of an attended transfer too, also when
  the caller it belongs to hung up before the transfer completed (load_a: a CONNECT in sales after the
  caller had gone is answered: sales has 18 answered, queue_log's 18 CONNECT).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, insert

from onechance.cli import main
from onechance.journey import CallPolicy, CallRecord
from onechance.store import daily_figures, make_engine, store_journeys, upgrade
from onechance.store.models import calls, queue_visits
from onechance.store.report import CSV_FIELDS, FIELDS, ReportError, build_report, parse_bound, render

from .storehelp import CAPTURES, DATA, final_records

SL = 20
SHORT = 5
REFUSED = {"FULL", "JOINEMPTY", "JOINUNAVAIL"}
ENDS = {"CONNECT", "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "WITHDRAW", "EXITWITHKEY"}


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def ami_messages(path: Path) -> list[dict[str, str]]:
    """The AMI messages of a capture as header dicts (a plain split: no onechance code involved)."""
    out = []
    for block in path.read_bytes().decode("utf-8").split("\r\n\r\n"):
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep and key not in headers:
                headers[key] = value
        if "Event" in headers:
            out.append(headers)
    return out


@dataclass
class Figures:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timeouts: int = 0
    rejected: int = 0
    transfers: int = 0
    bounced: int = 0
    holds: list[int] = field(default_factory=list)
    answered_in_sl: int = 0
    unanswered_in_sl: int = 0

    def as_report(self, queue: str, date: str) -> dict:
        total = self.answered + self.abandoned + self.timeouts
        within = self.answered_in_sl + self.unanswered_in_sl
        return {
            "queue": queue,
            "period": date,
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "timeouts": self.timeouts,
            "rejected": self.rejected,
            "asa_seconds": statistics.mean(self.holds) if self.holds else None,
            "service_level": round(100 * self.answered_in_sl / self.answered, 1) if self.answered else None,
            "service_level2": round(100 * within / total, 1) if total else None,
            "transfers": self.transfers,
            "bounced": self.bounced,
        }


def expected_from_queue_log(name: str) -> dict[tuple[str, str], dict]:
    lines = [ln.split("|") for ln in (DATA / f"{name}.queue_log").read_text().splitlines() if ln.strip()]
    ami = ami_messages(DATA / f"{name}.ami")
    linkedid: dict[str, str] = {}
    hangup_asked: dict[str, float] = {}
    queue_app: dict[str, str] = {}
    refused: list[tuple[str, float]] = []
    ami_transferers: list[tuple[str, float]] = []
    serves: dict[str, str] = {}  # channel -> the channel it serves: a Local ;2 its ;1, a dialled phone its dialler
    for m in ami:
        event, uid = m["Event"], m.get("Uniqueid", "")
        if event == "LocalBridge":
            serves[m["LocalTwoUniqueid"]] = m["LocalOneUniqueid"]
        elif event == "DialBegin" and uid and m.get("DestUniqueid"):
            serves.setdefault(m["DestUniqueid"], uid)
        if event == "Newchannel":
            linkedid[uid] = m["Linkedid"]
        elif event in ("HangupRequest", "SoftHangupRequest"):
            hangup_asked.setdefault(uid, float(m["Timestamp"]))
        elif event == "Newexten" and m.get("Application") == "Queue":
            queue_app[uid] = m.get("AppData", "").split(",")[0]
        elif event == "VarSet" and m.get("Variable") == "QUEUESTATUS" and m.get("Value") in REFUSED:
            refused.append((queue_app[uid], float(m["Timestamp"])))
        elif event == "BlindTransfer" and m.get("Result") == "Success":
            ami_transferers.append((m["TransfererUniqueid"], float(m["Timestamp"])))
        elif event == "AttendedTransfer" and m.get("Result") == "Success":
            # A transfer completed after the caller hung up transferred nobody (queue_log says
            # COMPLETECALLER, no ATTENDEDTRANSFER): the caller's channels asked to hang up first.
            ts, caller = float(m["Timestamp"]), m.get("TransfereeUniqueid", "")
            if min(hangup_asked.get(caller, ts), hangup_asked.get(linkedid.get(caller, ""), ts)) < ts:
                continue
            ami_transferers.append((m["OrigTransfererUniqueid"], ts))

    figures: dict[tuple[str, str], Figures] = defaultdict(Figures)
    open_visits: dict[tuple[str, str], int] = {}  # (callid, queue) -> ENTERQUEUE time
    first_queue: dict[str, tuple[str, str]] = {}  # callid -> (queue, day) of its first ENTERQUEUE
    transfers_by_callid: dict[str, int] = defaultdict(int)
    connects: dict[str, tuple[str, str, str]] = {}  # member channel uniqueid -> (callid, queue, agent)
    logged_transfers: dict[tuple[str, str, str], int] = defaultdict(int)
    for epoch_text, callid, queue, agent, event, *data in lines:
        epoch = int(epoch_text)
        if event == "ENTERQUEUE":
            open_visits[(callid, queue)] = epoch
            first_queue.setdefault(callid, (queue, day(epoch)))
            figures[(queue, day(epoch))].offered += 1
        elif event in ENDS:
            joined = open_visits.pop((callid, queue))
            f = figures[(queue, day(joined))]
            # Every visit counts as queue_log ends it, also a consultation call answered (or abandoned)
            # after the caller it belongs to had hung up (load_a: sales, CONNECT by Jüri Õunapuu).
            if event == "CONNECT":
                hold = int(data[0])
                f.answered += 1
                f.holds.append(hold)
                f.answered_in_sl += hold <= SL
                connects[data[1]] = (callid, queue, agent)
            elif event in ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "WITHDRAW"):
                wait = int(data[2])
                if event == "ABANDON":
                    f.abandoned += 1
                    f.short_abandoned += wait < SHORT
                else:
                    f.timeouts += 1
                f.unanswered_in_sl += wait <= SL
        elif event in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            figures[(queue, day(epoch))].transfers += 1
            transfers_by_callid[callid] += 1
            logged_transfers[(callid, queue, agent)] += 1
    # A transfer to an operator's own extension leaves no queue_log line, but it is an AMI transfer by
    # a member connected through a queue (its channel is a CONNECT's member channel): count it there.
    by_member: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    # A phone's own transfer (SIP REFER) is made by the phone the member's Local channel dialled: queue_log
    # never logs it, the AMI transfer event names the phone's channel.
    for uid, ts in ami_transferers:
        seen = set()
        while uid not in connects and uid in serves and uid not in seen:
            seen.add(uid)
            uid = serves[uid]
        if uid in connects:
            by_member[connects[uid]].append(ts)
    for (callid, queue, agent), times in by_member.items():
        for ts in sorted(times)[logged_transfers[(callid, queue, agent)]:]:
            figures[(queue, day(ts))].transfers += 1
            transfers_by_callid[callid] += 1
    # A refused caller (FULL, JOINEMPTY, JOINUNAVAIL) has no queue_log line at all: only the AMI
    # VarSet QUEUESTATUS shows it, with the queue named by the Queue() application before it.
    for queue, ts in refused:
        figures[(queue, day(ts))].rejected += 1
    for callid, n in transfers_by_callid.items():
        if n >= 2:
            figures[first_queue[callid]].bounced += 1
    return {key: f.as_report(*key) for key, f in figures.items()}


async def report_for(url: str, journeys: list[CallRecord]) -> list[dict]:
    engine = make_engine(url)
    try:
        await upgrade(engine)
        await store_journeys(engine, journeys, stored_at=0.0)
        rows = await daily_figures(engine, 0, 4e9, policy=CallPolicy.with_defaults(service_level_seconds=SL))
    finally:
        await engine.dispose()
    return [r.to_dict() for r in rows]


#: figures queue_log cannot know (it never says a caller was reached again): checked against the truth files
CALLBACK_FIGURES = ("lost", "recovered", "recovery_rate", "median_callback_seconds")


#: what says which row it is, besides the queue and period
ROW_KEYS = ("kind", "pbx", "period_start")


def compare(ours: list[dict], expected: dict[tuple[str, str], dict]) -> None:
    got = {(r["queue"], r["period"]): r for r in ours}
    assert sorted(got) == sorted(expected)
    assert all(r["kind"] == "queue" and r["pbx"] == "" for r in ours)
    for key, exp in expected.items():
        row = {k: v for k, v in got[key].items() if k not in CALLBACK_FIGURES and k not in ROW_KEYS}
        asa, exp_asa = row.pop("asa_seconds"), exp["asa_seconds"]
        exp = {k: v for k, v in exp.items() if k != "asa_seconds"}
        assert row == exp, key
        if exp_asa is None:
            assert asa is None
        else:  # ours is from event times, queue_log's from whole seconds
            assert abs(asa - exp_asa) <= 1.0, (key, asa, exp_asa)


def test_every_capture_has_a_queue_log():
    assert len(CAPTURES) >= 14
    assert all((DATA / f"{n}.queue_log").exists() for n in CAPTURES)


@pytest.mark.parametrize("name", CAPTURES)
def test_report_equals_queue_log_by_hand(name, sqlite_url):
    compare(asyncio.run(report_for(sqlite_url, final_records(name))), expected_from_queue_log(name))


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["load_a", "join_empty", "queue_timeout"])
def test_report_on_postgresql_equals_queue_log_by_hand(name, pg_url):
    compare(asyncio.run(report_for(pg_url, final_records(name))), expected_from_queue_log(name))


def test_the_captures_exercise_every_figure():
    """The hand computation is only worth something if the captures have non-zero figures."""
    figures = ("answered", "abandoned", "short_abandoned", "timeouts", "rejected", "transfers", "bounced")
    totals: dict[str, float] = defaultdict(float)
    for name in CAPTURES:
        for row in expected_from_queue_log(name).values():
            for k in figures:
                totals[k] += row[k]
    assert all(totals[k] > 0 for k in figures), totals
    sl = [r["service_level"] for n in CAPTURES for r in expected_from_queue_log(n).values()]
    assert any(v is not None and v < 100 for v in sl)


# ---- definitions and output ----------------------------------------------------------------------------
def test_service_levels_use_both_asterisk_formulas(sqlite_url):
    """load_a/sales: some answered after 20 s, some abandoned before and after 20 s."""
    rows = {r["queue"]: r for r in asyncio.run(report_for(sqlite_url, final_records("load_a")))}
    sales = rows["sales"]
    assert sales["service_level"] != sales["service_level2"]
    assert 0 < sales["service_level"] < 100 and 0 < sales["service_level2"] < 100


async def test_per_queue_service_level_threshold(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        await upgrade(engine)
        await store_journeys(engine, final_records("load_a"), stored_at=0.0)
        strict = {r.queue: r for r in await daily_figures(
            engine, 0, 4e9, policy=CallPolicy.with_defaults(service_level_seconds=0.0))}
        lax = {r.queue: r for r in await daily_figures(
            engine, 0, 4e9, policy=CallPolicy.with_defaults(service_level_seconds=3600.0))}
        only_sales = await daily_figures(engine, 0, 4e9, queue="sales")
    finally:
        await engine.dispose()
    assert lax["sales"].service_level == 100.0 and lax["sales"].service_level2 == 100.0
    assert strict["sales"].service_level == 0.0
    assert [r.queue for r in only_sales] == ["sales"]


def test_days_follow_the_time_zone():
    assert parse_bound("2026-11-22", UTC) == datetime(2026, 11, 22, tzinfo=UTC).timestamp()
    assert parse_bound("2026-11-22", UTC, end=True) == datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    assert parse_bound("2026-11-22T10:30", UTC) == datetime(2026, 11, 22, 10, 30, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="not a date"):
        parse_bound("22.11.2026", UTC)


async def test_render_formats_of_an_empty_report(engine):
    report = await build_report(engine, 0, 86400.0, by="day", tz=UTC)
    assert json.loads(render(report, "json")) == {
        "timezone": "UTC", "by": "day", "from": "1970-01-01T00:00:00+00:00", "to": "1970-01-02T00:00:00+00:00",
        "pbxs": [], "rows": []}
    assert render(report, "csv").strip() == ",".join(CSV_FIELDS)
    assert "no queue calls" in render(report, "table")
    assert "No queue calls" in render(report, "html")
    with pytest.raises(ReportError, match="unknown format"):
        render(report, "pdf")


@pytest.fixture
def cli_env(monkeypatch, tmp_path, sqlite_url):
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ONECHANCE_DATABASE__URL", sqlite_url)
    monkeypatch.setenv("TZ", "UTC")  # the machine's zone, the report's default
    return monkeypatch


def test_report_command(cli_env, capsys):
    for name in ("load_a", "join_empty", "short_abandon", "queue_timeout"):
        assert main(["replay", str(DATA / f"{name}.ami"), "--store"]) == 0
    capsys.readouterr()
    day_ = "2026-11-22"
    assert main(["report", "--from", day_, "--to", day_, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["timezone"], out["by"], out["from"], out["pbxs"]) == ("UTC", "day", "2026-11-22T00:00:00+00:00", [""])
    rows = out["rows"]
    assert [list(r) for r in rows] == [list(FIELDS)] * len(rows)
    by_queue = {r["queue"]: r for r in rows if r["kind"] == "queue"}
    assert set(by_queue) == {"billing", "empty", "sales", "support"}
    assert by_queue["empty"]["rejected"] == 1 and by_queue["empty"]["offered"] == 0
    assert by_queue["support"]["short_abandoned"] == 1 and by_queue["support"]["timeouts"] == 1
    # the day's total, then the grand total: the same figures here (one day)
    day_total, grand = rows[-2:]
    assert (day_total["kind"], day_total["queue"], day_total["period"]) == ("total", None, day_)
    assert (grand["kind"], grand["queue"], grand["period"]) == ("total", None, None)
    assert {k: v for k, v in day_total.items() if k not in ("period", "period_start")} == \
        {k: v for k, v in grand.items() if k not in ("period", "period_start")}
    assert grand["offered"] == sum(r["offered"] for r in by_queue.values())

    assert main(["report", "--from", day_, "--queue", "sales", "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0] == ",".join(CSV_FIELDS) and len(csv_lines) == 4
    assert csv_lines[1].startswith("UTC,queue,,sales,,2026-11-22,2026-11-22T00:00:00+00:00,")
    assert csv_lines[2].startswith("UTC,total,,,,2026-11-22,") and csv_lines[3].startswith("UTC,total,,,,,,")

    assert main(["report", "--from", day_]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("Queues from 2026-11-22 00:00 to 2026-11-23 00:00") and "time zone UTC" in table[0]
    assert table[2].split()[:3] == ["queue", "period", "offered"] and len(table) == 4 + 4 + 2
    assert table[-1].split()[:2] == ["all", "queues"]

    assert main(["report", "--from", "2026-11-23", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == []


def test_report_errors_are_one_line(cli_env, capsys, tmp_path):
    assert main(["report", "--from", "yesterday"]) == 2
    assert "not a date" in capsys.readouterr().err
    assert main(["report", "--from", "2026-11-22", "--to", "2026-11-01"]) == 2
    assert "before --from" in capsys.readouterr().err
    assert main(["report", "--tz", "Mars/Olympus"]) == 2
    assert "unknown time zone" in capsys.readouterr().err
    assert main(["report", "--by", "year"]) == 2
    assert capsys.readouterr().err == "onechance report: unknown --by 'year' (hour, day, week or month)\n"
    assert main(["report", "--format", "pdf"]) == 2
    assert capsys.readouterr().err == "onechance report: unknown --format 'pdf' (table, csv, json, html)\n"
    assert main(["report", "--output", str(tmp_path / "nowhere" / "r.html")]) == 2
    assert "no directory" in capsys.readouterr().err
    assert main(["report"]) == 1  # the database does not exist yet
    err = capsys.readouterr().err
    assert "no database at" in err and err.count("\n") == 1
    cli_env.setenv("ONECHANCE_DATABASE__URL", "postgresql+asyncpg://u:secret@127.0.0.1:1/db")
    assert main(["report"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onechance report: database unavailable") and "secret" not in err


def _shifted(value, delta: float):
    """A journey dict with every ``*_at`` time moved by ``delta`` seconds."""
    if isinstance(value, dict):
        return {k: (v + delta if k.endswith("_at") and isinstance(v, float) else _shifted(v, delta))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_shifted(v, delta) for v in value]
    return value


def test_the_default_day_is_today_in_the_reports_time_zone(cli_env, sqlite_url, capsys):
    """``report --tz ZONE`` without ``--from`` reports today as the clock in ZONE says, the same days
    its rows are counted in (here a zone whose date differs from UTC's right now)."""
    utc_now = datetime.now(UTC)
    tz = ZoneInfo("Etc/GMT-14" if utc_now.hour >= 12 else "Etc/GMT+12")  # UTC+14 / UTC-12
    today = datetime.now(tz).date()
    assert today != utc_now.date()
    record = final_records("answered")[0]
    noon = datetime(today.year, today.month, today.day, 12, tzinfo=tz).timestamp()
    journey = CallRecord.from_json(_shifted(dict(record.to_json()), noon - record.queues[0].joined_at))

    async def store() -> None:
        engine = make_engine(sqlite_url)
        try:
            await upgrade(engine)
            await store_journeys(engine, [journey], stored_at=0.0)
        finally:
            await engine.dispose()

    asyncio.run(store())
    assert main(["report", "--tz", tz.key, "--format", "json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out)["rows"] if r["kind"] == "queue"]
    assert [(r["period"], r["answered"]) for r in rows] == [(today.isoformat(), 1)]


async def _report_peak(engine, visits: int) -> tuple[list, int, set[tuple[str, str]]]:
    """Store ``visits`` answered visits in 3 queues over the same 10 days; the report's rows, the peak of the
    memory it took (tracemalloc, every thread) and the (queue, day) pairs the visits imply."""
    step = 10 * 86400 / visits
    joined = [1.79e9 + i * step for i in range(visits)]
    async with engine.begin() as conn:
        await conn.execute(delete(queue_visits))
        await conn.execute(delete(calls))
        await conn.execute(insert(calls), [dict(
            pbx="", call_id="c", caller="", caller_name="", started_at=0.0, updated_at=0.0,
            outcome="answered", journey={}, stored_at=0.0)])
        await conn.execute(insert(queue_visits), [dict(
            pbx="", call_id="c", seq=i, queue=f"q{i % 3}", joined_at=t, left_at=t + 12.25, wait_seconds=12.25,
            result="answered", consultation=False, caller_visit=True, short_abandon=False)
            for i, t in enumerate(joined)])
    tracemalloc.start()
    try:
        rows = await daily_figures(engine, 0, 4e9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return rows, peak, {(f"q{i % 3}", day(t)) for i, t in enumerate(joined)}


async def test_a_long_report_keeps_only_the_daily_figures_in_memory(sqlite_url):
    """A report over a year of a busy PBX reads millions of visits: they are streamed, so the memory it
    takes does not grow with the number of visits.  The same 10 days and 3 queues with 2000 visits and with
    five times as many: a report that held the visits would take about five times the memory (measured:
    0.88 MB, then 4.2 MB, when the visits are fetched whole); streamed, it does not grow (0.58 MB, then
    0.42 MB).  This compares the report with itself; memory figures of a machine belong in bench/."""
    small, large = 2000, 10000
    engine = make_engine(sqlite_url)
    try:
        await upgrade(engine)
        await _report_peak(engine, 100)  # first use: compiled statements, connection, imports
        peaks = {}
        for visits in (small, large):
            rows, peaks[visits], days = await _report_peak(engine, visits)
            assert sum(r.answered for r in rows) == visits
            assert len(rows) == len(days) and {(r.queue, r.date) for r in rows} == days
    finally:
        await engine.dispose()
    assert peaks[large] < 2 * peaks[small], (
        f"{peaks[small] / 1e6:.2f} MB for {small} visits, {peaks[large] / 1e6:.2f} MB for {large}: "
        "the report keeps the visits in memory")


def test_a_date_time_from_without_to_runs_to_the_end_of_its_day(cli_env, capsys):
    assert main(["replay", str(DATA / "load_a.ami"), "--store"]) == 0
    capsys.readouterr()
    assert main(["report", "--from", "2026-11-22", "--format", "json"]) == 0
    whole_day = json.loads(capsys.readouterr().out)
    assert whole_day
    assert main(["report", "--from", "2026-11-22T00:00", "--format", "json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out) == whole_day
    assert main(["report", "--from", "2026-11-22T23:59", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == []  # the capture's calls are earlier that day


@pytest.mark.parametrize("name", CAPTURES)
def test_lost_and_recovered_callers_per_queue_are_those_of_the_truth_files(name, sqlite_url):
    """Lost callers (alerts abandoned/timeout/rejected/exited in the truth) and those recovered, counted in the
    first queue they entered; the median time to callback is that of the recovered calls."""
    from .truthcheck import load_truth

    rows = asyncio.run(report_for(sqlite_url, final_records(name)))
    lost_kinds = {"abandoned", "timeout", "rejected", "exited"}
    want_lost: dict[str, int] = defaultdict(int)
    want_recovered: dict[str, int] = defaultdict(int)
    for call in load_truth(name)["calls"]:
        if set(call.get("alerts", [])) & lost_kinds:
            want_lost[call["queues"][0]] += 1
            want_recovered[call["queues"][0]] += bool(call.get("recovered"))
    got_lost: dict[str, int] = defaultdict(int)
    got_recovered: dict[str, int] = defaultdict(int)
    for r in rows:
        got_lost[r["queue"]] += r["lost"]
        got_recovered[r["queue"]] += r["recovered"]
        assert r["recovery_rate"] == (round(100 * r["recovered"] / r["lost"], 1) if r["lost"] else None)
        assert (r["median_callback_seconds"] is None) == (r["recovered"] == 0)
    assert {q: n for q, n in got_lost.items() if n} == dict(want_lost)
    assert {q: n for q, n in got_recovered.items() if n} == {q: n for q, n in want_recovered.items() if n}

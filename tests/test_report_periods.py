"""Report periods (hour, day, ISO week, month) in a time zone with daylight saving time, totals, PBXs.

The records are real captures' records moved in time (their queue visits, legs, transfers together), stored in a
real SQLite file and a real PostgreSQL database (the ``engine`` fixture runs each test on both).  Expected periods
are worked out by hand below from the Europe/Tallinn rules (EET = UTC+2, EEST = UTC+3; in 2026 the clocks go
forward on Sunday 29 March at 01:00 UTC and back on Sunday 25 October at 01:00 UTC).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from onechance.store.report import (
    QueueRow,
    Report,
    ReportError,
    build_report,
    next_period,
    parse_bound,
    period_of,
    periods_between,
)

from .reporthelp import capture_at, moved, stored_report
from .storehelp import final_records

TALLINN = ZoneInfo("Europe/Tallinn")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# One answered call (the ``answered`` capture) joining its queue at each of these instants:
#   instant (UTC)         Tallinn local time            hour                     day         week      month
INSTANTS = {
    "A": utc(2026, 3, 29, 0, 30),    # Sun 29 Mar 02:30 EET   2026-03-29 02:00        2026-03-29  2026-W13  2026-03
    "B": utc(2026, 3, 29, 1, 30),    # Sun 29 Mar 04:30 EEST  2026-03-29 04:00        2026-03-29  2026-W13  2026-03
    "C": utc(2026, 3, 31, 21, 30),   # Wed 1 Apr 00:30 EEST   2026-04-01 00:00        2026-04-01  2026-W14  2026-04
    "D": utc(2026, 10, 24, 20, 30),  # Sat 24 Oct 23:30 EEST  2026-10-24 23:00        2026-10-24  2026-W43  2026-10
    "E": utc(2026, 10, 24, 21, 30),  # Sun 25 Oct 00:30 EEST  2026-10-25 00:00        2026-10-25  2026-W43  2026-10
    "F": utc(2026, 10, 25, 0, 30),   # Sun 25 Oct 03:30 EEST  2026-10-25 03:00+03:00  2026-10-25  2026-W43  2026-10
    "G": utc(2026, 10, 25, 1, 30),   # Sun 25 Oct 03:30 EET   2026-10-25 03:00+02:00  2026-10-25  2026-W43  2026-10
    "H": utc(2026, 10, 25, 21, 30),  # Sun 25 Oct 23:30 EET   2026-10-25 23:00        2026-10-25  2026-W43  2026-10
    "I": utc(2026, 10, 25, 22, 30),  # Mon 26 Oct 00:30 EET   2026-10-26 00:00        2026-10-26  2026-W44  2026-10
    "J": utc(2026, 10, 31, 21, 30),  # Sat 31 Oct 23:30 EET   2026-10-31 23:00        2026-10-31  2026-W44  2026-10
    "K": utc(2026, 10, 31, 22, 30),  # Sun 1 Nov 00:30 EET    2026-11-01 00:00        2026-11-01  2026-W44  2026-11
}
HOURS = {"A": ("2026-03-29 02:00", "2026-03-29T02:00:00+02:00"), "B": ("2026-03-29 04:00", "2026-03-29T04:00:00+03:00"),
         "C": ("2026-04-01 00:00", "2026-04-01T00:00:00+03:00"), "D": ("2026-10-24 23:00", "2026-10-24T23:00:00+03:00"),
         "E": ("2026-10-25 00:00", "2026-10-25T00:00:00+03:00"),
         "F": ("2026-10-25 03:00+03:00", "2026-10-25T03:00:00+03:00"),
         "G": ("2026-10-25 03:00+02:00", "2026-10-25T03:00:00+02:00"),
         "H": ("2026-10-25 23:00", "2026-10-25T23:00:00+02:00"), "I": ("2026-10-26 00:00", "2026-10-26T00:00:00+02:00"),
         "J": ("2026-10-31 23:00", "2026-10-31T23:00:00+02:00"), "K": ("2026-11-01 00:00", "2026-11-01T00:00:00+02:00")}
TALLINN_COUNTS = {
    "day": {"2026-03-29": 2, "2026-04-01": 1, "2026-10-24": 1, "2026-10-25": 4, "2026-10-26": 1, "2026-10-31": 1,
            "2026-11-01": 1},
    "week": {"2026-W13": 2, "2026-W14": 1, "2026-W43": 5, "2026-W44": 3},
    "month": {"2026-03": 2, "2026-04": 1, "2026-10": 7, "2026-11": 1},
}
# the same calls counted in UTC: C is still in March, D..H on 24/25 October, I on Sunday 25 October (week 43)
UTC_COUNTS = {
    "day": {"2026-03-29": 2, "2026-03-31": 1, "2026-10-24": 2, "2026-10-25": 4, "2026-10-31": 2},
    "week": {"2026-W13": 2, "2026-W14": 1, "2026-W43": 6, "2026-W44": 2},
    "month": {"2026-03": 3, "2026-10": 8},
}
STARTS = {  # the first instant of some periods, with the offset in force then
    ("day", "2026-10-25"): "2026-10-25T00:00:00+03:00", ("day", "2026-10-26"): "2026-10-26T00:00:00+02:00",
    ("week", "2026-W43"): "2026-10-19T00:00:00+03:00", ("week", "2026-W44"): "2026-10-26T00:00:00+02:00",
    ("month", "2026-10"): "2026-10-01T00:00:00+03:00", ("month", "2026-11"): "2026-11-01T00:00:00+02:00",
    ("month", "2026-03"): "2026-03-01T00:00:00+02:00", ("week", "2026-W14"): "2026-03-30T00:00:00+03:00",
}


def dst_records() -> list:
    answered = final_records("answered")[0]
    return [moved(answered, ts, suffix=f"-{name}") for name, ts in INSTANTS.items()]


def queue_counts(report: Report) -> dict[str, int]:
    return {r.period: r.answered for r in report.queue_rows() if r.period is not None}


async def test_hours_across_both_daylight_saving_changes(engine):
    report = await stored_report(engine, dst_records(), by="hour", tz=TALLINN)
    rows = report.queue_rows()
    assert [(r.period, r.period_start, r.answered) for r in rows] == [(*HOURS[k], 1) for k in sorted(HOURS)]
    assert {r.queue for r in rows} == {"support"} and report.timezone == "Europe/Tallinn"
    # the repeated hour of 25 October is two periods, an hour apart
    f, g = (next(r for r in rows if r.period == HOURS[k][0]) for k in "FG")
    starts = [datetime.fromisoformat(r.period_start).timestamp() for r in (f, g)]
    assert starts[1] - starts[0] == 3600
    in_utc = await build_report(engine, 0, 4e9, by="hour", tz=UTC)
    assert sorted(queue_counts(in_utc)) == sorted(datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:00")
                                                  for ts in INSTANTS.values())


@pytest.mark.parametrize("by", ["day", "week", "month"])
async def test_days_weeks_and_months_in_the_reports_zone(engine, by):
    report = await stored_report(engine, dst_records(), by=by, tz=TALLINN)
    assert queue_counts(report) == TALLINN_COUNTS[by]
    for r in report.queue_rows():
        if (by, r.period) in STARTS:
            assert r.period_start == STARTS[(by, r.period)]
    assert report.grand_total().answered == len(INSTANTS)
    in_utc = await build_report(engine, 0, 4e9, by=by, tz=UTC)
    assert queue_counts(in_utc) == UTC_COUNTS[by]


async def test_lost_callers_and_transfers_follow_the_zone_too(engine):
    """An abandoned call (lost, by its start) and a bounced call (transfers, by their time) in the repeated hour."""
    records = [*dst_records(), *capture_at("abandoned", INSTANTS["G"] + 60, suffix="-lost"),
               *capture_at("bounced", INSTANTS["G"] + 120, suffix="-bounced")]
    report = await stored_report(engine, records, by="hour", tz=TALLINN)
    repeated = {r.queue: r for r in report.queue_rows() if r.period == "2026-10-25 03:00+02:00"}
    assert repeated["support"].lost == 1 and repeated["support"].abandoned == 1
    assert repeated["support"].bounced == 1
    assert (repeated["support"].transfers, repeated["sales"].transfers, repeated["billing"].transfers) == (1, 1, 1)
    assert all(r.lost == 0 and r.transfers == 0 for r in report.queue_rows() if r.period != repeated["sales"].period)


def test_the_periods_of_a_day_with_a_daylight_saving_change():
    autumn = periods_between(parse_bound("2026-10-25", TALLINN), parse_bound("2026-10-25", TALLINN, end=True),
                             "hour", TALLINN)
    assert autumn is not None and len(autumn) == 25
    assert [p.label for p in autumn[2:6]] == ["2026-10-25 02:00", "2026-10-25 03:00+03:00", "2026-10-25 03:00+02:00",
                                              "2026-10-25 04:00"]
    spring = periods_between(parse_bound("2026-03-29", TALLINN), parse_bound("2026-03-29", TALLINN, end=True),
                             "hour", TALLINN)
    assert spring is not None and len(spring) == 23
    assert "2026-03-29 03:00" not in [p.label for p in spring]
    weeks = periods_between(utc(2026, 10, 1), utc(2026, 11, 1), "week", TALLINN)
    assert weeks is not None and [p.label for p in weeks] == ["2026-W40", "2026-W41", "2026-W42", "2026-W43",
                                                               "2026-W44"]
    months = periods_between(utc(2026, 1, 1), utc(2027, 1, 1), "month", UTC)
    assert months is not None and [p.label for p in months] == [f"2026-{m:02d}" for m in range(1, 13)]
    assert periods_between(0, 4e9, "hour", UTC, limit=100) is None  # too many to list
    # a year's ISO weeks: 2026 has 53 (it starts on a Thursday), the first begins on Monday 29 December 2025
    first = period_of(utc(2026, 1, 1, 12), "week", UTC)
    assert (first.label, first.start_iso) == ("2026-W01", "2025-12-29T00:00:00+00:00")
    assert next_period(period_of(utc(2026, 12, 30), "week", UTC), "week", UTC).label == "2027-W01"
    assert period_of(utc(2026, 12, 30), "week", UTC).label == "2026-W53"
    with pytest.raises(ReportError, match="unknown period"):
        period_of(0.0, "year", UTC)


def test_bounds_are_local_days():
    assert parse_bound("2026-10-25", TALLINN) == utc(2026, 10, 24, 21)
    assert parse_bound("2026-10-25", TALLINN, end=True) == utc(2026, 10, 25, 22)  # a 25-hour day
    assert parse_bound("2026-10-25T03:30", TALLINN) == utc(2026, 10, 25, 0, 30)  # the first 03:30
    assert parse_bound("2026-10-25T03:30+02:00", TALLINN) == utc(2026, 10, 25, 1, 30)
    # Santiago's clocks jump from 24:00 to 01:00 on 6 September 2026: that day starts at 01:00
    santiago = ZoneInfo("America/Santiago")
    assert datetime.fromtimestamp(parse_bound("2026-09-06", santiago), santiago).hour == 1
    assert period_of(parse_bound("2026-09-06", santiago) + 60, "day", santiago).start_iso == "2026-09-06T01:00:00-03:00"


# ---- totals ----------------------------------------------------------------------------------------------
SUMS = ("offered", "answered", "abandoned", "short_abandoned", "timeouts", "rejected", "answered_in_sl",
        "unanswered_in_sl", "transfers", "bounced", "lost", "recovered")


def covers(total: QueueRow, row: QueueRow) -> bool:
    return all(getattr(total, k) is None or getattr(total, k) == getattr(row, k) for k in ("pbx", "queue", "period"))


def check_totals(report: Report) -> int:
    """Every total is the sum of the queue rows it covers; its rates are those of the sums.  Returns how many."""
    rows = report.queue_rows()
    totals = [r for r in report.rows if r.kind == "total"]
    for t in totals:
        covered = [r for r in rows if covers(t, r)]
        assert covered, t
        for k in SUMS:
            assert getattr(t, k) == sum(getattr(r, k) for r in covered), (t.pbx, t.queue, t.period, k)
        assert t.answered_wait == pytest.approx(sum(r.answered_wait for r in covered))
        assert sorted(t.callback_times) == sorted(x for r in covered for x in r.callback_times)
        answered = sum(r.answered for r in covered)
        assert t.service_level == (round(100 * sum(r.answered_in_sl for r in covered) / answered, 1)
                                   if answered else None)
        assert t.to_dict()["median_callback_seconds"] == t.median_callback_seconds
    return len(totals)


def check_layout(report: Report) -> None:
    """Per period: its queue rows, then its totals; at the end the grand totals, the last over everything."""
    periods = [p.label for p in report.periods]
    seen: list[str] = []
    for r in report.rows:
        if r.period is not None:
            if r.period not in seen:
                seen.append(r.period)
            assert r.period == seen[-1], "a period's rows are together"
    assert seen == periods
    grand = report.rows[-1]
    assert (grand.kind, grand.pbx if report.several_pbxs else None, grand.queue, grand.period) == \
        ("total", None, None, None)
    for p in periods:
        block = [r for r in report.rows if r.period == p]
        kinds = [r.kind for r in block]
        assert kinds == sorted(kinds, key=lambda k: k == "total"), "queue rows before the totals"
        totals = [r for r in block if r.kind == "total"]
        expected_pbxs = ([*sorted({r.pbx for r in block if r.kind == "queue"}), None] if report.several_pbxs
                         else [report.pbxs[0]])
        assert [t.pbx for t in totals] == expected_pbxs and all(t.queue is None for t in totals)


async def test_totals_are_the_sums_of_their_rows(engine):
    records = [
        *capture_at("load_a", utc(2026, 11, 22, 8, 10), suffix="-1", pbx="tallinn"),
        *capture_at("load_a", utc(2026, 11, 22, 9, 40), suffix="-2", pbx="tallinn"),
        *capture_at("abandon_then_callback", utc(2026, 11, 22, 9, 5), suffix="-3", pbx="tallinn"),
        *capture_at("outbound_callback", utc(2026, 11, 22, 10, 5), suffix="-4", pbx="tallinn"),
        *capture_at("bounced", utc(2026, 11, 23, 7, 0), suffix="-5", pbx="tallinn"),
        *capture_at("queue_timeout", utc(2026, 11, 23, 7, 30), suffix="-6", pbx="tallinn"),
        *capture_at("join_empty", utc(2026, 11, 23, 7, 40), suffix="-7", pbx="tallinn"),
    ]
    report = await stored_report(engine, records, by="hour", tz=TALLINN)
    assert len(report.periods) == 4 and report.pbxs == ["tallinn"]
    # per period one total; then one per queue (several periods); then the grand total
    assert check_totals(report) == 4 + 4 + 1
    check_layout(report)
    grand = report.grand_total()
    assert grand.recovered == 2 and len(grand.callback_times) == 2 and grand.rejected == 1 and grand.timeouts == 1
    # answered visits: load_a twice (62 each), abandon_then_callback's second call, bounced's four queues
    assert grand.answered == 2 * 62 + 1 + 4
    by_day = await build_report(engine, 0, 4e9, by="day", tz=TALLINN)
    assert check_totals(by_day) == 2 + 4 + 1
    assert by_day.grand_total().to_dict() | {"period_start": None} == grand.to_dict() | {"period_start": None}


async def test_several_pbxs_have_rows_and_totals_of_their_own(engine):
    """The same capture under two PBX names: each PBX's rows are those of the capture alone, the totals add up."""
    at = utc(2026, 11, 22, 8, 10)
    alone = await stored_report(engine, capture_at("load_a", at, pbx="tallinn"), by="hour", tz=TALLINN)
    assert alone.pbxs == ["tallinn"] and not alone.several_pbxs
    assert all(r.pbx == "tallinn" for r in alone.rows)
    both = await stored_report(engine, capture_at("load_a", at, pbx="tartu"), by="hour", tz=TALLINN)
    assert both.pbxs == ["tallinn", "tartu"] and both.several_pbxs
    check_totals(both)
    check_layout(both)

    def strip(row: QueueRow) -> dict:
        return {k: v for k, v in row.to_dict().items() if k != "pbx"}

    per_pbx = {p: [strip(r) for r in both.queue_rows() if r.pbx == p] for p in both.pbxs}
    assert per_pbx["tallinn"] == per_pbx["tartu"] == [strip(r) for r in alone.queue_rows()]
    assert {r.queue for r in alone.queue_rows()} == {"billing", "sales", "support"}
    grand, one = both.grand_total(), alone.grand_total()
    assert grand.pbx is None and all(getattr(grand, k) == 2 * getattr(one, k) for k in SUMS)
    assert [(t.pbx, t.period) for t in both.rows if t.kind == "total" and t.queue is None] == [
        ("tallinn", "2026-11-22 10:00"), ("tartu", "2026-11-22 10:00"), (None, "2026-11-22 10:00"),
        ("tallinn", None), ("tartu", None), (None, None)]
    only = await build_report(engine, 0, 4e9, by="hour", tz=TALLINN, pbx="tartu")
    assert only.pbxs == ["tartu"] and [strip(r) for r in only.rows] == [strip(r) for r in alone.rows]
    sales = await build_report(engine, 0, 4e9, by="hour", tz=TALLINN, queue="sales")
    assert {r.queue for r in sales.queue_rows()} == {"sales"} and sales.grand_total().answered == 2 * 18


# ---- Asterisk's own count --------------------------------------------------------------------------------
async def test_load_a_sales_answered_equals_queue_logs_connects(engine):
    """queue_log logs 18 CONNECT in sales; one is the consultation of an attended transfer answered after its
    caller hung up (Мария Иванова consulting sales, Jüri Õunapuu answering): it is answered too."""
    from .storehelp import DATA

    connects = Counter(line.split("|")[2] for line in (DATA / "load_a.queue_log").read_text().splitlines()
                       if line.split("|")[4:5] == ["CONNECT"])
    assert connects["sales"] == 18
    records = final_records("load_a")
    orphan = next(r for r in records if r.consultations)
    consultation = orphan.consultations[0]
    assert (consultation.queue, consultation.result, consultation.operator) == ("sales", "answered", "Jüri Õunapuu")
    assert orphan.ended_at is not None and consultation.left_at is not None
    assert orphan.ended_at < consultation.left_at  # the call ended with its caller, before that CONNECT
    assert orphan.operators == ["Мария Иванова"] and str(orphan.outcome) == "answered"
    report = await stored_report(engine, records, by="day", tz=UTC)
    rows = {r.queue: r for r in report.queue_rows()}
    assert {q: r.answered for q, r in rows.items()} == {q: connects[q] for q in rows}
    assert rows["sales"].answered == 18


async def test_a_bad_period_is_refused(engine):
    with pytest.raises(ReportError, match="unknown period 'fortnight'"):
        await build_report(engine, 0, 1, by="fortnight")

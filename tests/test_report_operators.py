"""Per-operator figures (``report --operators``) equal those worked out by hand from Asterisk's queue_log.

The expectation reads each capture's ``.queue_log`` (and the AMI capture's ``Newchannel`` events only to know
which queue_log callids belong to one call: their ``Linkedid``), never onechance's journeys or database:

* a call's visits are the queue_log callids with the same Linkedid; the callid of its first ENTERQUEUE is the
  caller's, any other is the consultation call of an attended transfer;
* an operator answered a call in a queue when queue_log says CONNECT there -- for a consultation only if an
  ATTENDEDTRANSFER of that call followed the CONNECT (the operator then talked with the caller; a consultation
  whose transfer never completed reached the transferring operator only);
* talk time: from CONNECT (for a consultation: from the ATTENDEDTRANSFER that handed the caller over) to the line
  that ends that visit (COMPLETECALLER, COMPLETEAGENT, BLINDTRANSFER, ATTENDEDTRANSFER), whole seconds: ours
  (from event times) may differ by less than a second per call;
* transfers: the operator's BLINDTRANSFER and ATTENDEDTRANSFER lines, in the queue of the line;
* a bounced call passed on: the call's second transfer (the bounce threshold, 2) is the operator's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC

import pytest

from onechance.store.report import OperatorRow

from .reporthelp import capture_at, stored_report
from .storehelp import DATA, final_records
from .test_store_report import ami_messages

ENDS = ("BLINDTRANSFER", "ATTENDEDTRANSFER", "COMPLETECALLER", "COMPLETEAGENT")


def operators_from_queue_log(name: str) -> dict[tuple[str, str], dict[str, float]]:
    """(operator, queue) -> answered, talk_seconds, transfers, bounced_passed_on."""
    lines = [ln.split("|") for ln in (DATA / f"{name}.queue_log").read_text().splitlines() if ln.strip()]
    linkedid = {m["Uniqueid"]: m["Linkedid"] for m in ami_messages(DATA / f"{name}.ami") if m["Event"] == "Newchannel"}
    callers: dict[str, str] = {}  # Linkedid -> the callid of the call's first ENTERQUEUE
    for _, callid, _, _, event, *_ in lines:
        if event == "ENTERQUEUE":
            callers.setdefault(linkedid.get(callid, callid), callid)
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(Counter)  # type: ignore[arg-type]
    connected: dict[str, tuple[int, str, str]] = {}  # callid -> (CONNECT time, operator, queue)
    transfers: dict[str, list[tuple[int, str, str]]] = defaultdict(list)  # Linkedid -> its transfers in order
    for epoch_text, callid, queue, agent, event, *_ in lines:
        epoch, call = int(epoch_text), linkedid.get(callid, callid)
        if event == "CONNECT":
            connected[callid] = (epoch, agent, queue)
        elif event in ENDS:
            start, operator, where = connected.pop(callid)
            if event in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
                transfers[call].append((epoch, agent, queue))
                out[(agent, queue)]["transfers"] += 1
            if callers[call] != callid:  # a consultation: did its transfer hand the caller over?
                handed = [t for t, _, _ in transfers[call] if t >= start]
                if not handed:
                    continue
                start = handed[0]
            out[(operator, where)]["answered"] += 1
            out[(operator, where)]["talk_seconds"] += epoch - start
    for made in transfers.values():
        if len(made) >= 2:
            _, agent, queue = made[1]
            out[(agent, queue)]["bounced_passed_on"] += 1
    return {k: dict(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["bounced", "attended_transfer", "load_a"])
async def test_operator_figures_equal_queue_log_by_hand(engine, name):
    expected = operators_from_queue_log(name)
    report = await stored_report(engine, final_records(name), by="day", tz=UTC, operator_figures=True)
    assert report.operators is not None
    rows = {(r.operator, r.queue): r for r in report.operators if r.kind == "operator"}
    assert sorted(rows) == sorted(expected)
    for key, want in expected.items():
        got = rows[key]
        assert (got.answered, got.transfers, got.bounced_passed_on) == (
            want.get("answered", 0), want.get("transfers", 0), want.get("bounced_passed_on", 0)), key
        assert abs(got.talk_seconds - want.get("talk_seconds", 0)) < max(1, got.answered), key
        assert got.aht_seconds == (round(got.talk_seconds / got.answered, 1) if got.answered else None)
    # a total per operator, over queues and periods, after the rows
    totals = [r for r in report.operators if r.kind == "operator_total"]
    assert report.operators[-len(totals):] == totals
    for t in totals:
        mine = [r for r in rows.values() if r.operator == t.operator]
        assert (t.queue, t.period) == (None, None)
        assert t.answered == sum(r.answered for r in mine) and t.transfers == sum(r.transfers for r in mine)
        assert t.bounced_passed_on == sum(r.bounced_passed_on for r in mine)
        assert t.talk_seconds == pytest.approx(sum(r.talk_seconds for r in mine))


def test_the_hand_computation_sees_what_it_should():
    """bounced: four operators, three transfers, the second (Jüri's, sales) made the call bounced; attended_transfer:
    Мария talks with the caller from the transfer on; load_a: Jüri's CONNECT for an orphaned consultation is not a
    call he answered."""
    bounced = operators_from_queue_log("bounced")
    assert bounced[("Jüri Õunapuu", "sales")] == {"answered": 1, "talk_seconds": 2, "transfers": 1,
                                                   "bounced_passed_on": 1}
    assert sum(v.get("transfers", 0) for v in bounced.values()) == 3 and len(bounced) == 4
    attended = operators_from_queue_log("attended_transfer")
    assert attended[("Мария Иванова", "billing")] == {"answered": 1, "talk_seconds": 744 - 741}
    assert attended[("Anna Tamm", "support")] == {"answered": 1, "talk_seconds": 741 - 729, "transfers": 1}
    load_a = operators_from_queue_log("load_a")
    connects = sum(1 for ln in (DATA / "load_a.queue_log").read_text().splitlines()
                   if "|Jüri Õunapuu|CONNECT|" in ln and "|sales|" in ln)
    assert connects == 3 and load_a[("Jüri Õunapuu", "sales")]["answered"] == 2


async def test_operator_rows_per_period_pbx_and_queue_filter(engine):
    """Two copies of bounced a day apart on two PBXs: rows per PBX and day; --queue keeps that queue's rows."""
    from datetime import datetime

    day1 = datetime(2026, 11, 22, 9, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 11, 23, 9, tzinfo=UTC).timestamp()
    records = [*capture_at("bounced", day1, suffix="-1", pbx="a"), *capture_at("bounced", day2, suffix="-2", pbx="b")]
    report = await stored_report(engine, records, by="day", tz=UTC, operator_figures=True)
    assert report.operators is not None
    keys = [(r.pbx, r.operator, r.queue, r.period) for r in report.operators if r.kind == "operator"]
    assert keys == [("a", op, q, "2026-11-22") for op, q in sorted(QUEUES)] + \
        [("b", op, q, "2026-11-23") for op, q in sorted(QUEUES)]
    jüri = [r for r in report.operators if r.operator == "Jüri Õunapuu"]
    assert [(r.kind, r.pbx, r.bounced_passed_on) for r in jüri] == [
        ("operator", "a", 1), ("operator", "b", 1), ("operator_total", "a", 1), ("operator_total", "b", 1)]
    sales = await stored_report(engine, [], by="day", tz=UTC, operator_figures=True, queue="sales")
    assert sales.operators is not None
    assert {(r.operator, r.queue) for r in sales.operators if r.kind == "operator"} == {("Jüri Õunapuu", "sales")}
    assert all(isinstance(r, OperatorRow) for r in sales.operators)
    only_b = await stored_report(engine, [], by="day", tz=UTC, operator_figures=True, pbx="b")
    assert only_b.operators is not None and {r.pbx for r in only_b.operators} == {"b"}
    plain = await stored_report(engine, [], by="day", tz=UTC)
    assert plain.operators is None and "operators" not in plain.to_json()


QUEUES = {("Boris Petrov", "support"), ("Jüri Õunapuu", "sales"), ("Мария Иванова", "billing"),
          ("Anna Tamm", "support")}


async def test_a_direct_call_is_an_operators_call_in_no_queue(engine):
    """direct_call: the caller dials extension 201 (Jüri's); no queue figures, 201 answered one call in no queue (a
    replay knows the extension only: no queue event ever named its member)."""
    report = await stored_report(engine, final_records("direct_call"), by="day", tz=UTC, operator_figures=True)
    assert report.rows == [] and report.operators is not None
    (row, total) = report.operators
    assert (row.kind, row.operator, row.queue, row.answered, row.transfers) == ("operator", "201", "", 1, 0)
    assert row.talk_seconds > 0 and (total.kind, total.queue, total.answered) == ("operator_total", None, 1)
    from onechance.store.report import render

    table = render(report, "table")
    assert "(no queue calls in this period)" in table and "(direct)" in table

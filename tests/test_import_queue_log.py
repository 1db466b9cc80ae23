"""``onechance import-queue-log``: calls from Asterisk's queue_log, checked against the same calls recorded live.

Every shared capture comes with Asterisk's own ``queue_log`` of the same calls.  The main test imports that file
(PBX ``imported``) and replays the capture through the live parser and tracker (PBX ``live``) into the same
database, then compares the report's per-queue daily figures.

Compared: ``offered``, ``answered``, ``abandoned``, ``short_abandoned``, ``timeouts``, ``service_level``,
``service_level2``, ``lost``, ``recovered`` (exactly), ``asa_seconds`` (within 1 s: queue_log's waits are whole
seconds), and ``transfers`` and ``bounced`` except where noted.  Left out, and why:

* ``rejected``: a queue that refuses a caller (FULL, JOINEMPTY, JOINUNAVAIL) writes no queue_log line at all.
  The live calls and visits whose callid has no line in the file (the refused caller of ``join_empty``, the
  direct and outbound calls) are taken out of the live side;
* a consultation call that never reached the caller (an operator pressed ``*2``, dialled a queue, and the caller
  hung up before the transfer; live: ``consultations``, ``queue_visits.caller_visit`` false): queue_log logs it
  as an ordinary call (with the caller's number), indistinguishable.  Its visits are taken out of both sides;
* ``transfers`` and ``bounced`` for the ``sip_*`` captures: a phone's own transfer (SIP REFER) writes no
  BLINDTRANSFER/ATTENDEDTRANSFER line;
* recoveries by an operator's callback (``recovered_how`` ``outbound``, ``outbound_callback``): queue_log has
  no outbound calls; they are reset on the live side.  ``median_callback_seconds`` and ``recovery_rate`` follow
  from whole-second times and from that;
* not figures but also unknowable, checked below as staying empty: caller names (unless
  ``log-caller-id-name``), operators' interfaces, an attended transfer's target, who talked after a pickup.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, delete, insert, select, update

from onechance.cli import main
from onechance.importer import QueueLogBuilder, parse_line, read_file
from onechance.journey import CallPolicy
from onechance.replay import replay_files
from onechance.store import daily_figures, make_engine, store_journeys
from onechance.store.models import CHILD_TABLES, calls, queue_visits

from .storehelp import DATA, dump, stored_journeys

QUEUE_LOGS = sorted(p.stem for p in DATA.glob("*.queue_log"))
PHONE_TRANSFERS = {"sip_attended_refer", "sip_blind_refer"}  # REFER transfers: no queue_log line
EXACT = ("offered", "answered", "abandoned", "short_abandoned", "timeouts", "service_level", "service_level2",
         "lost", "recovered")
DAY = 86400.0


def qlog(name: str) -> str:
    return str(DATA / f"{name}.queue_log")


def ql_lines(name: str) -> list[list[str]]:
    """A queue_log file split by hand (no onechance code)."""
    return [line.split("|") for line in Path(qlog(name)).read_text(encoding="utf-8").splitlines() if line.strip()]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def cli_env(monkeypatch, tmp_path, db_url):
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ONECHANCE_DATABASE__URL", db_url)
    return db_url


def import_(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["import-queue-log", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


async def store_live(url: str, name: str, pbx: str) -> list[Any]:
    records = replay_files([str(DATA / f"{name}.ami")], pbx=pbx).journeys
    engine = make_engine(url)
    try:
        await store_journeys(engine, records, time.time())
    finally:
        await engine.dispose()
    return records


async def tables(url: str, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(url)
    try:
        return await dump(engine, skip)
    finally:
        await engine.dispose()


async def journeys(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    engine = make_engine(url)
    try:
        return await stored_journeys(engine)
    finally:
        await engine.dispose()


async def drop_calls(conn: Any, pbx: str, ids: set[str]) -> None:
    for child in CHILD_TABLES:
        await conn.execute(delete(child).where(child.c.pbx == pbx, child.c.call_id.in_(ids)))
    await conn.execute(delete(calls).where(calls.c.pbx == pbx, calls.c.call_id.in_(ids)))


async def comparable_figures(url: str, name: str) -> tuple[dict[Any, dict[str, Any]], dict[Any, dict[str, Any]]]:
    """The daily figures of both sides, with what queue_log cannot know taken out (see the module doc)."""
    logged = {f[1] for f in ql_lines(name) if len(f) > 4 and f[4] == "ENTERQUEUE"}
    v = queue_visits
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            q = select(v.c.call_id, v.c.callid, v.c.caller_visit).where(v.c.pbx == "live")
            rows = (await conn.execute(q)).all()
            orphans = {r.callid for r in rows if not r.caller_visit}
            seen = {r.call_id for r in rows if r.callid in logged}
            live_ids = {r[0] for r in (await conn.execute(select(calls.c.call_id).where(calls.c.pbx == "live")))}
            await drop_calls(conn, "live", live_ids - seen)  # not in queue_log at all (refused, direct, outbound)
            await conn.execute(delete(v).where(v.c.pbx == "live", v.c.callid.not_in(logged)))
            await conn.execute(delete(v).where(v.c.pbx == "live", v.c.caller_visit.is_(False)))
            imported = (await conn.execute(select(v.c.call_id).where(v.c.pbx == "imported",
                                                                     v.c.callid.in_(orphans)))).all()
            await drop_calls(conn, "imported", {r.call_id for r in imported})
            await conn.execute(update(calls).where(calls.c.pbx == "live", calls.c.recovered_how == "outbound")
                               .values(recovered=False, recovered_by=None, recovered_at=None, recovered_how=None))
        out = []
        for pbx in ("imported", "live"):
            rows_ = await daily_figures(engine, 0, 4e9, pbx=pbx, policy=CallPolicy())
            out.append({(d.queue, d.date): d.to_dict() for d in rows_})
        return out[0], out[1]
    finally:
        await engine.dispose()


# ---- the figures queue_log can know equal the live ones --------------------------------------------------
def test_every_capture_has_its_queue_log():
    assert len(QUEUE_LOGS) >= 20
    assert all((DATA / f"{n}.ami").exists() for n in QUEUE_LOGS)


@pytest.mark.parametrize("name", QUEUE_LOGS)
def test_daily_figures_equal_the_live_ones(name, cli_env, capsys):
    rc, _, err = import_(capsys, qlog(name), "--pbx", "imported")
    assert rc == 0, err
    run(store_live(cli_env, name, "live"))
    imported, live = run(comparable_figures(cli_env, name))
    assert set(imported) == set(live), (sorted(imported), sorted(live))
    fields = EXACT if name in PHONE_TRANSFERS else (*EXACT, "transfers", "bounced")
    for key in live:
        a, b = imported[key], live[key]
        assert {f: a[f] for f in fields} == {f: b[f] for f in fields}, key
        if b["asa_seconds"] is None:
            assert a["asa_seconds"] is None, key
        else:
            assert abs(a["asa_seconds"] - b["asa_seconds"]) <= 1.0, (key, a["asa_seconds"], b["asa_seconds"])


def test_the_comparison_covers_every_compared_figure(tmp_path):
    """The comparison is only worth something if the captures make each compared figure non-zero."""
    builder = QueueLogBuilder(CallPolicy(), pbx="x")
    records = []
    for name in QUEUE_LOGS:
        for line in read_file(qlog(name), builder.stats):
            records += [c.record for c in builder.feed(line)]
    records += [c.record for c in builder.finish()]
    visits = [v for r in records for v in r.queues]
    results = {str(v.result) for v in visits}
    assert {"answered", "abandoned", "timeout", "exited"} <= results
    assert any(r.short_abandon for r in records) and any(r.lost for r in records)
    assert any(r.recovered for r in records) and any(r.bounced for r in records)
    assert {str(t.kind) for r in records for t in r.transfers} == {"blind", "attended"}
    assert any(v.wait_seconds > 20 and v.result == "answered" for v in visits)  # below 100 % service level


# ---- idempotent, and never over a live call --------------------------------------------------------------
def test_importing_twice_changes_nothing(cli_env, capsys):
    files = [qlog(n) for n in QUEUE_LOGS]
    rc, out, _ = import_(capsys, *files)
    assert rc == 0
    first = run(tables(cli_env, skip=()))  # stored_at included
    assert len(first["calls"]) > 60 and "0 unchanged" in out
    rc, out, _ = import_(capsys, *reversed(files))  # in any order: merged by time
    assert rc == 0
    assert run(tables(cli_env, skip=())) == first
    assert f"0 imported, 0 updated, {len(first['calls'])} unchanged" in out


@pytest.mark.parametrize("name", ["load_a", "bounced", "attended_transfer", "sip_blind_refer", "abandon_then_callback"])
def test_import_after_the_live_journeys_changes_nothing(name, cli_env, capsys):
    run(store_live(cli_env, name, "default"))
    before = run(tables(cli_env, skip=()))
    rc, out, _ = import_(capsys, qlog(name))
    assert rc == 0
    assert run(tables(cli_env, skip=())) == before
    calls_in_log = len({f[1] for f in ql_lines(name) if f[4] == "ENTERQUEUE"})
    assert "0 imported, 0 updated" in out and f"{calls_in_log} skipped (recorded live)" in out


def test_a_call_imported_then_recorded_live_is_replaced_by_the_live_one(cli_env, capsys):
    assert import_(capsys, qlog("load_a"))[0] == 0
    imported = run(journeys(cli_env))
    assert imported and all(k[1].startswith("ql:") for k in imported)
    records = run(store_live(cli_env, "load_a", "default"))  # the daemon records the same calls later
    rc, out, _ = import_(capsys, qlog("load_a"))
    assert rc == 0
    after = run(journeys(cli_env))
    assert set(after) == {r.key for r in records}  # only the live rows are left
    assert all(after[r.key] == r.to_json() for r in records)
    assert f"{len(imported)} imported before and recorded live since removed" in out


def test_only_the_calls_not_recorded_live_are_imported(cli_env, capsys):
    """The live daemon started in the middle: the calls it recorded are left alone, the earlier ones imported."""
    run(store_live(cli_env, "answered", "default"))
    live = run(journeys(cli_env))
    rc, out, _ = import_(capsys, qlog("answered"), qlog("abandoned"), qlog("short_abandon"))
    assert rc == 0 and "2 imported" in out and "1 skipped" in out
    after = run(journeys(cli_env))
    assert {k: after[k] for k in live} == live
    assert sorted(k[1] for k in after if k not in live) == ["ql:1795368618.5", "ql:1795368630.11"]


# ---- what an imported call is --------------------------------------------------------------------------
def test_imported_calls_are_marked_and_invent_nothing(cli_env, capsys):
    names = ["load_a", "attended_transfer", "call_pickup", "sip_attended_refer"]
    assert import_(capsys, *[qlog(n) for n in names])[0] == 0
    stored = run(journeys(cli_env))
    agents = {f[3] for n in names for f in ql_lines(n)} - {"NONE"}
    for (pbx, call_id), j in stored.items():
        assert pbx == "default" and call_id.startswith("ql:") and j["source"] == "queue_log"
        assert j["caller_name"] == ""  # these files were written without log-caller-id-name
        assert set(j["operators"]) <= agents
        assert all(leg["interface"] is None for leg in j["legs"])
        assert all(t["to"] == "" and t["to_queue"] is None for t in j["transfers"] if t["kind"] == "attended")
        assert all(v["callid"] == call_id[3:] for v in j["queues"])
    # the live journeys of the same calls do have names: the import left them out, it did not lose them
    live = replay_files([str(DATA / "load_a.ami")]).journeys
    assert all(r.source == "ami" for r in live) and any(r.caller_name for r in live)
    # queue_log credits the member who was rung, not the phone that picked the call up: that is what it says
    pickup = next(j for j in stored.values() if j["caller"] == "+3725550258")
    assert pickup["operators"] == ["Anna Tamm"]


def test_the_caller_name_is_taken_when_asterisk_logged_it(tmp_path, cli_env, capsys):
    """``log-caller-id-name = yes`` adds the name as ENTERQUEUE's 4th field (``|`` in it written as ``_``)."""
    lines = Path(qlog("answered")).read_text(encoding="utf-8").splitlines()
    named = [line + "|Сергей Смирнов" if "|ENTERQUEUE|" in line else line for line in lines]
    path = tmp_path / "queue_log"
    path.write_text("\n".join(named) + "\n", encoding="utf-8")
    assert import_(capsys, str(path))[0] == 0
    (j,) = run(journeys(cli_env)).values()
    assert j["caller_name"] == "Сергей Смирнов" and j["caller"] == "+3725550101"


def test_a_lost_caller_answered_later_is_recovered_as_live(cli_env, capsys):
    assert import_(capsys, qlog("abandon_then_callback"))[0] == 0
    stored = run(journeys(cli_env))
    lost = next(j for j in stored.values() if j["lost"])
    answered = next(j for j in stored.values() if j["outcome"] == "answered")
    live = {r.queues[0].callid: r for r in replay_files([str(DATA / "abandon_then_callback.ami")]).journeys}
    live_lost = live[lost["call_id"][3:]]
    assert live_lost.recovered and lost["recovered"] and lost["recovered_how"] == "inbound"
    assert lost["recovered_by"] == answered["call_id"]
    assert live[answered["call_id"][3:]].call_id == live_lost.recovered_by
    assert abs(lost["recovered_at"] - (live_lost.recovered_at or 0)) <= 1.0


def test_a_lost_caller_recovered_by_a_live_call_names_the_live_call(cli_env, capsys):
    """The import of the lost call finds its caller answered in a call recorded live: recovered by that one."""
    records = run(store_live(cli_env, "abandon_then_callback", "default"))
    engine_url = cli_env

    async def drop_the_lost_one() -> str:
        engine = make_engine(engine_url)
        try:
            async with engine.begin() as conn:
                lost = next(r for r in records if r.lost)
                await drop_calls(conn, "default", {lost.call_id})
                return lost.queues[0].callid
        finally:
            await engine.dispose()

    callid = run(drop_the_lost_one())  # as if the daemon had not been running yet when that caller gave up
    rc, out, _ = import_(capsys, qlog("abandon_then_callback"))
    assert rc == 0 and "1 imported" in out and "1 skipped" in out
    j = run(journeys(cli_env))[("default", f"ql:{callid}")]
    answered = next(r for r in records if r.outcome == "answered")
    assert j["recovered"] and j["recovered_by"] == answered.call_id


def test_a_callback_by_an_operator_is_not_in_queue_log(cli_env, capsys):
    assert import_(capsys, qlog("outbound_callback"))[0] == 0
    (j,) = run(journeys(cli_env)).values()
    assert j["lost"] and not j["recovered"]
    assert replay_files([str(DATA / "outbound_callback.ami")]).journeys[0].recovered_how == "outbound"


def test_a_call_still_open_at_the_end_is_left_for_a_later_import(tmp_path, cli_env, capsys):
    lines = Path(qlog("answered")).read_text(encoding="utf-8").splitlines()
    cut = tmp_path / "queue_log"
    cut.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # no COMPLETEAGENT yet: still talking
    rc, out, _ = import_(capsys, str(cut))
    assert rc == 0 and "0 imported" in out and "1 unfinished at the end of the input" in out
    assert run(journeys(cli_env)) == {}
    assert import_(capsys, qlog("answered"))[0] == 0
    (j,) = run(journeys(cli_env)).values()
    assert j["outcome"] == "answered" and not j["uncertain"]


def test_a_call_that_went_silent_is_closed_uncertain(tmp_path, cli_env, capsys):
    """Lines stop in the middle of a talk, and the log goes on for days (call_pickup is 4 days later)."""
    lines = Path(qlog("answered")).read_text(encoding="utf-8").splitlines()
    cut = tmp_path / "queue_log"
    cut.write_text("\n".join(lines[:-1] + Path(qlog("call_pickup")).read_text().splitlines()) + "\n")
    rc, out, _ = import_(capsys, str(cut))
    assert rc == 0 and "1 without an end in the log" in out
    j = run(journeys(cli_env))[("default", "ql:1795368608.1")]
    assert j["uncertain"] and j["closed_reason"] == "no_end_in_queue_log" and j["outcome"] == "answered"
    assert j["legs"][0]["ended_at"] is None and j["talk_seconds"] == 0  # unknown, not invented
    assert j["hangup_by"] is None


def test_lines_of_a_call_that_started_before_the_input_are_ignored(tmp_path, cli_env, capsys):
    """The log was rotated in the middle of a call and only the newer file is given."""
    lines = Path(qlog("transfer_then_abandon")).read_text(encoding="utf-8").splitlines()
    path = tmp_path / "queue_log"
    path.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")  # the first ENTERQUEUE is in the older file
    rc, out, _ = import_(capsys, str(path))
    assert rc == 0
    stored = run(journeys(cli_env))
    # the call is known from its second visit only (sales, after the blind transfer): that is what is imported
    (j,) = stored.values()
    assert [v["queue"] for v in j["queues"]] == ["sales"] and j["outcome"] == "abandoned"
    assert "2 lines of calls that started before the input (ignored)" in out  # CONNECT, BLINDTRANSFER of support


def test_a_callid_used_again_is_another_call(tmp_path, cli_env, capsys):
    lines = Path(qlog("abandoned")).read_text(encoding="utf-8").splitlines()
    later = ["|".join([str(int(f.split("|")[0]) + 3600), *f.split("|")[1:]]) for f in lines]
    path = tmp_path / "queue_log"
    path.write_text("\n".join(lines + later) + "\n", encoding="utf-8")
    assert import_(capsys, str(path))[0] == 0
    stored = run(journeys(cli_env))
    start = int(lines[0].split("|")[0]) + 3600
    assert sorted(k[1] for k in stored) == ["ql:1795368618.5", f"ql:1795368618.5@{start}"]
    assert all(j["outcome"] == "abandoned" for j in stored.values())


def test_a_blind_transfer_to_another_queue_is_one_call_with_two_visits(cli_env, capsys):
    assert import_(capsys, qlog("bounced"))[0] == 0
    (j,) = run(journeys(cli_env)).values()
    assert [v["queue"] for v in j["queues"]] == ["support", "sales", "billing", "support"]
    assert [(t["kind"], t["to"]) for t in j["transfers"]] == [("blind", "sales"), ("blind", "billing"),
                                                              ("blind", "support")]
    assert j["bounced"] and j["operators"] == ["Boris Petrov", "Jüri Õunapuu", "Мария Иванова", "Anna Tamm"]
    assert [v["wait_seconds"] for v in j["queues"]] == [1.0, 1.0, 1.0, 8.0]  # Asterisk's whole seconds


# ---- input: gzip, bad lines, bad files, bad arguments ------------------------------------------------------
def test_gzip_files_import_like_plain_ones(tmp_path, cli_env, capsys):
    gz = tmp_path / "queue_log.1.gz"
    gz.write_bytes(gzip.compress(Path(qlog("load_a")).read_bytes()))
    assert import_(capsys, str(gz))[0] == 0
    from_gz = run(journeys(cli_env))
    rc, out, _ = import_(capsys, qlog("load_a"))
    assert rc == 0 and f"0 imported, 0 updated, {len(from_gz)} unchanged" in out


def test_bad_lines_are_counted_and_shown_with_their_line_numbers(tmp_path, cli_env, capsys):
    lines = Path(qlog("load_a")).read_text(encoding="utf-8").splitlines()
    garbage = ["hello world", "x|y|z", "notatime|1.2|support|NONE|ENTERQUEUE||1|1", "\x00\x01binary",
               "1795368800|1.2|support|NONE|bad event!|1"] * 3
    mixed = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 10 == 0 and garbage:
            mixed.append(garbage.pop())
    mixed += garbage
    path = tmp_path / "queue_log"
    path.write_text("\n".join(mixed) + "\n", encoding="utf-8")
    rc, out, err = import_(capsys, str(path))
    assert rc == 0
    shown = [e for e in err.splitlines() if ": bad line " in e]
    assert len(shown) == 10 and "... and 5 more bad lines" in err
    first_bad = next(i for i, line in enumerate(mixed, 1) if line not in lines)
    assert shown[0].startswith(f"onechance import-queue-log: bad line {path}:{first_bad}: ")
    assert "15 bad lines" in out and f"{len(lines) + 15} lines read" in out
    with_garbage = run(journeys(cli_env))
    rc, out, _ = import_(capsys, qlog("load_a"))
    assert f"0 imported, 0 updated, {len(with_garbage)} unchanged" in out  # the same calls as the clean file


def test_a_truncated_gzip_stops_the_import_before_anything_is_written(tmp_path, cli_env, capsys):
    data = gzip.compress(Path(qlog("load_a")).read_bytes())
    cut = tmp_path / "queue_log.2.gz"
    cut.write_bytes(data[: len(data) // 2])
    rc, out, err = import_(capsys, qlog("answered"), str(cut))
    assert rc == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "truncated gzip file" in err and str(cut) in err
    assert run(tables(cli_env))["calls"] == []


@pytest.mark.parametrize("what", ["missing", "directory", "ami", "corrupt_gzip"])
def test_an_unreadable_file_is_one_line_and_exit_1(what, tmp_path, cli_env, capsys):
    path = {"missing": tmp_path / "nope", "directory": tmp_path, "ami": DATA / "answered.ami",
            "corrupt_gzip": tmp_path / "bad.gz"}[what]
    if what == "corrupt_gzip":
        path.write_bytes(b"\x1f\x8b" + b"\xff" * 64)
    rc, out, err = import_(capsys, str(path))
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"onechance import-queue-log: {path}: ")
    assert run(tables(cli_env))["calls"] == []


@pytest.mark.parametrize("args, message", [
    ([], "nothing to import"),
    (["FILE", "--from-db", "sqlite:///x.db"], "not both"),
    (["FILE", "--table", "queue_log2"], "go with --from-db"),
    (["--from-db", "sqlite:///x.db", "--table", "queue_log; DROP TABLE calls"], "not a table name"),
    (["--from-db", "sqlite:///x.db", "--db-tz", "Mars/Olympus"], "unknown time zone"),
    (["--from-db", "mysql://u:secret@h/db"], "unsupported database"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message, cli_env, capsys):
    args = [qlog("answered") if a == "FILE" else a for a in args]
    rc, out, err = import_(capsys, *args)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err
    assert "secret" not in err


def test_several_pbxs_need_pbx(cli_env, capsys, tmp_path, monkeypatch):
    config = tmp_path / "onechance.toml"
    config.write_text('[[pbx]]\nname = "a"\nhost = "127.0.0.1"\n[[pbx]]\nname = "b"\nhost = "127.0.0.1"\n')
    rc, _, err = import_(capsys, qlog("answered"), "--config", str(config))
    assert rc == 2 and "choose one with --pbx" in err
    rc, out, _ = import_(capsys, qlog("answered"), "--config", str(config), "--pbx", "b")
    assert rc == 0 and "(PBX b)" in out
    assert list(run(journeys(cli_env))) == [("b", "ql:1795368608.1")]


def test_dry_run_writes_nothing(cli_env, capsys):
    run(store_live(cli_env, "answered", "default"))
    before = run(tables(cli_env, skip=()))
    rc, out, _ = import_(capsys, qlog("answered"), qlog("load_a"), "--dry-run")
    assert rc == 0
    assert run(tables(cli_env, skip=())) == before
    calls_in_load_a = len({f[1] for f in ql_lines("load_a") if f[4] == "ENTERQUEUE"})
    assert f"{calls_in_load_a} would be imported" in out and "1 skipped (recorded live)" in out


def test_dry_run_without_a_database_creates_none(tmp_path, monkeypatch, capsys):
    db = tmp_path / "none" / "onechance.db"
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ONECHANCE_DATABASE__URL", f"sqlite+aiosqlite:///{db}")
    rc, out, _ = import_(capsys, qlog("answered"), "--dry-run")
    assert rc == 0 and "1 would be imported" in out and "nothing checked against live calls" in out
    assert not db.exists()


# ---- a realtime queue_log table --------------------------------------------------------------------------
def realtime_table(metadata: MetaData, name: str = "queue_log") -> Table:
    """Asterisk's own schema (contrib/ast-db-manage/queue_log/versions/4105ee839f58_create_queue_log_table.py)."""
    return Table(name, metadata,
                 # BIGINT as Asterisk has it (SQLite numbers rows only for an INTEGER primary key)
                 Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
                 Column("time", DateTime()),
                 Column("callid", String(80)), Column("queuename", String(256)), Column("agent", String(80)),
                 Column("event", String(32)),
                 *(Column(f"data{i}", String(100)) for i in range(1, 6)))


def realtime_rows(name: str, zone: str) -> list[dict[str, Any]]:
    """The rows Asterisk writes for a file's lines (``queue_adaptive_realtime``: the data split in five, the
    last keeping the rest, as AST_NONSTANDARD_APP_ARGS does; the time in the PBX's local time)."""
    rows = []
    for line in Path(qlog(name)).read_text(encoding="utf-8").splitlines():
        epoch, callid, queue, agent, event, *rest = line.split("|")
        data = "|".join(rest).split("|", 4) if rest else []
        data += [""] * (5 - len(data))
        local = datetime.fromtimestamp(int(epoch), ZoneInfo(zone)).replace(tzinfo=None)
        rows.append({"time": local, "callid": callid, "queuename": queue, "agent": agent, "event": event,
                     **{f"data{i + 1}": d for i, d in enumerate(data)}})
    return rows


async def make_realtime_db(url: str, names: list[str], zone: str, extra: list[dict[str, Any]] = (),
                           table_name: str = "queue_log", drop: bool = False) -> None:
    metadata = MetaData()
    table = realtime_table(metadata, table_name)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            if drop:
                await conn.run_sync(metadata.drop_all)
                return
            await conn.run_sync(metadata.create_all)
            rows = [r for n in names for r in realtime_rows(n, zone)] + list(extra)
            await conn.execute(insert(table), rows)
    finally:
        await engine.dispose()


@pytest.fixture
def realtime_source(cli_env, tmp_path):
    """Where the realtime table lives: a SQLite file, or (PostgreSQL backend) the test's PostgreSQL database."""
    if cli_env.startswith("postgresql"):
        yield cli_env, "asterisk_queue_log"
        run(make_realtime_db(cli_env, [], "UTC", table_name="asterisk_queue_log", drop=True))
    else:
        yield f"sqlite:///{tmp_path / 'asterisk.db'}", "queue_log"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Tallinn"])
def test_a_realtime_table_imports_like_the_file(zone, realtime_source, cli_env, capsys):
    source, table = realtime_source
    names = ["load_a", "bounced", "attended_transfer", "abandon_then_callback"]
    bad = {"time": None, "callid": "1.1", "queuename": "support", "agent": "NONE", "event": "ENTERQUEUE",
           **{f"data{i}": "" for i in range(1, 6)}}
    run(make_realtime_db(source, names, zone, [bad], table_name=table))
    rc, out, err = import_(capsys, "--from-db", source, "--table", table, "--db-tz", zone, "--pbx", "table")
    assert rc == 0, err
    assert "1 bad lines" in out and f"bad line {table} row" in err
    assert import_(capsys, *[qlog(n) for n in names], "--pbx", "file")[0] == 0
    stored = run(journeys(cli_env))
    from_table = {k[1]: {**j, "pbx": ""} for k, j in stored.items() if k[0] == "table"}
    from_file = {k[1]: {**j, "pbx": ""} for k, j in stored.items() if k[0] == "file"}
    assert from_table == from_file and len(from_file) > 60


def test_a_realtime_table_with_a_single_data_column(tmp_path, cli_env, capsys):
    """Without queue_adaptive_realtime Asterisk writes the data, ``|`` and all, into one ``data`` column."""
    metadata = MetaData()
    table = Table("ql", metadata, Column("time", String(32)), Column("callid", String(80)),
                  Column("queuename", String(256)), Column("agent", String(80)), Column("event", String(32)),
                  Column("data", String(256)))
    url = f"sqlite:///{tmp_path / 'a.db'}"

    async def fill() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                rows = [{"time": datetime.fromtimestamp(int(f[0]), UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
                         "callid": f[1], "queuename": f[2], "agent": f[3], "event": f[4], "data": "|".join(f[5:])}
                        for f in ql_lines("bounced")]
                await conn.execute(insert(table), rows)
        finally:
            await engine.dispose()

    run(fill())
    assert import_(capsys, "--from-db", url, "--table", "ql", "--db-tz", "UTC")[0] == 0
    (j,) = run(journeys(cli_env)).values()
    assert [v["queue"] for v in j["queues"]] == ["support", "sales", "billing", "support"]


def test_a_missing_or_foreign_table_is_one_line_and_exit_1(tmp_path, cli_env, capsys):
    url = f"sqlite:///{tmp_path / 'asterisk.db'}"
    run(make_realtime_db(url, ["answered"], "UTC"))
    rc, out, err = import_(capsys, "--from-db", url, "--table", "queue_log_old")
    assert rc == 1 and out == "" and "no table 'queue_log_old'" in err and len(err.strip().splitlines()) == 1
    rc, out, err = import_(capsys, "--from-db", f"sqlite:///{tmp_path / 'x.db'}")
    assert rc == 1 and "no table 'queue_log'" in err


# ---- parsing ---------------------------------------------------------------------------------------------
def test_lines_parse_as_asterisk_writes_them():
    line = parse_line("1795368741|1795368721.65|support|Anna Tamm|ATTENDEDTRANSFER|BRIDGE|4f4e|8|12|1")
    assert (line.time, line.callid, line.queue, line.agent, line.event) == \
        (1795368741.0, "1795368721.65", "support", "Anna Tamm", "ATTENDEDTRANSFER")
    assert line.data == ("BRIDGE", "4f4e", "8", "12", "1")
    assert parse_line("1795368780|1795368780.97|support|NONE|ENTERQUEUE||+3725550111|1|").data == \
        ("", "+3725550111", "1")
    for bad in ("", "1|2|3", "abc|1|q|NONE|ENTERQUEUE", "nan|1|q|NONE|ENTERQUEUE", "1|1|q|NONE|"):
        with pytest.raises(ValueError):
            parse_line(bad)


def test_the_summary_counts_member_lines_apart(tmp_path, cli_env, capsys):
    """Member, pause and reload lines are not calls: read, not counted as bad, no call made of them."""
    path = tmp_path / "queue_log"
    extra = ["1795368600|NONE|NONE|NONE|QUEUESTART|", "1795368601|MANAGER|support|Anna Tamm|ADDMEMBER|",
             "1795368602|NONE|support|Anna Tamm|PAUSE|lunch", "1795368603|NONE|NONE|NONE|CONFIGRELOAD|"]
    path.write_text("\n".join(extra) + "\n" + Path(qlog("answered")).read_text(encoding="utf-8"), encoding="utf-8")
    rc, out, _ = import_(capsys, str(path))
    assert rc == 0 and "7 lines read" in out and "1 imported" in out and "0 bad lines" in out
    assert json.dumps(list(run(journeys(cli_env)))) == json.dumps([["default", "ql:1795368608.1"]])


def test_stored_json_round_trips_the_source(cli_env, capsys):
    assert import_(capsys, qlog("answered"))[0] == 0
    run(store_live(cli_env, "abandoned", "default"))
    sources = {k[1][:3]: j["source"] for k, j in run(journeys(cli_env)).items()}
    assert sources == {"ql:": "queue_log", "179": "ami"}


def test_call_ids_fit_the_column():
    assert all(len(f"ql:{f[1]}@{f[0]}") <= calls.c.call_id.type.length for n in QUEUE_LOGS for f in ql_lines(n))


def test_days_are_not_shifted(cli_env, capsys):
    """Imported visits join at the ENTERQUEUE second, the same UTC day as the live one."""
    assert import_(capsys, qlog("answered"))[0] == 0
    (j,) = run(journeys(cli_env)).values()
    assert j["queues"][0]["joined_at"] == 1795368609.0 and abs(j["started_at"] - 1795368609.0) < DAY

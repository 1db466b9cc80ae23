"""Helpers of the store tests: replayed journeys, table dumps, exact comparisons."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.journey import CallRecord, JourneyUpdate
from onechance.replay import replay_files
from onechance.store import JourneyWriter, stored_call
from onechance.store.models import calls, metadata
from onechance.store.rows import StoreItem

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(p.stem for p in DATA.glob("*.ami"))


def capture(name: str) -> str:
    return str(DATA / f"{name}.ami")


def final_records(*names: str, pbx: str = "") -> list[CallRecord]:
    """The final records of captures replayed one after the other (recoveries applied)."""
    return replay_files([capture(n) for n in names], pbx=pbx).journeys


def final_journeys(*names: str, pbx: str = "") -> list[dict[str, Any]]:
    """The final journey dicts of captures replayed one after the other (what ``replay --json`` prints)."""
    return [dict(r.to_json()) for r in final_records(*names, pbx=pbx)]


def update_stream(*names: str, pbx: str = "") -> list[StoreItem]:
    """The record of every update, and every recovery, in order (a call appears many times: more than the
    daemon submits, which is only each call's end and its recoveries)."""
    out: list[StoreItem] = []
    replay_files([capture(n) for n in names], pbx=pbx,
                 on_update=lambda u: out.append(u.record if isinstance(u, JourneyUpdate) else u))
    return out


async def dump(engine: AsyncEngine, skip: tuple[str, ...] = ("stored_at",)) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, without the columns in ``skip`` (for equality checks)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for name, table in metadata.tables.items():
            cols = [c for c in table.columns if c.name not in skip]
            rows = (await conn.execute(select(*cols))).all()
            out[name] = sorted((tuple(_freeze(v) for v in r) for r in rows), key=repr)
    return out


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


async def stored_journeys(engine: AsyncEngine) -> dict[tuple[str, str], dict[str, Any]]:
    """Every stored call as the API gives it (its JSON with the recovery columns applied)."""
    cols = (calls.c.pbx, calls.c.call_id, calls.c.journey, calls.c.lost, calls.c.recovered, calls.c.recovered_by,
            calls.c.recovered_at, calls.c.recovered_how)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(*cols))).all()
    return {(r.pbx, r.call_id): dict(stored_call(r)) for r in rows}


async def assert_store_holds(engine: AsyncEngine, calls_: list[CallRecord] | list[dict[str, Any]]) -> None:
    """The database holds exactly these calls: one row each, the JSON identical, and exactly the
    child rows they imply (nothing lost, nothing duplicated)."""
    journeys = [dict(c.to_json()) if isinstance(c, CallRecord) else c for c in calls_]
    expected = {(j["pbx"], j["call_id"]): j for j in journeys}
    assert len(expected) == len(journeys), "test bug: duplicate journeys in the expectation"
    stored = await stored_journeys(engine)
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    assert not missing, f"{len(missing)} journeys lost: {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected journeys: {extra[:5]}"
    for key, j in expected.items():
        assert stored[key] == j, f"stored journey {key} differs from the final one"
    tables = await dump(engine)
    assert len(tables["calls"]) == len(journeys)
    assert len(tables["queue_visits"]) == sum(len(j["queues"]) + len(j.get("consultations", [])) for j in journeys)
    assert len(tables["operator_legs"]) == sum(len(j["legs"]) for j in journeys)
    assert len(tables["transfers"]) == sum(len(j["transfers"]) for j in journeys)


async def wait_drained(writer: JourneyWriter, timeout: float = 60.0) -> None:
    """Wait until everything submitted is in the database (the spool included)."""
    deadline = time.monotonic() + timeout
    while True:
        if await writer.flush(timeout=max(0.1, deadline - time.monotonic())) and writer.spooled == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"writer not drained after {timeout}s: {writer.status()}")
        await asyncio.sleep(0.05)

"""Helpers of the store tests: replayed journeys, table dumps, exact comparisons."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.replay import replay_files
from onechance.store import JourneyWriter
from onechance.store.models import calls, metadata

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(p.stem for p in DATA.glob("*.ami"))


def capture(name: str) -> str:
    return str(DATA / f"{name}.ami")


def final_journeys(*names: str, pbx: str = "") -> list[dict[str, Any]]:
    """The final journey dicts of captures replayed one after the other (what ``replay --json`` prints)."""
    return [j.to_dict() for j in replay_files([capture(n) for n in names], pbx=pbx).journeys]


def update_stream(*names: str, pbx: str = "") -> list[dict[str, Any]]:
    """Every journey update as the daemon would submit it, in order (a call appears many times)."""
    out: list[dict[str, Any]] = []
    replay_files([capture(n) for n in names], pbx=pbx, on_update=lambda u: out.append(u.journey.to_dict()))
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
    async with engine.connect() as conn:
        rows = (await conn.execute(select(calls.c.pbx, calls.c.call_id, calls.c.journey))).all()
    return {(r.pbx, r.call_id): dict(r.journey) for r in rows}


async def assert_store_holds(engine: AsyncEngine, journeys: list[dict[str, Any]]) -> None:
    """The database holds exactly these journeys: one row each, the JSON identical, and exactly the
    child rows they imply (nothing lost, nothing duplicated)."""
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

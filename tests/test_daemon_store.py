"""`onechance run` with its store: journeys land in the database, the API answers from it, and a caller
lost before a restart is recovered after it."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import aiohttp

from onechance.ami.parser import AmiFramer
from onechance.demo import DemoPbx

from .daemonproc import daemon
from .livehelp import SECRET, capture, wait_until

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def split_before_second_call(raw: bytes) -> tuple[bytes, bytes]:
    """The capture cut just before the second call's first channel appears."""
    body = raw.partition(b"\r\n")[2]
    blocks = body.split(b"\r\n\r\n")
    starts = []
    for i, block in enumerate(blocks):
        (msg,) = AmiFramer().feed(block + b"\r\n\r\n") or (None,)
        if msg is not None and msg.event == "Newchannel" and msg.get("Uniqueid") == msg.get("Linkedid"):
            starts.append(i)
    cut = starts[1]
    first = b"\r\n\r\n".join(blocks[:cut]) + b"\r\n\r\n"
    second = b"\r\n\r\n".join(blocks[cut:])
    return BANNER + first, BANNER + second


async def run_once(stream: bytes, data_dir: Path) -> list[dict]:
    """Play ``stream`` to a fresh `onechance run` process using ``data_dir``; its calls once all ended."""
    pbx = DemoPbx(stream, speed=0, chunks=(1, 64), username="onechance", secret=SECRET, login_fail_delay=0.05)
    port = await pbx.start()
    try:
        async with daemon(ONECHANCE_AMI__HOST="127.0.0.1", ONECHANCE_AMI__PORT=str(port),
                          ONECHANCE_AMI__USERNAME="onechance", ONECHANCE_AMI__SECRET=SECRET,
                          ONECHANCE_DATA_DIR=str(data_dir), ONECHANCE_DATABASE__FLUSH_INTERVAL="0.05") as d:
            await wait_until(lambda: pbx.finished.is_set(), what="capture played")
            async with aiohttp.ClientSession() as s:
                calls = await d.calls_when(s, lambda cs: bool(cs) and all(c["ended_at"] for c in cs))
            await d.stop(signal.SIGINT)
        assert d.returncode == 0, d.log
        return calls
    finally:
        await pbx.stop()


def rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT caller, outcome, lost, recovered, recovered_by, call_id FROM calls "
                            "ORDER BY started_at").fetchall()


async def test_journeys_are_stored_and_a_lost_caller_is_recovered_across_a_restart(tmp_path: Path):
    first, second = split_before_second_call(capture("abandon_then_callback"))
    calls = await run_once(first, tmp_path)
    assert [(c["outcome"], c["recovered"]) for c in calls] == [("abandoned", False)]
    db = tmp_path / "onechance.db"
    (lost,) = rows(db)
    assert lost[:4] == ("+3725550111", "abandoned", 1, 0)

    # the daemon restarts; the same number calls again and is answered
    calls = await run_once(second, tmp_path)
    by_outcome = {c["outcome"]: c for c in calls}
    assert set(by_outcome) == {"abandoned", "answered"}  # the first from the store, the second live
    assert by_outcome["abandoned"]["recovered"] is True
    assert by_outcome["abandoned"]["recovered_by"] == by_outcome["answered"]["call_id"]
    stored = rows(db)
    assert [(r[1], r[3]) for r in stored] == [("abandoned", 1), ("answered", 0)]
    assert stored[0][4] == stored[1][5]


class _BrokenStore:
    async def list_calls(self, flt):
        raise ConnectionRefusedError("database down")

    async def get_call(self, call_id, pbx=None):
        raise ConnectionRefusedError("database down")


class _Calls:
    def __init__(self, calls: list[dict]) -> None:
        self._calls = calls

    async def list_calls(self, flt):
        return self._calls[: flt.limit]  # (only limits are asked below)

    async def get_call(self, call_id, pbx=None):
        return next((c for c in self._calls if c["call_id"] == call_id), None)

    def with_recovery(self, call):
        return call


def _call(call_id: str, started: float, updated: float, outcome: str = "answered") -> dict:
    return {"call_id": call_id, "pbx": "p", "started_at": started, "updated_at": updated, "outcome": outcome,
            "queues": []}


async def test_the_api_merges_store_and_memory_and_survives_a_store_outage():
    from onechance.sinks import CallFilter, MergedCallQuery

    memory = _Calls([_call("b", 20, 30, "abandoned"), _call("c", 30, 31)])
    store = _Calls([_call("a", 10, 11), _call("b", 20, 25, "in_progress")])
    merged = MergedCallQuery(store, memory)
    got = await merged.list_calls(CallFilter(limit=10))
    assert [(c["call_id"], c["outcome"]) for c in got] == [("c", "answered"), ("b", "abandoned"), ("a", "answered")]
    assert [c["call_id"] for c in await merged.list_calls(CallFilter(limit=2))] == ["c", "b"]
    assert (await merged.get_call("b"))["outcome"] == "abandoned"  # the newer copy wins
    assert (await merged.get_call("a"))["call_id"] == "a"

    down = MergedCallQuery(_BrokenStore(), memory)
    assert [c["call_id"] for c in await down.list_calls(CallFilter())] == ["c", "b"]
    assert (await down.get_call("c"))["call_id"] == "c"
    assert down.store_failures == 2

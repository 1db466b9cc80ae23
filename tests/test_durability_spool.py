"""The spool survives its directory being removed under it, and is bounded in size."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from onechance.store.spool import Spool, SpoolError, SpoolFull


def j(n: int) -> dict:
    return {"type": "call", "call_id": f"c{n}", "pbx": "p", "updated_at": float(n)}


def drain(spool: Spool) -> list[dict]:
    out = []
    while (batch := spool.read(100)) is not None:
        out.extend(batch.journeys)
        spool.commit(batch)
    return out


def test_a_removed_directory_is_recreated_with_every_journey_it_held(tmp_path):
    """rm -rf of the spool directory while journeys wait in it (several segments, one of them being appended
    to): the next check writes every segment back from the descriptors kept open; appends go on after it."""
    d = tmp_path / "spool"
    spool = Spool(d, segment_bytes=300)
    spool.open()
    spool.append([j(i) for i in range(1, 4)])
    spool.append([j(i) for i in range(4, 10)])
    batch = spool.read(2)  # part of the first segment is stored already
    spool.commit(batch)
    assert len(list(d.glob("spool-*.jsonl"))) >= 2
    shutil.rmtree(d)
    assert spool.damaged() == f"the spool directory {d} was removed"
    # reading still works through the kept descriptors (never mistaken for an empty segment and dropped)
    repaired = spool.check()
    assert repaired is not None and repaired.startswith(f"the spool directory {d} was removed: recreated it")
    assert spool.damaged() is None and spool.check() is None
    assert (d / ".lock").exists() and len(list(d.glob("spool-*.jsonl"))) >= 2
    spool.append([j(10)])
    assert [x["call_id"] for x in drain(spool)] == [f"c{i}" for i in range(3, 11)]
    spool.close()
    # and another process finds the directory locked while it is open, free afterwards
    again = Spool(d)
    again.open()
    again.close()


def test_a_removed_segment_is_written_back_and_a_replaced_directory_relocked(tmp_path):
    d = tmp_path / "spool"
    spool = Spool(d)
    spool.open()
    spool.append([j(1), j(2)])
    (segment,) = d.glob("spool-*.jsonl")
    segment.unlink()
    assert "was removed" in (spool.damaged() or "")
    spool.check()
    assert segment.exists()
    # the whole directory replaced by an empty one (rm -rf; mkdir)
    shutil.rmtree(d)
    d.mkdir()
    assert spool.damaged() == f"the spool directory {d} was replaced"
    spool.check()
    other = Spool(d)
    with pytest.raises(SpoolError, match="in use by another onechance process"):
        other.open()
    assert [x["call_id"] for x in drain(spool)] == ["c1", "c2"]
    spool.close()


def test_reading_a_removed_segment_before_any_check_loses_nothing(tmp_path):
    d = tmp_path / "spool"
    spool = Spool(d)
    spool.open()
    spool.append([j(1), j(2)])
    shutil.rmtree(d)
    assert [x["call_id"] for x in drain(spool)] == ["c1", "c2"]
    spool.close()


def test_the_spool_refuses_appends_past_its_bound(tmp_path):
    spool = Spool(tmp_path, segment_bytes=200, max_bytes=500)
    spool.open()
    n = 0
    with pytest.raises(SpoolFull, match=r"the spool .* is full: \d+ bytes of at most 500 \(database.spool_max_bytes\)"):
        for n in range(1, 100):
            spool.append([j(n)])
    assert spool.disk_bytes <= 500
    kept = spool.journeys
    assert kept == n - 1
    # room again once journeys are stored (their segments deleted)
    assert len(drain(spool)) == kept
    spool.append([j(1000)])
    assert spool.journeys == 1
    spool.close()


async def test_a_full_spool_keeps_calls_in_memory_up_to_a_bound_then_drops_and_counts_them(tmp_path, caplog):
    """The database down and the spool at its bound: calls wait in memory up to memory_max, then each new one
    is dropped, counted (metric, log) and reported at close, where the rest are reported lost (exit 1 in the
    daemon)."""
    from prometheus_client import CollectorRegistry

    from onechance.store import JourneyWriter, make_engine

    from .storehelp import final_records

    records = final_records("load_a")
    assert len(records) > 30
    registry = CollectorRegistry()
    engine = make_engine("postgresql+asyncpg://nobody:pw@127.0.0.1:1/nothing")
    writer = JourneyWriter(engine, tmp_path / "spool", registry, queue_size=5, memory_max=12, flush_interval=0.02,
                           retry_interval=0.05, spool_max_bytes=3000)
    await writer.start()
    try:
        for r in records[:30]:
            writer.submit(r)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        spooled = writer.spooled
        assert 0 < spooled < 5  # what fits under 3000 bytes
        assert writer.dropped == 30 - spooled - writer.in_memory > 0
        assert writer.in_memory <= 12
        assert registry.get_sample_value("onechance_store_journeys_dropped_total") == writer.dropped
        assert registry.get_sample_value("onechance_store_spool_max_bytes") == 3000
        assert "DROPPED" in caplog.text and "is full" in caplog.text
        assert writer.problem() is not None
    finally:
        await writer.close(timeout=0.5)
        await engine.dispose()
    assert writer.lost == writer.in_memory > 0
    assert f"{writer.lost} LOST" in caplog.text and f"{writer.dropped} calls were DROPPED" in caplog.text
    assert writer.unsaved == writer.lost + writer.dropped

"""The captures delivered through a real TCP socket, in random 1-64 byte chunks, give exactly the
journeys of the file replay (multi-byte names split across reads included)."""

from __future__ import annotations

import asyncio
import random

import pytest

from onechance.ami.parser import AmiFramer
from onechance.journey import JourneyTracker
from onechance.replay import JourneyLog, replay_files

from .fakeami import capture_body, streaming_server
from .truthcheck import DATA, check_truth, load_truth, scenarios


async def journeys_over_tcp(raw: bytes, seed: int) -> tuple[list[dict], AmiFramer]:
    """The server writes random 1-64 byte chunks; TCP may coalesce them on loopback, so the client also
    reads random 1-64 byte amounts: the framer really sees messages and characters cut anywhere."""
    rng = random.Random(seed)
    framer = AmiFramer()
    tracker = JourneyTracker()
    log = JourneyLog()
    reads = 0
    async with streaming_server(capture_body(raw), seed=seed) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            while data := await reader.read(rng.randint(1, 64)):
                reads += 1
                for msg in framer.iter_feed(data):
                    log.add(tracker.feed(msg))
        finally:
            writer.close()
    assert reads >= len(raw) // 64
    return [j.to_json() for j in log.ordered(tracker)], framer


@pytest.mark.parametrize("name", scenarios())
async def test_chunked_tcp_gives_identical_journeys(name):
    raw = (DATA / f"{name}.ami").read_bytes()
    expected = [j.to_json() for j in replay_files([str(DATA / f"{name}.ami")]).journeys]
    got, framer = await journeys_over_tcp(raw, seed=sum(name.encode()))
    assert got == expected
    assert framer.bad_messages == 0
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert check_truth(load_truth(name), got) == []


async def test_multibyte_names_split_across_reads_survive():
    raw = (DATA / "bounced.ami").read_bytes()
    # 1-3 byte chunks: every Cyrillic (2-byte) and Estonian letter is split somewhere
    framer = AmiFramer()
    tracker = JourneyTracker()
    async with streaming_server(capture_body(raw), seed=7, lo=1, hi=3) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        while data := await reader.read(3):
            for msg in framer.iter_feed(data):
                tracker.feed(msg)
        writer.close()
    names = {m for m in tracker.members.values()}
    assert {"Jüri Õunapuu", "Мария Иванова", "Дмитрий Орлов"} <= names
    assert not any("\ufffd" in n for n in names)

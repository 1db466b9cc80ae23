"""A stand-in for the daemon's store path, run as a real process by the SIGKILL test.

``python -m tests.store_driver spool CAPTURE...``: replays the captures and submits every journey update
to a :class:`JourneyWriter` on ``ONECHANCE_DATABASE__URL`` (unreachable in the test), waits until
everything is in the spool, prints ``SPOOLED <n>`` and keeps running (retrying) until killed.

``python -m tests.store_driver drain``: starts a writer (which writes what the spool holds), waits
until the spool is empty, prints ``DRAINED`` and exits.
"""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import CollectorRegistry

from onechance.config import load_settings
from onechance.journey import JourneyUpdate
from onechance.replay import replay_files
from onechance.store import JourneyWriter, engine_from_settings


async def spool(paths: list[str]) -> None:
    settings = load_settings()
    engine = engine_from_settings(settings)
    writer = JourneyWriter.from_settings(settings, engine, CollectorRegistry(), flush_interval=0.01)
    await writer.start()
    updates: list = []
    replay_files(paths, on_update=lambda u: updates.append(u.record if isinstance(u, JourneyUpdate) else u))
    for i, u in enumerate(updates):
        writer.submit(u)
        if i % 50 == 0:
            await asyncio.sleep(0)
    while writer.queue_depth:
        await writer.flush(timeout=5)
    print(f"SPOOLED {writer.spooled}", flush=True)
    await asyncio.Event().wait()  # the daemon lives on, retrying, until SIGKILL


async def drain() -> None:
    settings = load_settings()
    engine = engine_from_settings(settings)
    writer = JourneyWriter.from_settings(settings, engine, CollectorRegistry(), flush_interval=0.01)
    await writer.start()
    while not (await writer.flush(timeout=5) and writer.spooled == 0):
        await asyncio.sleep(0.1)
    await writer.close()
    await engine.dispose()
    print("DRAINED", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "spool":
        asyncio.run(spool(sys.argv[2:]))
    else:
        asyncio.run(drain())

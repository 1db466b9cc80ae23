"""A stand-in for the daemon's store path, run as a real process by the SIGKILL test.

``python -m tests.store_driver spool CAPTURE...``: replays the captures and submits every journey update
to a :class:`JourneyWriter` on ``ONECHANCE_DATABASE__URL`` (unreachable in the test), waits until
everything is in the spool, prints ``SPOOLED <n>`` and keeps running (retrying) until killed.

``python -m tests.store_driver drain``: starts a writer (which writes what the spool holds), waits
until the spool is empty, prints ``DRAINED`` and exits.

``python -m tests.store_driver cancel-close CAPTURE...``: starts a writer, prints ``READY`` once the database
answered and waits for a line on stdin (the test locks the database meanwhile); then submits the captures'
final journeys, waits until they have left the queue (a batch being written), prints ``IN_FLIGHT <queue
depth> <spooled>``, cancels a ``close()`` 0.2 s after it began (a second SIGTERM does that to the daemon),
prints ``SPOOLED <n>`` and exits as the daemon then does: the engine disposed, the process gone (which is
what releases the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def cancel_close(paths: list[str]) -> None:
    settings = load_settings()
    engine = engine_from_settings(settings)
    writer = JourneyWriter.from_settings(settings, engine, CollectorRegistry(), flush_interval=0.02)
    await writer.start()
    if not await writer.wait_ready(timeout=30):
        raise SystemExit(f"the database did not answer: {writer.status()}")
    journeys = replay_files(paths).journeys
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for j in journeys:
        writer.submit(j)
    for _ in range(100):  # the batch leaves the queue: it is being written
        if writer.queue_depth == 0:
            break
        await asyncio.sleep(0.01)
    print(f"IN_FLIGHT {writer.queue_depth} {writer.spooled}", flush=True)
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0.2)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    print(f"SPOOLED {writer.spooled}", flush=True)
    await engine.dispose()


if __name__ == "__main__":
    if sys.argv[1] == "spool":
        asyncio.run(spool(sys.argv[2:]))
    elif sys.argv[1] == "cancel-close":
        asyncio.run(cancel_close(sys.argv[2:]))
    else:
        asyncio.run(drain())

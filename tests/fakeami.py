"""A small asyncio fake of the Asterisk Manager Interface, for tests.

It speaks the AMI wire protocol over a real TCP socket on loopback and sends a recorded capture's
bytes in random small chunks (1-64 bytes by default), so multi-byte UTF-8 characters and message
terminators are split across TCP reads exactly as they can be in production.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import asynccontextmanager

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def capture_body(raw: bytes) -> bytes:
    """The capture without its banner line (the server sends its own)."""
    if raw.startswith(b"Asterisk Call Manager/"):
        return raw.partition(b"\r\n")[2]
    return raw


def random_chunks(data: bytes, rng: random.Random, lo: int = 1, hi: int = 64) -> Iterator[bytes]:
    i = 0
    n = len(data)
    while i < n:
        step = rng.randint(lo, hi)
        yield data[i : i + step]
        i += step


class StreamingAmiServer:
    """Sends ``banner + body`` to each client in random chunks, then closes (``close_after``) or
    keeps the connection open."""

    def __init__(self, body: bytes, *, seed: int = 0, lo: int = 1, hi: int = 64,
                 close_after: bool = True) -> None:
        self.body = body
        self.seed = seed
        self.lo, self.hi = lo, hi
        self.close_after = close_after
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.chunks_sent = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng = random.Random(self.seed)
        try:
            for chunk in random_chunks(BANNER + self.body, rng, self.lo, self.hi):
                writer.write(chunk)
                self.chunks_sent += 1
                if self.chunks_sent % 64 == 0:
                    await writer.drain()
            await writer.drain()
            if not self.close_after:
                await reader.read()  # until the client goes away
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@asynccontextmanager
async def streaming_server(body: bytes, **kw):  # type: ignore[no-untyped-def]
    srv = StreamingAmiServer(body, **kw)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


# The fake Asterisk that also answers Login (accepting or refusing), Ping, CoreShowChannels, QueueStatus
# and Logoff, keeps streaming a capture across reconnections like a live PBX and injects faults (cuts,
# silence, restarts) is in the package, because `onechance run` uses it as its demo PBX:
# onechance.demo.DemoPbx (the daemon tests use it through tests/livehelp.py).

"""``onechance demo``'s alert receiver: a local webhook endpoint that logs every alert it gets, so a newcomer sees
alerts arriving without wiring Slack or Alertmanager first."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from aiohttp import web

__all__ = ["DemoReceiver"]

log = logging.getLogger("onechance.demo.receiver")


class DemoReceiver:
    """A webhook receiver on a loopback socket bound at construction (its URL is known before it runs)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/alerts"
        self.received = 0
        self._done = asyncio.Event()

    async def _alert(self, request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400)
        self.received += 1
        alerts = payload.get("alerts") if payload.get("kind") == "digest" else [payload]
        for alert in alerts or []:
            log.info("demo receiver got an alert (%s): %s", alert.get("kind"), alert.get("text"))
        return web.Response(status=204)

    async def run(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._alert)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.SockSite(runner, self.sock)
        await site.start()
        try:
            await self._done.wait()
        finally:
            await runner.cleanup()

    async def aclose(self) -> None:
        self._done.set()

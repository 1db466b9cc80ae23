"""The HTTP API (aiohttp): health, readiness, Prometheus metrics and the calls.

``make_app`` builds the application from its dependencies only; the composition root (``compose.py``) passes
the registry, the call query (the store merged with the recent calls) and the daemon's status (readiness and
the calls in progress).

===========================  ====================================================================
``GET /healthz``             the process runs: ``{"status": "ok"}``
``GET /readyz``              200 when every PBX is logged in and resynced, else 503 saying why
``GET /metrics``             Prometheus exposition
``GET /api/calls``           finished calls, newest first: ``?since=&outcome=&queue=&pbx=&limit=``
``GET /api/calls/{call_id}`` one call (in progress or finished), ``?pbx=`` when ids clash
``GET /api/live``            calls in progress and who waits in which queue
===========================  ====================================================================

``/api/*`` needs ``Authorization: Bearer <http.token>`` when a token is configured.  Errors are JSON:
``{"error": "..."}`` with 400 (bad parameter), 401, 404.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from .journey import Outcome
from .params import BadRequest, parse_time
from .sinks import CallFilter, CallQuery
from .status import DaemonStatus

if TYPE_CHECKING:
    from .api_worklist import AlertQuery
    from .worklist import Worklist

__all__ = ["MAX_LIMIT", "make_app", "parse_filter"]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
CALL_PARAMS = frozenset({"since", "outcome", "queue", "pbx", "limit"})
OUTCOMES = frozenset(str(o) for o in Outcome)



def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


def parse_filter(query: Any) -> CallFilter:
    """``/api/calls`` query parameters -> :class:`CallFilter` (raises :class:`BadRequest`)."""
    unknown = sorted(set(query.keys()) - CALL_PARAMS)
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(CALL_PARAMS))}")
    since = parse_time(query["since"]) if query.get("since") else None
    outcomes = None
    if query.get("outcome"):
        outcomes = frozenset(o.strip() for o in query["outcome"].split(",") if o.strip())
        bad = sorted(outcomes - OUTCOMES)
        if bad:
            raise BadRequest(f"outcome: unknown {', '.join(bad)}; one or more of {', '.join(sorted(OUTCOMES))}")
    limit = DEFAULT_LIMIT
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    queue = query.get("queue") or None
    pbx = query.get("pbx") or None
    return CallFilter(since=since, outcomes=outcomes, queue=queue, pbx=pbx, limit=limit)


def make_app(
    *,
    registry: CollectorRegistry,
    calls: CallQuery,
    status: DaemonStatus,
    token: str | None = None,
    version: str = "",
    worklist: Worklist | None = None,
    alerts: AlertQuery | None = None,
) -> web.Application:
    """The aiohttp application; ``token`` protects ``/api/*`` when set."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def api_guard(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if expected is not None:
            # header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise (500)
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="onechance"'})
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok", "version": version})

    async def readyz(request: web.Request) -> web.Response:
        ok, detail = status.readiness()
        return _json({"ready": ok, **detail}, status=200 if ok else 503)

    async def list_calls(request: web.Request) -> web.Response:
        flt = parse_filter(request.query)
        return _json({"calls": await calls.list_calls(flt)})

    async def get_call(request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        unknown = sorted(set(request.query.keys()) - {"pbx"})
        if unknown:
            raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; allowed: pbx")
        pbx = request.query.get("pbx") or None
        live_call = status.live_call(call_id, pbx)
        if live_call is not None:
            return _json(live_call)
        found = await calls.get_call(call_id, pbx)
        if found is None:
            return _error(404, f"no call {call_id!r}" + (f" on PBX {pbx!r}" if pbx else ""))
        return _json(found)

    async def live_calls(request: web.Request) -> web.Response:
        if request.query:
            raise BadRequest("/api/live takes no parameters")
        return _json(status.live())

    from .api_worklist import add_worklist_routes

    app = web.Application(middlewares=[api_guard])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_get("/api/live", live_calls)
    if worklist is not None and alerts is not None:
        add_worklist_routes(app, worklist, alerts)
    return app

"""The HTTP API (aiohttp): health, readiness, Prometheus metrics, the calls, queues and operators.

``make_app`` builds the application from its dependencies only; the composition root (``compose.py``) passes
the registry, the call query (the store merged with the recent calls), the daemon's status (readiness, the
calls in progress, queue members) and the day's figures from the store.  ``docs/api.md`` is the reference,
``GET /api/openapi.json`` the machine-readable description (``onechance.api_openapi``).

===========================  ====================================================================
``GET /healthz``             the process runs: ``{"status": "ok"}``
``GET /readyz``              200 when every PBX is logged in and resynced, else 503 saying why
``GET /metrics``             Prometheus exposition
``GET /api/calls``           finished calls, filtered and paged (``total``, ``next``); CSV with ``Accept: text/csv``
``GET /api/calls/{call_id}`` one call (in progress or finished), ``?pbx=`` when ids clash
``GET /api/live``            calls in progress and who waits in which queue
``GET /api/queues``          per queue: waiting, oldest wait, members by state, the day's figures
``GET /api/operators``       per queue member: state, queues, the day's calls answered and talk time
``GET /api/openapi.json``    the OpenAPI 3.1 description (no token needed)
===========================  ====================================================================

``/api/*`` needs ``Authorization: Bearer <http.token>`` (the scheme in any case) when a token is configured.
Errors are one-line JSON, ``{"error": "..."}``: 400 (bad parameter), 401, 404, 405; the front
(:mod:`onechance.http_front`) adds 408, 413, 431 and 503 (busy, with ``Retry-After``).

``/metrics`` is written by :class:`~onechance.metrics.Exposition` (the text format, fast), at most
:data:`METRICS_RENDERS` times a second (a flood of scrapes gets the last render again); gzip when asked,
compressed in a worker thread.  With query parameters (``name[]=``) prometheus_client's own handler answers.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from .api_calls import MAX_LIMIT, add_call_routes, parse_filter
from .http_front import FRONT_KEY, HttpFront, HttpLimits, Refusal
from .metrics import CONTENT_TYPE, Exposition, MetricsCache
from .params import BadRequest
from .sinks import CallPages
from .status import DaemonStatus

if TYPE_CHECKING:
    from .api_queues import DayFigures
    from .api_worklist import AlertQuery
    from .worklist import Worklist

__all__ = ["MAX_LIMIT", "METRICS_KEY", "OPENAPI_PATH", "authorized", "make_app", "metrics_handler", "parse_filter"]

log = logging.getLogger(__name__)

OPENAPI_PATH = "/api/openapi.json"
METRICS_RENDERS = 5  # fresh /metrics renders a second at most
GZIP_FROM = 16 * 1024  # bytes: smaller answers are sent as they are
#: the application's ``/metrics`` renderer (for tests and tools: its render count)
METRICS_KEY = web.AppKey("onechance_metrics", MetricsCache)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


def authorized(header: str, token: bytes) -> bool:
    """``Authorization: Bearer <token>``, the scheme in any case (RFC 9110: case-insensitive); the token
    compared in constant time."""
    # header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise (500)
    raw = header.encode("utf-8", "surrogateescape").strip()
    scheme, _sep, given = raw.partition(b" ")
    token_ok = hmac.compare_digest(given.strip(), token)
    return token_ok and scheme.lower() == b"bearer"


def make_app(
    *,
    registry: CollectorRegistry,
    calls: CallPages,
    status: DaemonStatus,
    token: str | None = None,
    version: str = "",
    worklist: Worklist | None = None,
    alerts: AlertQuery | None = None,
    figures: DayFigures | None = None,
    timezone: str | None = None,
    region: str | None = None,
    limits: HttpLimits | None = None,
) -> web.Application:
    """The aiohttp application; ``token`` protects ``/api/*`` when set.  ``figures`` gives the day's figures
    of ``/api/queues`` and ``/api/operators`` (in ``timezone``, default the machine's); ``region`` reads caller
    numbers given without a country code; ``limits`` bound the front (its defaults when not given)."""
    from .api_openapi import openapi_document
    from .api_queues import add_queue_routes

    expected = token.encode() if token else None
    description = openapi_document(version)

    @web.middleware
    async def api_guard(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if (expected is not None and request.path != OPENAPI_PATH
                and not authorized(request.headers.get("Authorization", ""), expected)):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="onechance"'})
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except web.HTTPException as exc:
            if exc.status >= 400:
                headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
                if isinstance(exc, Refusal):  # the front's: its own message; the connection closed if it says so
                    resp = _error(exc.status, exc.message, headers)
                    if exc.close:
                        resp.force_close()
                    return resp
                return _error(exc.status, exc.reason, headers)
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, "internal error (logged)")

    health = {"status": "ok", "version": version}  # also what the front answers at the door (http_front)

    async def healthz(request: web.Request) -> web.Response:
        return _json(health)

    async def readyz(request: web.Request) -> web.Response:
        ok, detail = status.readiness()
        return _json({"ready": ok, **detail}, status=200 if ok else 503)

    async def openapi(request: web.Request) -> web.Response:
        if request.query:
            raise BadRequest(f"{OPENAPI_PATH} takes no parameters")
        return _json(description)

    from .api_worklist import add_worklist_routes

    front = HttpFront(limits or HttpLimits(), token=token, registry=registry,
                      health=json.dumps(health, ensure_ascii=False).encode())
    app = web.Application(middlewares=[api_guard], client_max_size=front.limits.max_body_size)
    app[FRONT_KEY] = front
    app.on_startup.append(front.install)  # its middleware last, inside the pages' (added after this)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app[METRICS_KEY] = MetricsCache(Exposition(registry), per_second=METRICS_RENDERS)
    app.router.add_get("/metrics", metrics_handler(registry, app[METRICS_KEY]))
    add_call_routes(app, calls, status, region=region)
    add_queue_routes(app, status, figures, timezone=timezone)
    app.router.add_get(OPENAPI_PATH, openapi)
    if worklist is not None and alerts is not None:
        add_worklist_routes(app, worklist, alerts)
    return app


def metrics_handler(registry: CollectorRegistry,
                    cache: MetricsCache) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``GET /metrics``: the fast exposition, rendered at most :data:`METRICS_RENDERS` times a second."""
    filtered = make_aiohttp_handler(registry)

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query:  # name[]=...: prometheus_client's own handler (rare; not the fast path)
            return await filtered(request)
        body = cache.get()
        headers = {"Content-Type": CONTENT_TYPE}
        if len(body) >= GZIP_FROM and "gzip" in request.headers.get("Accept-Encoding", "").lower():
            body = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, body, 1)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    return handler

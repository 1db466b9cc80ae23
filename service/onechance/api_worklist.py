"""The callback worklist and the alerts over HTTP (``/api/callbacks``, ``/api/alerts``).

===================================================  =================================================================
``GET  /api/callbacks``                              ``{"callbacks": [...]}``, oldest lost first; ``?state=`` waiting,
                                                     claimed, done, open (= waiting,claimed; the default), all;
                                                     ``?queue=``, ``?pbx=``
``GET  /api/callbacks/{id}``                         one entry
``POST /api/callbacks/{id}/claim``                   ``{"by": "Anna"}``: who calls back
``POST /api/callbacks/{id}/note``                    ``{"note": "..."}``
``POST /api/callbacks/{id}/done``                    ``{"reason": "reached" | "gave_up", "note": "..."}``
``GET  /api/alerts``                                 ``{"alerts": [...]}``, newest first, with each channel's delivery;
                                                     ``?since=``, ``?kind=``, ``?queue=``, ``?pbx=``, ``?limit=``
===================================================  =================================================================

Bodies are JSON or form-encoded.  Behind the API token like every ``/api/*``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .journey import AlertKind
from .params import BadRequest, multi, parse_time
from .worklist import NotFound, Worklist, WorklistError

__all__ = ["AlertQuery", "add_worklist_routes", "parse_states"]

log = logging.getLogger(__name__)

STATES = ("waiting", "claimed", "done")
MAX_BODY = 16 * 1024

AlertQuery = Callable[[Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]


def parse_states(query: Mapping[str, str] | Any) -> tuple[str, ...]:
    wanted = multi(query, "state") or ["open"]
    out: list[str] = []
    for s in wanted:
        if s == "open":
            out += ["waiting", "claimed"]
        elif s == "all":
            out += list(STATES)
        elif s in STATES:
            out.append(s)
        else:
            raise BadRequest(f"state: unknown {s!r}; one or more of waiting, claimed, done, open, all")
    return tuple(dict.fromkeys(out))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def _body(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"the body is larger than {MAX_BODY} bytes")
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return {str(k): str(v) for k, v in data.items() if v is not None}
    form = await request.post()
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def add_worklist_routes(app: web.Application, worklist: Worklist, alerts: AlertQuery) -> None:
    """Add the worklist and alert routes to the API application."""

    async def guarded(request: web.Request, work: Callable[[], Awaitable[web.Response]]) -> web.Response:
        try:
            return await work()
        except NotFound as exc:
            return _json({"error": str(exc)}, 404)
        except (WorklistError, BadRequest) as exc:
            return _json({"error": str(exc)}, 400)

    async def list_callbacks(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            unknown = sorted(set(request.query.keys()) - {"state", "queue", "pbx"})
            if unknown:
                raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; allowed: pbx, queue, state")
            states = parse_states(request.query)
            entries = worklist.entries(states, multi(request.query, "queue"), multi(request.query, "pbx"))
            return _json({"callbacks": [worklist.view(e) for e in entries]})
        return await guarded(request, work)

    async def get_callback(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            return _json(worklist.view(worklist.get(request.match_info["id"])))
        return await guarded(request, work)

    async def act(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            entry_id, action = request.match_info["id"], request.match_info["action"]
            body = await _body(request)
            if action == "claim":
                entry = await worklist.claim(entry_id, body.get("by", ""))
            elif action == "note":
                entry = await worklist.note(entry_id, body.get("note", ""))
            elif action == "done":
                entry = await worklist.done(entry_id, body.get("reason", ""), body.get("note"))
            else:
                return _json({"error": f"unknown action {action!r}: claim, note or done"}, 404)
            return _json(worklist.view(entry))
        return await guarded(request, work)

    async def list_alerts(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            query = request.query
            unknown = sorted(set(query.keys()) - {"since", "kind", "queue", "pbx", "limit"})
            if unknown:
                raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; allowed: kind, limit, pbx, queue, "
                                  "since")
            kinds = multi(query, "kind")
            bad = [k for k in kinds if k not in AlertKind._value2member_map_]
            if bad:
                raise BadRequest(f"kind: unknown {', '.join(bad)}")
            params: dict[str, Any] = {"kinds": kinds or None, "queue": multi(query, "queue") or None,
                                      "pbx": multi(query, "pbx") or None}
            params["since"] = parse_time(query["since"]) if query.get("since") else None
            try:
                params["limit"] = int(query.get("limit", "100"))
            except ValueError:
                raise BadRequest("limit: expected a whole number from 1 to 1000") from None
            if not 1 <= params["limit"] <= 1000:
                raise BadRequest("limit: expected a whole number from 1 to 1000")
            return _json({"alerts": await alerts(params)})
        return await guarded(request, work)

    app.router.add_get("/api/callbacks", list_callbacks)
    app.router.add_get("/api/callbacks/{id}", get_callback)
    app.router.add_post("/api/callbacks/{id}/{action}", act)
    app.router.add_get("/api/alerts", list_alerts)


async def bounded(coro: Awaitable[Any], timeout: float) -> Any:
    """Await with a timeout (a store query that never answers must not hold a request)."""
    async with asyncio.timeout(timeout):
        return await coro

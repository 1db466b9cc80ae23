"""The calls over HTTP: ``GET /api/calls`` (filters, paging, CSV), ``GET /api/calls/{call_id}``, ``GET /api/live``.

``docs/api.md`` is the reference.  In short, ``/api/calls`` answers
``{"calls": [...], "total": N, "next": "/api/calls?...&cursor=..." | null, "partial": false}``: the calls that
match every filter given (a filter with several values -- repeated or comma-separated -- matches any of them),
``limit`` at a time, in ``order`` (``desc``: newest first, by start time, then call id, then PBX); ``next`` is
the link to the following page (the same parameters with an opaque ``cursor``, or ``offset`` when the client
pages by offset); ``partial`` says the store could not be asked and the calls in memory answered alone.
With ``Accept: text/csv`` the same page comes as CSV, ``total`` in ``X-Total-Count`` and ``next`` in a
``Link: <...>; rel="next"`` header.

Each call is the journey of ``onechance replay --json`` with ``started_at_iso`` and ``ended_at_iso`` (UTC,
ISO 8601) next to the epoch fields: they are added here, never stored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .journey import CallJson, Direction, Outcome
from .journey.numbers import number_key
from .params import BadRequest, check_known, multi, multi_bool, parse_int, parse_time, single
from .sinks import CallFilter, CallKey, CallPage, CallPages, call_key
from .status import DaemonStatus, LiveKey

__all__ = [
    "CALL_PARAMS",
    "CHUNK",
    "CSV_COLUMNS",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "add_call_routes",
    "calls_json",
    "csv_cell",
    "decode_cursor",
    "encode_cursor",
    "iso",
    "parse_filter",
    "parse_live",
    "render_csv",
    "render_csv_steps",
    "with_iso",
]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_OFFSET = 10**9
LIVE_PARAMS = frozenset({"limit", "cursor", "pbx"})
CALL_PARAMS = frozenset({"from", "since", "until", "order", "limit", "cursor", "offset", "outcome", "queue",
                         "caller", "lost", "recovered", "uncertain", "bounced", "operator", "pbx", "direction"})
OUTCOMES = frozenset(str(o) for o in Outcome)
DIRECTIONS = frozenset(str(d) for d in Direction)
#: the columns of the CSV answer, in order
CSV_COLUMNS = ("call_id", "pbx", "started_at", "ended_at", "caller", "caller_name", "outcome", "lost",
               "first_queue", "queues", "operators", "wait_seconds", "talk_seconds", "transfers", "bounced",
               "recovered", "uncertain", "direction")
#: a spreadsheet takes a cell that starts with one of these for a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---- times -------------------------------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    """Epoch seconds as UTC ISO 8601 with milliseconds (``2026-11-22T17:00:00.123Z``)."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_iso(call: CallJson) -> dict[str, Any]:
    """A call as the API shows it: its JSON with ``started_at_iso``/``ended_at_iso`` after the epoch fields."""
    out: dict[str, Any] = {}
    for name, value in call.items():
        out[name] = value
        if name == "started_at":
            out["started_at_iso"] = iso(call["started_at"])
        elif name == "ended_at":
            out["ended_at_iso"] = iso(call["ended_at"])
    return out


# ---- parameters --------------------------------------------------------------------------------------
def encode_cursor(order: str, key: CallKey) -> str:
    """The opaque cursor of a page's last call."""
    raw = json.dumps([order, key[0], key[1], key[2]], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, CallKey]:
    """``(order, key)`` of a cursor; :class:`BadRequest` when it is not one of ours."""
    bad = BadRequest("cursor: not a cursor of this API (take it from a page's next link)")
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not (isinstance(data, list) and len(data) == 4 and data[0] in ("asc", "desc")
            and isinstance(data[1], int | float) and not isinstance(data[1], bool) and math.isfinite(data[1])
            and isinstance(data[2], str) and isinstance(data[3], str)):
        raise bad
    return data[0], (float(data[1]), data[2], data[3])


def _choice(query: Mapping[str, str] | Any, key: str, allowed: frozenset[str]) -> frozenset[str] | None:
    values = multi(query, key)
    if not values:
        return None
    bad = sorted(set(values) - allowed)
    if bad:
        raise BadRequest(f"{key}: unknown {', '.join(bad)}; one or more of {', '.join(sorted(allowed))}")
    return frozenset(values)


def _free(query: Mapping[str, str] | Any, key: str) -> frozenset[str] | None:
    values = multi(query, key)
    return frozenset(values) if values else None


def parse_filter(query: Mapping[str, str] | Any, region: str | None = None) -> CallFilter:
    """``/api/calls`` query parameters -> :class:`CallFilter` (raises :class:`BadRequest`)."""
    check_known(query, CALL_PARAMS)
    since_text, from_text = single(query, "since"), single(query, "from")
    if since_text and from_text:
        raise BadRequest("from: give from or since (the same), not both")
    start_text = from_text or since_text
    since = parse_time(start_text, "from" if from_text else "since") if start_text else None
    until_text = single(query, "until")
    until = parse_time(until_text, "until") if until_text else None
    order = single(query, "order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest("order: asc or desc")
    limit_text = single(query, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_LIMIT) if limit_text else DEFAULT_LIMIT
    offset_text = single(query, "offset")
    offset = parse_int(offset_text, "offset", 0, MAX_OFFSET) if offset_text else 0
    cursor = single(query, "cursor")
    after = None
    if cursor:
        if offset_text:
            raise BadRequest("cursor: page by cursor or by offset, not both")
        cursor_order, after = decode_cursor(cursor)
        if cursor_order != order:
            raise BadRequest(f"cursor: it continues a page in order={cursor_order}, not order={order}")
    callers = None
    numbers = multi(query, "caller")
    if numbers:
        keys = set()
        for number in numbers:
            key = number_key(number, region)
            if key is None:
                raise BadRequest(f"caller: {number!r} is not a phone number")
            keys.add(key)
        callers = frozenset(keys)
    return CallFilter(
        since=since, until=until,
        outcomes=_choice(query, "outcome", OUTCOMES),
        queue=_free(query, "queue"),
        pbx=_free(query, "pbx"),
        callers=callers,
        operators=_free(query, "operator"),
        directions=_choice(query, "direction", DIRECTIONS),
        lost=multi_bool(query, "lost"),
        recovered=multi_bool(query, "recovered"),
        uncertain=multi_bool(query, "uncertain"),
        bounced=multi_bool(query, "bounced"),
        limit=limit, order=order, after=after, offset=offset,
    )


def next_link(request: web.Request, flt: CallFilter, found: CallPage) -> str | None:
    """The link to the page after ``found``: the same parameters, with a cursor (or the next offset)."""
    if not found.more or not found.calls:
        return None
    items = [(k, v) for k, v in request.query.items() if k not in ("cursor", "offset")]
    if "offset" in request.query:  # the client pages by offset
        items.append(("offset", str(flt.offset + flt.limit)))
    else:
        items.append(("cursor", encode_cursor(flt.order, call_key(found.calls[-1]))))
    return f"{request.path}?{urlencode(items)}"


# ---- CSV ---------------------------------------------------------------------------------------------
def csv_cell(value: Any) -> str:
    """A cell: booleans ``true``/``false``, nothing for None, text a spreadsheet would take for a formula
    (``=``, ``+``, ``-``, ``@``, tab, CR first) prefixed with ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(c: CallJson) -> list[str]:
    queues = [v["queue"] for v in c["queues"]]
    values: dict[str, Any] = {
        "call_id": c["call_id"], "pbx": c["pbx"], "started_at": iso(c["started_at"]),
        "ended_at": iso(c["ended_at"]), "caller": c["caller"], "caller_name": c["caller_name"],
        "outcome": c["outcome"], "lost": c["lost"], "first_queue": queues[0] if queues else "",
        "queues": ";".join(queues), "operators": ";".join(c["operators"]), "wait_seconds": c["wait_seconds"],
        "talk_seconds": c["talk_seconds"], "transfers": len(c["transfers"]), "bounced": c["bounced"],
        "recovered": c["recovered"], "uncertain": c["uncertain"], "direction": c["direction"],
    }
    return [csv_cell(values[name]) for name in CSV_COLUMNS]


def render_csv(found: list[CallJson]) -> str:
    """A header line and one line per call (RFC 4180, CRLF line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for c in found:
        writer.writerow(_csv_row(c))
    return buf.getvalue()


def wants_csv(accept: str) -> bool:
    """Whether ``Accept`` prefers ``text/csv`` to JSON (JSON on a tie or when neither is named)."""
    best = {"text/csv": 0.0, "application/json": 0.0}
    specific = {"text/csv": -1, "application/json": -1}  # how specific the range that set the q was
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        for offered in best:
            kind = offered.split("/")[0]
            level = 2 if media == offered else 1 if media == f"{kind}/*" else 0 if media == "*/*" else -1
            if level > specific[offered]:
                specific[offered], best[offered] = level, q
    return best["text/csv"] > 0 and best["text/csv"] > best["application/json"]


# ---- answers built in steps -----------------------------------------------------------------------------
#: calls serialised between two yields to the event loop (about 5 ms of work): a big answer never holds the
#: AMI consumer, /healthz or /metrics longer than that
CHUNK = 32


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


async def calls_json(calls: list[CallJson], rest: dict[str, Any]) -> str:
    """``{"calls": [...], **rest}`` as ``json.dumps(..., ensure_ascii=False)`` writes it, serialised
    :data:`CHUNK` calls at a time with the event loop let run in between (the calls are immutable: records'
    JSON, or the store's fresh copies)."""
    parts: list[str] = []
    for i in range(0, len(calls), CHUNK):
        if i:
            await asyncio.sleep(0)
        parts.extend(_dumps(with_iso(c)) for c in calls[i: i + CHUNK])
    tail = _dumps(rest)
    return '{"calls": [' + ", ".join(parts) + "]" + (", " + tail[1:] if rest else "}")


async def render_csv_steps(found: list[CallJson]) -> str:
    """:func:`render_csv`, :data:`CHUNK` rows at a time with the event loop let run in between."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(0, len(found), CHUNK):
        if i:
            await asyncio.sleep(0)
        writer.writerows(_csv_row(c) for c in found[i: i + CHUNK])
    return buf.getvalue()


def _json_text(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json", charset="utf-8")


# ---- routes ------------------------------------------------------------------------------------------
def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def parse_live(query: Mapping[str, str] | Any) -> tuple[int, LiveKey | None, frozenset[str] | None]:
    """``/api/live`` parameters -> ``(limit, after, pbxs)`` (raises :class:`BadRequest`)."""
    check_known(query, LIVE_PARAMS)
    limit_text = single(query, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_LIMIT) if limit_text else DEFAULT_LIMIT
    cursor = single(query, "cursor")
    after = None
    if cursor:
        order, after = decode_cursor(cursor)
        if order != "asc":
            raise BadRequest("cursor: not a cursor of /api/live (take it from its next link)")
    return limit, after, _free(query, "pbx")


def add_call_routes(app: web.Application, calls: CallPages, status: DaemonStatus, *,
                    region: str | None = None) -> None:
    """``/api/calls``, ``/api/calls/{call_id}`` and ``/api/live``."""

    async def list_calls(request: web.Request) -> web.Response:
        flt = parse_filter(request.query, region)
        found = await calls.page(flt)
        link = next_link(request, flt, found)
        if wants_csv(request.headers.get("Accept", "")):
            headers = {"X-Total-Count": str(found.total)}
            if link is not None:
                headers["Link"] = f'<{link}>; rel="next"'
            if found.partial:
                headers["X-Partial"] = "true"
            return web.Response(text=await render_csv_steps(found.calls), content_type="text/csv", charset="utf-8",
                                headers=headers)
        return _json_text(await calls_json(found.calls, {"total": found.total, "next": link,
                                                          "partial": found.partial}))

    async def get_call(request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        check_known(request.query, ("pbx",))
        pbx = single(request.query, "pbx")
        live_call = status.live_call(call_id, pbx)
        if live_call is not None:
            return _json(with_iso(live_call))
        found = await calls.get_call(call_id, pbx)
        if found is None:
            return _json({"error": f"no call {call_id!r}" + (f" on PBX {pbx!r}" if pbx else "")}, 404)
        return _json(with_iso(found))

    async def live_calls(request: web.Request) -> web.Response:
        limit, after, pbxs = parse_live(request.query)
        page = status.live_page(limit, after, pbxs)
        found: list[CallJson] = []
        for i in range(0, len(page.calls), CHUNK):  # each record is built now: in steps too
            if i:
                await asyncio.sleep(0)
            found.extend(r.to_json() for r in page.records(i, i + CHUNK))
        link = None
        if page.more and found:
            items = [(k, v) for k, v in request.query.items() if k != "cursor"]
            items.append(("cursor", encode_cursor("asc", call_key(found[-1]))))
            link = f"{request.path}?{urlencode(items)}"
        return _json_text(await calls_json(found, {"total": page.total, "next": link,
                                                    "queues": status.waiting_now(pbxs)}))

    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_get("/api/live", live_calls)

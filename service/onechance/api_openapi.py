"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /api/openapi.json``.

Built in code so that the call's schema is made from the :class:`~onechance.journey.CallJson` typed dict
itself (a field added there is described at once; ``additionalProperties: false`` everywhere makes a field
the description lacks a test failure).  The tests validate every route's real responses against these schemas
(JSON Schema 2020-12, which OpenAPI 3.1 uses) and fail when a route exists that the description lacks.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from .api_calls import CSV_COLUMNS, DEFAULT_LIMIT, DIRECTIONS, MAX_LIMIT, OUTCOMES
from .journey import AlertKind, CallJson
from .journey.record import LegJson, TransferJson, VisitJson
from .members import MemberState

__all__ = ["openapi_document"]

REF = "#/components/schemas/"
_NAMES: dict[Any, str] = {VisitJson: "Visit", LegJson: "Leg", TransferJson: "Transfer"}

#: what the journey's fields mean (docs/journey.md has the rules)
_FIELD_DOCS = {
    "call_id": "The call's Linkedid.",
    "pbx": "The PBX the call went through (its configured name).",
    "caller": "The caller's number as the PBX gave it.",
    "caller_key": "The caller's number normalised (E.164 when it can be read as a phone number); null for "
                  "anonymous callers.",
    "started_at": "When the call started, epoch seconds (PBX clock).",
    "ended_at": "When it ended, epoch seconds; null while in progress.",
    "outcome": "answered, abandoned, timeout, rejected, exited, unanswered, in_progress.",
    "short_abandon": "Abandoned sooner than the queue's short-abandon threshold.",
    "lost": "A one-chance caller: an inbound call abandoned (not short), timed out, rejected or exited.",
    "queues": "The caller's queue visits, in order.",
    "consultations": "Consultation calls of attended transfers that never reached the caller.",
    "operators": "Everyone who talked with the caller, in order.",
    "legs": "Each operator's leg of the call.",
    "wait_seconds": "Total time the caller waited in queues.",
    "talk_seconds": "Total time the caller talked with operators.",
    "bounced": "Transferred at least the bounce threshold number of times.",
    "alerts": "Alert kinds this call raised.",
    "recovered": "For a lost call: the caller was reached again (called again and answered, or called back).",
    "recovered_by": "The call that reached the caller again.",
    "recovered_how": "inbound (called again) or outbound (called back).",
    "uncertain": "Part of the call was not seen (a link loss, a restart): its outcome may be incomplete.",
    "closed_reason": "Why onechance closed the call itself: link_lost, pbx_restart, daemon_stopped, max_age.",
    "direction": "inbound (from outside), outbound (to an outside number), internal.",
    "callee": "For an outbound call: the outside number dialled.",
    "updated_at": "The version of this copy of the call (epoch seconds).",
}


def _type(hint: Any) -> dict[str, Any]:
    """The JSON schema of a typed-dict field's type."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and len(args) == 2:
            schema = _type(inner[0])
            if "$ref" in schema:
                return {"oneOf": [schema, {"type": "null"}]}
            return {**schema, "type": [schema["type"], "null"]}
        raise TypeError(f"cannot describe {hint!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        return {"type": "array", "items": _type(item)}
    if hint in _NAMES:
        return {"$ref": REF + _NAMES[hint]}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"cannot describe {hint!r}")


def _typed_dict(cls: Any, docs: dict[str, str] | None = None) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {}
    for name, hint in hints.items():
        schema = _type(hint)
        if docs and name in docs:
            schema = {**schema, "description": docs[name]}
        props[name] = schema
    return {"type": "object", "properties": props, "required": list(hints), "additionalProperties": False}


def _obj(props: dict[str, Any], required: list[str] | None = None, *, extra: bool = False,
         description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "required": list(props) if required is None else required,
                           "additionalProperties": extra}
    if description:
        out["description"] = description
    return out


def _s(kind: str | list[str], description: str | None = None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, **more}
    if description:
        out["description"] = description
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    what = {400: "A bad parameter or body (one-line message naming it).",
            401: "Missing or wrong bearer token (only when http.token is set).",
            404: "No such call, entry or route."}
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes if c in what}


def _query(name: str, description: str, schema: dict[str, Any] | None = None, *,
           multi: bool = False) -> dict[str, Any]:
    if multi:
        description += " Several values: repeat the parameter or separate them with commas (any of them matches)."
        schema = {"type": "array", "items": schema or {"type": "string"}}
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}, **({"style": "form", "explode": True} if multi else {})}


_BOOL = {"type": "string", "enum": ["true", "false", "1", "0"]}
_TIME = {"type": "string", "examples": ["2026-11-22T17:00:00Z", "1795368000.5"]}


def _components() -> dict[str, Any]:
    call = _typed_dict(CallJson, _FIELD_DOCS)
    api_call = dict(call)
    props: dict[str, Any] = {}
    for name, schema in call["properties"].items():
        props[name] = schema
        if name in ("started_at", "ended_at"):
            nullable = "null" in schema["type"]
            props[f"{name}_iso"] = _s(["string", "null"] if nullable else "string",
                                      f"{name} as UTC ISO 8601 with milliseconds", format="date-time")
    props["outcome"] = {**props["outcome"], "enum": sorted(OUTCOMES)}
    props["direction"] = {**props["direction"], "enum": sorted(DIRECTIONS)}
    api_call.update(properties=props, required=list(props),
                    description="A call: the journey of `onechance replay --json`, with ISO 8601 times added.")
    members = _obj({str(s): _s("integer", minimum=0) for s in MemberState},
                   description="Queue members by state.")
    nullable_num = _s(["number", "null"])
    today = _obj({
        "offered": _s("integer", "Visits that entered the queue.", minimum=0),
        "answered": _s("integer", "Visits an operator answered.", minimum=0),
        "abandoned": _s("integer", "Callers who hung up while waiting (short abandons included).", minimum=0),
        "timeouts": _s("integer", "Visits the queue gave up on.", minimum=0),
        "rejected": _s("integer", "Callers the queue refused (not counted in offered).", minimum=0),
        "lost": _s("integer", "Lost callers whose first queue this is.", minimum=0),
        "recovered": _s("integer", "Of those, reached again.", minimum=0),
        "asa_seconds": {**nullable_num, "description": "Mean wait of answered visits."},
        "service_level": {**nullable_num, "description": "Answered within the service level / answered x 100 "
                                                          "(Asterisk's ServicelevelPerf); null when none answered."},
    }, description="The day's figures, as `onechance report` gives them.")
    return {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "http.token; needed only when one is configured."}},
        "responses": {
            "E400": _json(_ref("Error"), "A bad parameter or body (one-line message naming it)."),
            "E401": {**_json(_ref("Error"), "Missing or wrong bearer token (only when http.token is set)."),
                     "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
            "E404": _json(_ref("Error"), "Not found."),
            "E408": _json(_ref("Error"), "The request body did not arrive within http.header_timeout."),
            "E413": _json(_ref("Error"), "The body is larger than http.max_body_size."),
            "E503": {**_json(_ref("Error"), "Busy: more API requests at once than http.api_concurrency + "
                                            "http.api_queue; retry after Retry-After seconds."),
                     "headers": {"Retry-After": {"schema": {"type": "string"}}}},
        },
        "schemas": {
            "Error": _obj({"error": _s("string")}, description="Every error: one line."),
            "Visit": _typed_dict(VisitJson),
            "Leg": _typed_dict(LegJson),
            "Transfer": _typed_dict(TransferJson),
            "Journey": call,
            "Call": api_call,
            "CallPage": _obj({
                "calls": {"type": "array", "items": _ref("Call")},
                "total": _s("integer", "Calls matching the filters, in all pages.", minimum=0),
                "next": _s(["string", "null"], "The following page (relative URL), null on the last."),
                "partial": _s("boolean", "The store could not be asked: the calls in memory answered alone."),
            }),
            "Live": _obj({
                "calls": {"type": "array", "items": _ref("Call"),
                          "description": "Calls in progress, oldest first: one page (limit)."},
                "total": _s("integer", "Calls in progress (of the PBXs asked), in all pages.", minimum=0),
                "next": _s(["string", "null"], "The following page (relative URL), null on the last."),
                "queues": {"type": "object", "description": "Per PBX, per queue with callers waiting.",
                           "additionalProperties": {"type": "object", "additionalProperties": _obj({
                               "callers": _s("integer", minimum=0),
                               "oldest_wait_seconds": _s("number", minimum=0)})}},
            }),
            "MemberCounts": members,
            "DayFigures": today,
            "Queue": _obj({
                "pbx": _s("string"), "queue": _s("string"),
                "waiting": _s("integer", "Callers waiting now.", minimum=0),
                "oldest_wait_seconds": _s("number", "The longest wait now (0: nobody waits).", minimum=0),
                "members": _ref("MemberCounts"),
                "today": {"oneOf": [_ref("DayFigures"), {"type": "null"}],
                          "description": "null when the store could not be asked."},
            }),
            "QueueList": _obj({
                "date": _s("string", format="date"), "timezone": _s("string"),
                "queues": {"type": "array", "items": _ref("Queue")},
                "partial": _s("boolean", "The day's figures are missing (the store could not be asked)."),
            }),
            "Operator": _obj({
                "pbx": _s("string"), "name": _s("string"),
                "interface": _s(["string", "null"], "The member's interface (e.g. Local/101@agents/n)."),
                "member": _s("boolean", "A queue member (false: talked with callers today, in no queue)."),
                "queues": {"type": "array", "items": {"type": "string"}},
                "state": {"type": ["string", "null"], "enum": [*(str(s) for s in MemberState), None],
                          "description": "What the operator is doing, across their queues."},
                "queue_states": {"type": "object", "additionalProperties": {"enum": [str(s) for s in MemberState]}},
                "paused_reason": _s(["string", "null"]),
                "answered": _s(["integer", "null"], "Calls answered in the day (null: store not asked).", minimum=0),
                "talk_seconds": _s(["number", "null"], "Talk time with callers in the day.", minimum=0),
            }),
            "OperatorList": _obj({
                "date": _s("string", format="date"), "timezone": _s("string"),
                "operators": {"type": "array", "items": _ref("Operator")},
                "partial": _s("boolean", "The day's figures are missing (the store could not be asked)."),
            }),
            "Callback": _obj({
                "id": _s("string"), "pbx": _s("string"), "caller": _s("string"), "caller_name": _s("string"),
                "caller_key": _s(["string", "null"]), "queue": _s("string"),
                "state": _s("string", enum=["waiting", "claimed", "done"]),
                "lost_count": _s("integer", minimum=0), "first_lost_at": _s("number"), "last_lost_at": _s("number"),
                "waiting_seconds": _s("number", minimum=0),
                "calls": {"type": "array", "items": _obj({"call_id": _s("string"), "queue": _s("string"),
                                                          "outcome": _s("string"), "lost_at": _s("number")})},
                "attempts": {"type": "array", "items": _obj({"at": _s("number"), "by": _s(["string", "null"]),
                                                             "call_id": _s(["string", "null"]),
                                                             "answered": _s("boolean")})},
                "claimed_by": _s(["string", "null"]), "claimed_at": _s(["number", "null"]),
                "note": _s(["string", "null"]), "resolution": _s(["string", "null"]),
                "done_reason": _s(["string", "null"]), "resolved_by_call": _s(["string", "null"]),
                "closed_at": _s(["number", "null"]),
            }, description="A worklist entry: one lost caller to call back."),
            "Alert": _obj({
                "id": _s("string"), "kind": _s("string", enum=[str(k) for k in AlertKind]), "pbx": _s("string"),
                "call_id": _s("string"), "queue": _s("string"), "caller": _s("string"), "caller_name": _s("string"),
                "decided_at": _s("number"), "raised_at": _s("number"), "state": _s("string", enum=["open", "resolved"]),
                "resolved_at": _s(["number", "null"]),
                "deliveries": {"type": "object", "description": "Per channel.", "additionalProperties": _obj({
                    "state": _s("string"), "attempts": _s("integer", minimum=0), "sent_at": _s(["number", "null"]),
                    "last_error": _s(["string", "null"])})},
            }),
        },
    }


def _calls_parameters() -> list[dict[str, Any]]:
    return [
        _query("from", "Calls that started at or after this time: ISO 8601 (no offset: UTC) or epoch seconds.",
               _TIME),
        _query("since", "The same as `from` (kept for older clients).", _TIME),
        _query("until", "Calls that started before this time.", _TIME),
        _query("order", "desc: newest first (default); asc: oldest first. By start time, then call id, then PBX.",
               {"type": "string", "enum": ["desc", "asc"], "default": "desc"}),
        _query("limit", "Calls per page.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                            "default": DEFAULT_LIMIT}),
        _query("cursor", "Continue after the previous page (take the whole `next` link)."),
        _query("offset", "Or skip this many calls (not with cursor).", {"type": "integer", "minimum": 0}),
        _query("outcome", "Outcome.", {"type": "string", "enum": sorted(OUTCOMES)}, multi=True),
        _query("queue", "Visited this queue (on the caller's path).", multi=True),
        _query("caller", "The caller's number in any format (+372..., 00372..., national with the configured "
                         "region), normalised and matched on caller_key.", multi=True),
        _query("operator", "Talked with this operator.", multi=True),
        _query("pbx", "Went through this PBX.", multi=True),
        _query("direction", "Direction.", {"type": "string", "enum": sorted(DIRECTIONS)}, multi=True),
        *(_query(name, text, _BOOL) for name, text in (
            ("lost", "Lost callers (true) or not (false)."),
            ("recovered", "Lost callers reached again."),
            ("uncertain", "Calls part of which was not seen."),
            ("bounced", "Calls transferred at least the bounce threshold number of times."))),
    ]


def _day_parameters() -> list[dict[str, Any]]:
    return [
        _query("pbx", "Only this PBX.", multi=True),
        _query("queue", "Only this queue.", multi=True),
        _query("date", "The day of the figures (default: today).", {"type": "string", "format": "date"}),
        _query("tz", "The time zone of the day (IANA name; default: the configured one, else the machine's).",
               {"type": "string", "examples": ["Europe/Tallinn"]}),
    ]


def _paths() -> dict[str, Any]:
    csv_doc = ("One line per call after a header: " + ", ".join(CSV_COLUMNS) + ". Times in ISO 8601; lists joined "
               "with ';'; text that starts with = + - @ prefixed with '. total in X-Total-Count, the next page in "
               "a Link header (rel=next).")
    no_auth: list[dict[str, Any]] = []
    return {
        "/healthz": {"get": {"summary": "The process runs", "security": no_auth, "responses": {
            "200": _json(_obj({"status": _s("string", enum=["ok"]), "version": _s("string")}), "Alive.")}}},
        "/readyz": {"get": {"summary": "Every PBX logged in and resynced", "security": no_auth, "responses": {
            "200": _json(_ref("Readiness"), "Ready."),
            "503": _json(_ref("Readiness"), "Not ready; reason says why.")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (docs/metrics.md)", "security": no_auth, "responses": {
            "200": {"description": "Prometheus text exposition.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/calls": {"get": {
            "summary": "Finished calls, filtered and paged",
            "description": "Every filter narrows the answer; a filter with several values matches any of them. "
                           "Answers JSON, or CSV with Accept: text/csv.",
            "parameters": _calls_parameters(),
            "responses": {
                "200": {"description": "One page.",
                        "headers": {"X-Total-Count": {"description": "CSV: total.", "schema": {"type": "string"}},
                                    "Link": {"description": "CSV: the next page.", "schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": _ref("CallPage")},
                                    "text/csv": {"schema": {"type": "string", "description": csv_doc}}}},
                **_errors(400, 401)}}},
        "/api/calls/{call_id}": {"get": {
            "summary": "One call, in progress or finished",
            "parameters": [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           _query("pbx", "The PBX, when two used the same call id.")],
            "responses": {"200": _json(_ref("Call"), "The call."), **_errors(400, 401, 404)}}},
        "/api/live": {"get": {
            "summary": "Calls in progress and callers waiting",
            "parameters": [
                _query("limit", "Calls per page.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                    "default": DEFAULT_LIMIT}),
                _query("cursor", "Continue after the previous page (take the whole `next` link)."),
                _query("pbx", "Only this PBX.", multi=True)],
            "responses": {"200": _json(_ref("Live"), "Now."), **_errors(400, 401)}}},
        "/api/queues": {"get": {
            "summary": "Per queue: waiting now, members by state, the day's figures",
            "parameters": _day_parameters(),
            "responses": {"200": _json(_ref("QueueList"), "Every queue known."), **_errors(400, 401)}}},
        "/api/operators": {"get": {
            "summary": "Per queue member: state, queues, the day's calls answered and talk time",
            "parameters": _day_parameters(),
            "responses": {"200": _json(_ref("OperatorList"), "Every member."), **_errors(400, 401)}}},
        "/api/openapi.json": {"get": {"summary": "This description", "security": no_auth, "responses": {
            "200": _json({"type": "object"}, "OpenAPI 3.1."), **_errors(400)}}},
        "/api/callbacks": {"get": {
            "summary": "The callback worklist, oldest lost first",
            "parameters": [
                _query("state", "waiting, claimed, done, open (= waiting, claimed; the default), all.",
                       {"type": "string", "enum": ["waiting", "claimed", "done", "open", "all"]}, multi=True),
                _query("queue", "Only these queues.", multi=True),
                _query("pbx", "Only these PBXs.", multi=True)],
            "responses": {"200": _json(_obj({"callbacks": {"type": "array", "items": _ref("Callback")}}), "Entries."),
                          **_errors(400, 401)}}},
        "/api/callbacks/{id}": {"get": {
            "summary": "One worklist entry",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("Callback"), "The entry."), **_errors(401, 404)}}},
        "/api/callbacks/{id}/{action}": {"post": {
            "summary": "claim (who calls back), note, or done (reached or gave up)",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "action", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": ["claim", "note", "done"]}}],
            "requestBody": {"required": False, "content": {
                media: {"schema": _obj({
                    "by": _s("string", "claim: who calls back."), "note": _s("string", "note, done: a note."),
                    "reason": _s("string", "done: reached or gave_up.", enum=["reached", "gave_up"])}, required=[])}
                for media in ("application/json", "application/x-www-form-urlencoded")}},
            "responses": {"200": _json(_ref("Callback"), "The entry after the action."),
                          **_errors(400, 401, 404)}}},
        "/api/alerts": {"get": {
            "summary": "Alerts raised, newest first, with each channel's delivery",
            "parameters": [
                _query("since", "Decided at or after.", _TIME),
                _query("kind", "Alert kind.", {"type": "string", "enum": [str(k) for k in AlertKind]}, multi=True),
                _query("queue", "Only these queues.", multi=True),
                _query("pbx", "Only these PBXs.", multi=True),
                _query("limit", "At most.", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})],
            "responses": {"200": _json(_obj({"alerts": {"type": "array", "items": _ref("Alert")}}), "Alerts."),
                          **_errors(400, 401)}}},
    }


def openapi_document(version: str = "") -> dict[str, Any]:
    """The description (a fresh dict each call)."""
    components = _components()
    components["schemas"]["Readiness"] = _obj({
        "ready": _s("boolean"),
        "pbx": {"type": "object", "description": "Per PBX: its link's state, error, since...",
                "additionalProperties": {"type": "object"}},
        "store": {"type": "object", "description": "The store writer's state."},
        "reason": _s("string", "Why not ready."),
    }, required=["ready", "pbx"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "onechance",
            "version": version or "0",
            "description": "Follows every Asterisk queue call and makes lost callers visible. Times are epoch "
                           "seconds with ISO 8601 next to them; errors are {\"error\": \"...\"}. Any route may "
                           "also answer the HTTP front's refusals (components/responses E408, E413, E503 with "
                           "Retry-After; 431 for oversized headers). See docs/api.md.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": components,
    }

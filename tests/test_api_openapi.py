"""``GET /api/openapi.json`` describes the API truly: it is a valid OpenAPI 3.1 document; every route the daemon
serves under ``/api/`` (and ``/healthz``, ``/readyz``, ``/metrics``) is in it, and nothing else; every
parameter a route accepts is in it; and the real responses of a running daemon fed real captures -- answers
and errors (400, 401, 404), JSON and CSV -- validate against its schemas (JSON Schema 2020-12, with
``additionalProperties: false``: a field the description lacks fails)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from onechance.api_calls import CALL_PARAMS
from onechance.api_openapi import openapi_document
from onechance.api_queues import OPERATOR_PARAMS, QUEUE_PARAMS
from onechance.store import JourneyWriter

from .livehelp import api_for, fake_pbx, running, settings_for, settled
from .storehelp import wait_drained

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

TOKEN = "openapi-token"
PBXS = ("abandon_then_callback", "abandoned", "bounced", "outbound_callback", "join_empty")
BASE = "urn:onechance:openapi"
DESCRIBED_OUTSIDE_API = ("/healthz", "/readyz", "/metrics")


class Description:
    """The served description, and a validator of responses against it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.registry = Registry().with_resource(BASE, Resource.from_contents(doc, default_specification=DRAFT202012))
        self.checked: set[tuple[str, str, int]] = set()

    @staticmethod
    def _pointer(*parts: str) -> str:
        return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)

    def check(self, template: str, method: str, status: int, content_type: str, body: Any) -> None:
        op = self.doc["paths"][template][method]
        response = op["responses"].get(str(status))
        assert response is not None, f"{method.upper()} {template}: status {status} is not described"
        parts: tuple[str, ...] = ("paths", template, method, "responses", str(status))
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[1]
            parts = ("components", "responses", name)
            response = self.doc["components"]["responses"][name]
        assert content_type in response["content"], f"{method.upper()} {template} {status}: {content_type}"
        ref = BASE + "#" + self._pointer(*parts, "content", content_type, "schema")
        validator = Draft202012Validator({"$ref": ref}, registry=self.registry,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method.upper()} {template} {status}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
        self.checked.add((template, method, status))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {n: await stack.enter_async_context(fake_pbx(n, seed=i)) for i, n in enumerate(PBXS)}
        app = await stack.enter_async_context(running(settings_for(
            [(n, p.port) for n, p in pbxs.items()], token=TOKEN, database={"flush_interval": 0.05})))
        await asyncio.gather(*(settled(app, n, p) for n, p in pbxs.items()))
        await wait_drained(next(s for s in app.services if isinstance(s, JourneyWriter)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        async with session.get(f"http://127.0.0.1:{app.http_port}/api/openapi.json") as resp:  # no token needed
            assert resp.status == 200
            doc = await resp.json()
        api = await stack.enter_async_context(api_for(app, TOKEN))
        yield app, api, Description(doc)


def test_the_description_is_valid_openapi_3_1():
    doc = openapi_document("1.2.3")
    validate_spec(doc)
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == "1.2.3"
    Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})


@MODULE_LOOP
async def test_the_served_description_is_the_built_one(daemon):
    _app, _api, described = daemon
    from onechance import __version__

    assert described.doc == openapi_document(__version__)


def _routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.http.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not (path.startswith("/api/") or path in DESCRIBED_OUTSIDE_API):
            continue
        out.add((path, route.method.lower()))
    return out


@MODULE_LOOP
async def test_every_route_is_described_and_nothing_else(daemon):
    app, _api, described = daemon
    served = _routes(app)
    documented = {(path, method) for path, ops in described.doc["paths"].items() for method in ops}
    assert served - documented == set(), "routes the description lacks"
    assert documented - served == set(), "described routes the daemon does not serve"
    assert len(served) >= 13


def test_every_parameter_is_described():
    doc = openapi_document()

    def names(path: str) -> set[str]:
        return {p["name"] for p in doc["paths"][path]["get"].get("parameters", []) if p["in"] == "query"}

    assert names("/api/calls") == set(CALL_PARAMS)
    assert names("/api/queues") == set(QUEUE_PARAMS)
    assert names("/api/operators") == set(OPERATOR_PARAMS)
    assert names("/api/calls/{call_id}") == {"pbx"}
    assert names("/api/callbacks") == {"state", "queue", "pbx"}
    assert names("/api/alerts") == {"since", "kind", "queue", "pbx", "limit"}


async def _call(api: Any, method: str, path: str, *, token: bool = True, accept: str | None = None,
                json_body: Any = None) -> tuple[int, str, Any]:
    headers = dict(api.headers) if token else {}
    if accept:
        headers["Accept"] = accept
    async with api.session.request(method, api.base + path, headers=headers, json=json_body) as resp:
        if resp.content_type == "application/json":
            return resp.status, resp.content_type, await resp.json()
        return resp.status, resp.content_type, await resp.text()


@MODULE_LOOP
async def test_every_answer_and_error_validates(daemon):
    _app, api, described = daemon

    async def check(template: str, path: str, status: int, method: str = "get", **kw: Any) -> Any:
        got, content_type, body = await _call(api, method.upper(), path, **kw)
        assert got == status, (path, got, body)
        described.check(template, method, status, content_type, body)
        return body

    await check("/healthz", "/healthz", 200, token=False)
    await check("/readyz", "/readyz", 200, token=False)
    text = await check("/metrics", "/metrics", 200, token=False)
    assert "onechance_calls_total" in text

    calls = await check("/api/calls", "/api/calls?limit=3", 200)
    assert calls["calls"] and calls["next"]
    await check("/api/calls", calls["next"], 200)
    for query in ("outcome=abandoned&lost=true", "direction=outbound", "order=asc&offset=2&limit=2",
                  "caller=%2B3725550111&recovered=true"):
        body = await check("/api/calls", f"/api/calls?{query}", 200)
        assert body["calls"], query
    csv_text = await check("/api/calls", "/api/calls?limit=5", 200, accept="text/csv")
    assert csv_text.count("\r\n") == 6
    for bad in ("limit=0", "lost=maybe", "cursor=zzz", "from=never", "nope=1"):
        await check("/api/calls", f"/api/calls?{bad}", 400)

    one = calls["calls"][0]
    await check("/api/calls/{call_id}", f"/api/calls/{one['call_id']}", 200)
    await check("/api/calls/{call_id}", f"/api/calls/{one['call_id']}?pbx={one['pbx']}", 200)
    await check("/api/calls/{call_id}", "/api/calls/nope", 404)
    await check("/api/calls/{call_id}", f"/api/calls/{one['call_id']}?verbose=1", 400)

    await check("/api/live", "/api/live", 200)
    await check("/api/live", "/api/live?x=1", 400)

    queues = await check("/api/queues", "/api/queues?tz=UTC&date=2026-11-22", 200)
    assert any(q["today"]["offered"] for q in queues["queues"])
    await check("/api/queues", "/api/queues", 200)
    await check("/api/queues", "/api/queues?tz=Nowhere/City", 400)
    ops = await check("/api/operators", "/api/operators?tz=UTC&date=2026-11-26", 200)
    assert any(not o["member"] for o in ops["operators"]) and any(o["member"] for o in ops["operators"])
    await check("/api/operators", "/api/operators?date=yesterday", 400)

    await check("/api/openapi.json", "/api/openapi.json", 200, token=False)
    await check("/api/openapi.json", "/api/openapi.json?x=1", 400)

    everyone = await check("/api/callbacks", "/api/callbacks?state=all", 200)
    assert {e["state"] for e in everyone["callbacks"]} >= {"waiting", "done"}
    await check("/api/callbacks", "/api/callbacks", 200)
    await check("/api/callbacks", "/api/callbacks?state=lost", 400)
    # several queues or PBXs: repeated or comma-separated, any of them
    first_queue = everyone["callbacks"][0]["queue"]
    only = await check("/api/callbacks", f"/api/callbacks?state=all&queue={first_queue}", 200)
    assert only["callbacks"] and {e["queue"] for e in only["callbacks"]} == {first_queue}
    assert len(only["callbacks"]) < len(everyone["callbacks"])  # the capture's worklist spans several queues

    def ids(body: dict[str, Any], key: str = "callbacks") -> list[str]:
        return [e["id"] for e in body[key]]

    for query in (f"queue={first_queue},nowhere", f"queue=nowhere&queue={first_queue}"):
        assert ids(await check("/api/callbacks", f"/api/callbacks?state=all&{query}", 200)) == ids(only), query
    every_queue = ",".join(sorted({e["queue"] for e in everyone["callbacks"]}))
    pbxs = "&".join(f"pbx={p}" for p in sorted({e["pbx"] for e in everyone["callbacks"]}))
    assert ids(await check("/api/callbacks", f"/api/callbacks?state=all&queue={every_queue}&{pbxs}", 200)) == ids(
        everyone)
    assert (await check("/api/callbacks", "/api/callbacks?state=all&pbx=nowhere,elsewhere", 200))["callbacks"] == []
    waiting = next(e for e in everyone["callbacks"] if e["state"] == "waiting")
    await check("/api/callbacks/{id}", f"/api/callbacks/{waiting['id']}", 200)
    await check("/api/callbacks/{id}", "/api/callbacks/nope", 404)
    action = "/api/callbacks/{id}/{action}"
    await check(action, f"/api/callbacks/{waiting['id']}/claim", 400, method="post", json_body={})
    await check(action, f"/api/callbacks/{waiting['id']}/claim", 200, method="post", json_body={"by": "Anna"})
    await check(action, f"/api/callbacks/{waiting['id']}/note", 200, method="post", json_body={"note": "voicemail"})
    await check(action, f"/api/callbacks/{waiting['id']}/done", 400, method="post", json_body={"reason": "bored"})
    done = await check(action, f"/api/callbacks/{waiting['id']}/done", 200, method="post",
                       json_body={"reason": "reached"})
    assert done["state"] == "done" and done["claimed_by"] == "Anna"
    await check(action, "/api/callbacks/nope/claim", 404, method="post", json_body={"by": "Anna"})
    await check(action, f"/api/callbacks/{waiting['id']}/forget", 404, method="post", json_body={})

    alerts = await check("/api/alerts", "/api/alerts", 200)
    assert {a["kind"] for a in alerts["alerts"]} >= {"abandoned", "bounced"}
    await check("/api/alerts", "/api/alerts?kind=sadness", 400)
    alert_queues = sorted({a["queue"] for a in alerts["alerts"] if a["queue"]})
    one_queue = await check("/api/alerts", f"/api/alerts?queue={alert_queues[0]}&queue=nowhere", 200)
    assert one_queue["alerts"] and {a["queue"] for a in one_queue["alerts"]} == {alert_queues[0]}
    alert_pbxs = sorted({a["pbx"] for a in alerts["alerts"]})
    assert len(alert_pbxs) > 1
    one_pbx = await check("/api/alerts", f"/api/alerts?pbx={alert_pbxs[0]}", 200)
    assert one_pbx["alerts"] and {a["pbx"] for a in one_pbx["alerts"]} == {alert_pbxs[0]}
    several = f"queue={','.join(alert_queues)}&pbx=nowhere,{','.join(alert_pbxs)}"
    both = await check("/api/alerts", f"/api/alerts?{several}", 200)
    assert ids(both, "alerts") == [a["id"] for a in alerts["alerts"] if a["queue"]]

    # without the token, every /api route but the description says 401
    for template, ops in described.doc["paths"].items():
        if not template.startswith("/api/") or template == "/api/openapi.json":
            continue
        path = template.replace("{call_id}", one["call_id"]).replace("{id}", waiting["id"]).replace(
            "{action}", "note")
        for method in ops:
            await check(template, path, 401, method=method, token=False)

    described_statuses = {(t, m, int(s)) for t, ops in described.doc["paths"].items() for m, op in ops.items()
                          for s in op["responses"]}
    untested = described_statuses - described.checked - {("/readyz", "get", 503)}  # test_readyz_not_ready_validates
    assert untested == set(), "described answers no test produced"


async def test_readyz_not_ready_validates():
    described = Description(openapi_document())
    async with fake_pbx("answered") as pbx:
        pbx.refuse_logins = 10**6
        async with running(settings_for([("p", pbx.port)])) as app, api_for(app) as api:
            status, content_type, body = await _call(api, "GET", "/readyz")
            assert status == 503
            described.check("/readyz", "get", 503, content_type, body)

"""The API at scale, over real HTTP: many calls in progress (paged ``/api/live``, one call found by id) and a PBX
that sends thousands of queue names (every answer and ``/metrics`` stay bounded).

The streams are built here (``tests/amibuild.py``): calls that join a queue and never end.  Sizes are small
(hundreds, a few thousand); ``bench/http_latency.py`` and ``bench/http_load.py`` measure 10,000 and more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onechance.app import App
from onechance.demo import DemoPbx
from onechance.queues import OTHER

from .amibuild import Chan, Script
from .livehelp import SECRET, Api, api_for, pipeline, running, settings_for, settled

TOKEN = "live-paging-token"


def render(script: Script) -> bytes:
    return b"".join(("".join(f"{k}: {v}\r\n" for k, v in m.headers.items()) + "\r\n").encode()
                    for m in script.events)


def waiting_calls(n: int, queues: list[str], members: int = 0) -> bytes:
    """``n`` callers who join a queue (round robin over ``queues``) and never hang up; then ``members``
    queue members reported, one in each queue (round robin)."""
    s = Script()
    for i in range(n):
        c = Chan(f"PJSIP/carrier-{i:08x}", f"1800000000.{2 * i}", f"1800000000.{2 * i}", num=f"+37255{i:05d}",
                 cname=f"Caller {i}", context="inbound")
        s.at(0.01).newchannel(c).join(c, queues[i % len(queues)])
    for i in range(members):
        s.at(0.001).ev("QueueMemberStatus", Queue=queues[i % len(queues)], MemberName="Anna Tamm",
                       Interface="Local/101@agents/n", StateInterface="PJSIP/101", Membership="static",
                       Penalty="0", CallsTaken="0", LastCall="0", LastPause="0", LoginTime="0", InCall="0",
                       Status="1", Paused="0", PausedReason="", Ringinuse="0", Wrapuptime="0")
    return render(s)


@contextlib.asynccontextmanager
async def daemon_with(stream: bytes, **http: Any) -> AsyncIterator[tuple[App, Api]]:
    async with DemoPbx(stream, speed=0, username="onechance", secret=SECRET) as pbx, \
            running(settings_for([("p", pbx.port)], token=TOKEN, http=http)) as app:
        await settled(app, "p", pbx)
        async with api_for(app, TOKEN) as api:
            yield app, api


async def test_live_calls_are_paged_oldest_first():
    n = 250
    async with daemon_with(waiting_calls(n, ["support", "sales", "billing"])) as (app, api):
        assert len(pipeline(app, "p").tracker.calls) == n
        want = [c["call_id"] for c in app.status.live()["calls"]]
        assert len(want) == n
        first = await api.json("/api/live")
        assert len(first["calls"]) == 100 and first["total"] == n
        assert first["calls"][0]["outcome"] == "in_progress" and "started_at_iso" in first["calls"][0]
        assert first["queues"]["p"]["support"]["callers"] == 84
        assert sum(q["callers"] for q in first["queues"]["p"].values()) == n
        got = [c["call_id"] for c in first["calls"]]
        body = await api.json(first["next"] + "&limit=70")  # the next pages, 70 at a time
        pages = 2
        while True:
            got += [c["call_id"] for c in body["calls"]]
            if body["next"] is None:
                break
            assert parse_qs(urlsplit(body["next"]).query)["limit"] == ["70"]
            body = await api.json(body["next"])
            pages += 1
        assert got == want and pages == 4  # 100 + 70 + 70 + 10
        everything = await api.json("/api/live", params={"limit": "1000"})
        assert [c["call_id"] for c in everything["calls"]] == want and everything["next"] is None
        none = await api.json("/api/live", params={"pbx": "elsewhere"})
        assert none["calls"] == [] and none["total"] == 0 and none["queues"] == {}
        for params, message in (({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"),
                                ({"cursor": "nope"}, "cursor"), ({"order": "desc"}, "unknown parameter")):
            status, err = await api.get("/api/live", params=params)
            assert status == 400 and message in err["error"], (params, err)
        # one call in progress, by id (the tracker's index), with or without its PBX
        middle = want[n // 2]
        call = await api.json(f"/api/calls/{middle}")
        assert call["call_id"] == middle and call["outcome"] == "in_progress"
        assert await api.json(f"/api/calls/{middle}", params={"pbx": "p"}) == call


async def test_a_call_that_ends_between_two_pages_is_neither_lost_nor_repeated():
    n = 30
    s = Script()
    chans = []
    for i in range(n):
        c = Chan(f"PJSIP/carrier-{i:08x}", f"1800000000.{i}", f"1800000000.{i}", num=f"+37255{i:05d}")
        chans.append(c)
        s.at(0.01).newchannel(c).join(c, "support")
    async with daemon_with(render(s)) as (app, api):
        first = await api.json("/api/live", params={"limit": "10"})
        # the first call of the next page ends meanwhile: fed straight to the pipeline, as the link would
        from onechance.ami.items import AmiEvent
        ending = Script(s.t + 1).hangup(chans[10])
        p = pipeline(app, "p")
        for msg in ending.events:
            p.handle(AmiEvent(msg, 0.0))
        rest, body = [], first
        while body["next"] is not None:
            body = await api.json(body["next"])
            rest += [c["call_id"] for c in body["calls"]]
        assert [c["call_id"] for c in first["calls"]] + rest == [c.linkedid for c in chans if c is not chans[10]]


async def test_thousands_of_queue_names_from_the_pbx_stay_bounded_everywhere():
    """Issue 12: 20,000 distinct queue names made /metrics 33 MB and 10 s.  Queue names are bounded per PBX
    (200, then ``other``) in /metrics, /api/live, /api/queues and /api/operators."""
    names = [f"q{i:04d}" for i in range(1500)]
    async with daemon_with(waiting_calls(1500, names, members=1500)) as (_app, api):
        status, text = await api.get("/metrics")
        assert status == 200
        for family in text_string_to_metric_families(text):
            for label in ("queue", "first_queue"):
                values = {s.labels[label] for s in family.samples if label in s.labels}
                assert len(values) <= 202, (family.name, label, len(values))  # 200, "other" and ""
        queues = {s.labels["queue"] for f in text_string_to_metric_families(text) for s in f.samples
                  if f.name == "onechance_queue_callers"}
        assert OTHER in queues and "q0000" in queues and "q1499" not in queues
        m = {s.labels["queue"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if f.name == "onechance_queue_callers"}
        assert sum(m.values()) == 1500  # every caller counted, the names past the limit as "other"
        live = await api.json("/api/live")
        assert len(live["queues"]["p"]) <= 201 and live["queues"]["p"][OTHER]["callers"] == 1300
        by_queue = await api.json("/api/queues")
        assert len(by_queue["queues"]) <= 201
        other = next(q for q in by_queue["queues"] if q["queue"] == OTHER)
        assert other["waiting"] == 1300 and other["members"]["available"] >= 1
        operators = await api.json("/api/operators")
        (anna,) = [o for o in operators["operators"] if o["member"]]
        assert len(anna["queues"]) <= 201 and OTHER in anna["queues"]


@pytest.mark.parametrize("limit", ["1", "1000"])
async def test_live_pages_hold_the_loop_in_short_steps_only(limit):
    """A big page is built and serialised a slice at a time: the AMI consumer, /healthz and /metrics get the
    loop in between (asserted on the behaviour: other requests are answered while a page is being made)."""
    async with daemon_with(waiting_calls(2000, ["support", "sales"])) as (_app, api):
        pages = [asyncio.create_task(api.get("/api/live", params={"limit": limit})) for _ in range(3)]
        health = await asyncio.wait_for(api.get("/healthz"), 10)
        assert health[0] == 200
        for status, body in await asyncio.gather(*pages):
            assert status == 200 and len(body["calls"]) == int(limit) and body["total"] == 2000

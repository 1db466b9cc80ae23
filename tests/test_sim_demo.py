"""The simulator behind the demo PBX, over real TCP: the AMI actions it answers, and the real daemon
(link, resync, tracker, store, HTTP API) following it, every call's journey equal to the simulator's truth."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from onechance.ami.parser import AmiFramer, AmiMessage
from onechance.demo import Cut, DemoPbx, Hold, SimSource
from onechance.sim import RateProfile, SimConfig

from .livehelp import SECRET, api_for, running, settings_for, settled
from .truthcheck import check_sim

pytestmark = pytest.mark.asyncio


class Client:
    """A bare AMI client: actions in, messages out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = AmiFramer()
        self.pending: list[AmiMessage] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        banner = await reader.readline()
        assert banner.startswith(b"Asterisk Call Manager/")
        return client

    async def next(self) -> AmiMessage:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the demo PBX closed the connection"
            self.pending.extend(self.framer.iter_feed(data))
        return self.pending.pop(0)

    async def action(self, name: str, aid: str, **headers: str) -> None:
        text = f"Action: {name}\r\nActionID: {aid}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write((text + "\r\n").encode())
        await self.writer.drain()

    async def reply(self, aid: str) -> list[AmiMessage]:
        """Every message of the answer to action ``aid`` (a list ends with its ``EventList: Complete``)."""
        out = []
        while True:
            m = await self.next()
            if m.get("ActionID") != aid:
                continue
            out.append(m)
            if m.get("EventList") in (None, "Complete") and (m.get("EventList") == "Complete" or (len(out) == 1
                                                             and m.get("EventList") != "start")):
                return out

    def close(self) -> None:
        self.writer.close()


def sim_config(**kw: Any) -> SimConfig:
    return SimConfig.default(seed=kw.pop("seed", 5), rate=RateProfile(scale=6), **kw)


async def test_queue_status_lists_every_queue_and_member_before_any_event() -> None:
    cfg = sim_config()
    async with DemoPbx(source=SimSource(cfg), speed=0, username="onechance", secret=SECRET) as pbx:
        pbx.plan[0] = Hold()  # nothing is streamed
        client = await Client.connect(pbx.port)
        await client.action("QueueStatus", "q1")  # before login
        assert (await client.reply("q1"))[0].get("Message") == "Permission denied"
        await client.action("Login", "l1", Username="onechance", Secret=SECRET)
        assert (await client.reply("l1"))[0].get("Response") == "Success"
        await client.action("QueueStatus", "q2")
        items = await client.reply("q2")
        client.close()
    params = {m.get("Queue"): m for m in items if m.event == "QueueParams"}
    assert set(params) == {q.name for q in cfg.queues}
    for q in cfg.queues:
        assert params[q.name].get("Strategy") == q.strategy
        assert params[q.name].get("Max") == str(q.maxlen)
        assert params[q.name].get("Calls") == "0"
    members = {(m.get("Queue"), m.get("Name")) for m in items if m.event == "QueueMember"}
    names = {op.ext: op.name for op in cfg.operators}
    assert members == {(q.name, names[ext]) for q in cfg.queues for ext in q.members}
    assert all(m.get("Location") == f"Local/{m.get('Location', '')[6:9]}@agents/n"
               for m in items if m.event == "QueueMember")
    assert all(m.get("StateInterface", "").startswith("PJSIP/") for m in items if m.event == "QueueMember")
    done = items[-1]
    assert done.event == "QueueStatusComplete" and done.get("ListItems") == str(len(items) - 2)


async def test_live_lists_follow_the_simulated_stream() -> None:
    """In the middle of busy traffic, CoreShowChannels lists exactly the channels that are up, and
    QueueStatus the callers waiting in each queue, as the stream so far says."""
    cfg = sim_config(seed=8, rtcp=False)
    source = SimSource(cfg, keep_truths=True)
    async with DemoPbx(source=source, speed=0, username="onechance", secret=SECRET) as pbx:
        pbx.plan[6000] = Hold()
        client = await Client.connect(pbx.port)
        await client.action("Login", "l1", Username="onechance", Secret=SECRET)
        up: dict[str, str] = {}
        waiting: dict[str, set[str]] = {}
        seen = 0
        while not pbx.holding.is_set() or client.pending or seen < pbx.sent:
            m = await client.next()
            if m.event in (None, "FullyBooted") or m.get("ActionID"):
                continue
            seen += 1
            uid = m.get("Uniqueid") or ""
            if m.event == "Newchannel":
                up[uid] = m.get("Channel") or ""
            elif m.event == "Hangup":
                up.pop(uid, None)
            elif m.event == "QueueCallerJoin":
                waiting.setdefault(m.get("Queue") or "", set()).add(uid)
            elif m.event == "QueueCallerLeave":
                waiting.get(m.get("Queue") or "", set()).discard(uid)
        assert seen == pbx.sent == 6000
        await client.action("CoreShowChannels", "c1")
        chans = [m for m in await client.reply("c1") if m.event == "CoreShowChannel"]
        await client.action("QueueStatus", "q1")
        status = await client.reply("q1")
        pbx.release()
        client.close()
    assert {m.get("Uniqueid"): m.get("Channel") for m in chans} == up
    assert len(up) > 10
    entries: dict[str, set[str]] = {}
    for m in status:
        if m.event == "QueueEntry":
            entries.setdefault(m.get("Queue") or "", set()).add(m.get("Uniqueid") or "")
    assert entries == {q: u for q, u in waiting.items() if u}
    assert sum(len(u) for u in entries.values()) > 0


async def _daemon_follows(cfg: SimConfig, calls: int, plan: dict[int, Any] | None = None) -> tuple[Any, Any]:
    source = SimSource(cfg, calls=calls, keep_truths=True)
    async with contextlib.AsyncExitStack() as stack:
        pbx = DemoPbx(source=source, speed=0, chunks=(200, 3000), seed=1, username="onechance", secret=SECRET,
                      login_fail_delay=0.05)
        pbx.plan.update(plan or {})
        await stack.enter_async_context(pbx)
        app = await stack.enter_async_context(running(settings_for([("sim", pbx.port)])))
        await settled(app, "sim", pbx, timeout=120)
        api = await stack.enter_async_context(api_for(app))
        got = await api.calls(pbx="sim")
    assert source.centre is not None
    return source.centre, got


@pytest.mark.parametrize("style", ["sip", "local"])
async def test_the_daemon_follows_the_simulator_over_tcp(style: str) -> None:
    cfg = sim_config(style=style, seed=11)
    centre, got = await _daemon_follows(cfg, 120)
    truths = [t.to_dict() for t in centre.truths]
    assert len(truths) >= 120
    names = {op.ext: op.name for op in cfg.operators}
    assert check_sim(truths, got, names, wait_tolerance=0.05) == {}


def _time_of(cfg: SimConfig, calls: int, index: int) -> float:
    """The Timestamp of message ``index`` of the simulated stream (the same run again: it is reproducible)."""
    source = SimSource(cfg, calls=calls)
    rec = None
    for i in range(index + 1):
        rec = source.get(i)
    assert rec is not None and rec.ts is not None
    return rec.ts


CUT_AT = 4000


async def test_the_daemon_resyncs_from_the_simulator_after_a_cut() -> None:
    """The link is cut in the middle of busy traffic (no message lost): the daemon reconnects, resyncs
    from CoreShowChannels/QueueStatus as the demo PBX answers them, and every call still ends as it should.

    The calls in progress at the cut are ``uncertain`` and followed on after the resync; by the call policy
    a call the tracker closed itself (``closed_reason``: ``link_lost``) never raises ``abandoned``
    (docs/journey.md), so that alert is not expected of those.  (No phone-driven attended transfers here:
    see the next test.)"""
    from onechance.sim import Behaviour

    cfg = sim_config(style="sip", seed=12, behaviour=Behaviour(attended_share=0.0, transfer=0.25))
    cut = _time_of(cfg, 120, CUT_AT)
    centre, got = await _daemon_follows(cfg, 120, plan={CUT_AT: Cut(gap=0, partial=False)})
    truths = [t.to_dict() for t in centre.truths]
    assert any("refer_blind" in t["kinds"] for t in truths)
    by_id = {g["call_id"]: g for g in got}
    in_flight = [t for t in truths if t["started_at"] < cut < t["ended_at"]]
    assert len(in_flight) >= 5
    for t in in_flight:
        g = by_id.get(t["call_id"], {})
        assert g.get("uncertain"), t["call_id"]
        if g.get("closed_reason") is not None:
            t["alerts"] = [a for a in t["alerts"] if a != "abandoned"]
    assert all(not by_id.get(t["call_id"], {}).get("uncertain") for t in truths if t not in in_flight)
    names = {op.ext: op.name for op in cfg.operators}
    assert check_sim(truths, got, names, wait_tolerance=0.05) == {}


async def test_resync_with_a_phone_consultation_live() -> None:
    """As above, with the link cut while a phone's attended-transfer consultation (own Linkedid, already joined
    to the caller's call) is live: the resync takes the consultation's channels up in the caller's call, not as
    a call of its own.

    A call that ends between the cut and the resync (its end arrives before the PBX's lists, which then no
    longer show it) stays as the gap closed it: ``uncertain``, ``closed_reason`` ``link_lost``, its visit
    ``unknown`` — never an invented outcome; it is checked for that and left out of the exact comparison."""
    cfg = sim_config(style="sip", seed=12)
    cut = _time_of(cfg, 120, CUT_AT)
    centre, got = await _daemon_follows(cfg, 120, plan={CUT_AT: Cut(gap=0, partial=False)})
    truths = [t.to_dict() for t in centre.truths]
    consults = [t for t in truths if "refer_attended" in t["kinds"] and t["started_at"] < cut < t["ended_at"]]
    assert consults, "no phone attended transfer is live at the cut"
    by_id = {g["call_id"]: g for g in got}
    in_flight = [t for t in truths if t["started_at"] < cut < t["ended_at"]]
    closed_by_gap = []
    for t in in_flight:
        g = by_id[t["call_id"]]
        assert g["uncertain"], t["call_id"]
        if g["closed_reason"] == "link_lost":
            assert g["outcome"] in ("unanswered", "in_progress") and not g["alerts"], g
            closed_by_gap.append(t)
    assert len(closed_by_gap) <= 2, "the resync window must stay small"
    for t in consults:
        assert by_id[t["call_id"]]["closed_reason"] is None, "the consultation's call was taken up again"
    kept = [t for t in truths if t not in closed_by_gap]
    kept_got = [g for g in got if g["call_id"] not in {t["call_id"] for t in closed_by_gap}]
    names = {op.ext: op.name for op in cfg.operators}
    assert check_sim(kept, kept_got, names, wait_tolerance=0.05) == {}


async def test_sim_source_passes_start_at_present_and_play_in_order() -> None:
    import time

    src = SimSource(sim_config(seed=3), calls=5)
    src.start_at_present()
    passes = []
    for _ in range(2):
        recs = []
        i = 0
        while (rec := src.get(i)) is not None:
            assert src.get(i) is rec  # the same message again
            recs.append(rec)
            i += 1
        passes.append(recs)
        src.next_pass()
    first, second = passes
    assert first and second
    assert time.time() - 5 < first[0].ts < time.time() + 3600  # type: ignore[operator]  # the 1st arrival
    assert second[0].ts > max(r.ts for r in first)  # type: ignore[operator,type-var]
    ids = [{r.msg.get("Uniqueid") for r in p if r.msg.get("Uniqueid")} for p in passes]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert sum(1 for r in first if r.msg.event == "QueueCallerJoin") >= 4
    with pytest.raises(ValueError, match="in order"):
        src.get(5)
    with pytest.raises(RuntimeError):
        src.start_at_present()

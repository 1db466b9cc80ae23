"""The AMI link on its own, against the fake Asterisk over real TCP: ordering, back-pressure, no action
replay, stale ActionIDs, refused lists, timeouts, backoff.  No mocks of panoramisk."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from panoramisk import Manager

from onechance.ami.adapter import AmiConnection
from onechance.ami.link import (
    AmiEvent,
    AmiEvents,
    AmiLink,
    LinkDown,
    LinkItem,
    LinkLost,
    LinkState,
    Snapshot,
)
from onechance.ami.parser import AmiFramer
from onechance.config import AmiSettings
from onechance.demo import DemoPbx, Hold, load_capture

from .livehelp import FAST_AMI, SECRET, capture, fake_pbx, wait_until


def _settings(port: int, **kw: Any) -> AmiSettings:
    return AmiSettings(name="t", host="127.0.0.1", port=port, username="onechance", secret=SECRET,
                       **{**FAST_AMI, **kw})


def _split(item: LinkItem) -> list[LinkItem]:
    """An item of the link's queue, the events of one socket read (``AmiEvents``) as one ``AmiEvent`` each."""
    if isinstance(item, AmiEvents):
        return [AmiEvent(m, item.arrival) for m in item.msgs]
    return [item]


@contextlib.asynccontextmanager
async def _link(port: int, **kw: Any) -> AsyncIterator[AmiLink]:
    link = AmiLink(_settings(port, **kw))
    task = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        await link.stop()
        await asyncio.wait_for(task, 5)
    assert link.state == LinkState.STOPPED


async def _drain(link: AmiLink, until: int, delay_every: int = 0) -> list[LinkItem]:
    """Consume items until ``until`` events have arrived (sleeping now and then when ``delay_every``)."""
    items: list[LinkItem] = []
    events = 0
    while events < until:
        got = _split(await asyncio.wait_for(link.queue.get(), 10))
        items += got
        link.item_done()
        events += sum(isinstance(i, AmiEvent) for i in got)
        if delay_every and got and isinstance(got[0], AmiEvent):
            await asyncio.sleep(0.002 * len(got) / delay_every)
    return items


def _capture_events(name: str) -> list[dict[str, str]]:
    return [m.headers for m in AmiFramer().feed(capture(name)) if m.event]


async def test_events_arrive_complete_and_in_order_and_stale_action_ids_are_ignored():
    """The capture starts with the recording tool's own ``Response ... ActionID: drv-1`` and carries
    ``OriginateResponse`` events with its ActionIDs: none may be taken for ours, the events still flow."""
    name = "attended_transfer"
    want = _capture_events(name)
    async with fake_pbx(name, chunks=(1, 7), seed=3) as pbx, _link(pbx.port) as link:
        items = await _drain(link, len(want) + 1)  # + the FullyBooted after our login
        got = [i.msg.headers for i in items if isinstance(i, AmiEvent)]
        assert got[0]["Event"] == "FullyBooted"
        assert got[1:] == want
        assert any(h["Event"] == "OriginateResponse" and h["ActionID"].startswith("drv-") for h in got)
        snapshots = [i for i in items if isinstance(i, Snapshot)]
        assert len(snapshots) == 1 and snapshots[0].complete
        await wait_until(lambda: link.unmatched_responses >= 2, what="stale responses counted")
        assert link.state == LinkState.READY and link.bad_messages == 0
        assert pbx.actions[:4] == ["login", "ping", "coreshowchannels", "queuestatus"]


async def test_panoramisk_is_wired_with_our_protocol_and_forgets_every_action():
    async with fake_pbx("answered") as pbx, _link(pbx.port) as link:
        await wait_until(lambda: link.ready, what="ready")
        manager = link.connector.manager
        assert isinstance(manager, Manager)
        assert manager.loop is asyncio.get_running_loop()  # created inside the running loop
        assert isinstance(manager.protocol, AmiConnection)
        assert "anything" in manager.forgetable_actions and "command" in manager.forgetable_actions
        assert not manager.awaiting_actions


async def test_a_pending_action_is_never_sent_again_after_a_reconnect():
    """panoramisk 1.4 re-sends unanswered actions when the next FullyBooted arrives; we never do."""
    async with fake_pbx("answered") as pbx, _link(pbx.port, action_timeout=20) as link:
        pbx.plan = {5: Hold()}
        await wait_until(lambda: link.ready and pbx.holding.is_set(), what="ready")
        pbx.ignore_actions.add("status")
        session = link.session
        assert session is not None
        pending = asyncio.create_task(session.action({"Action": "Status"}))
        await wait_until(lambda: "status" in pbx.actions, what="Status sent")
        pbx.drop_client()
        with pytest.raises(LinkLost):
            await asyncio.wait_for(pending, 5)  # fails at once, no 20 s timeout
        await wait_until(lambda: pbx.logins >= 2 and link.ready, what="logged in again")
        pbx.release()
        await asyncio.sleep(0.3)  # FullyBooted of the new session has long been read
        assert pbx.actions.count("status") == 1
        manager = link.connector.manager
        assert not manager.protocol.responses or all(
            a.get("Action") != "Status" for a in manager.protocol.responses.values())


async def test_slow_consumer_pauses_reading_and_loses_nothing():
    name = "bounced"
    want = _capture_events(name)
    async with fake_pbx(name, chunks=None) as pbx, _link(pbx.port, queue_size=100, queue_bytes=65536) as link:
        items = await _drain(link, len(want) + 1, delay_every=5)
        got = [i.msg.headers for i in items if isinstance(i, AmiEvent)][1:]
        assert got == want
        assert link.pauses >= 1
        assert link.dropped == 0


async def test_refused_list_gives_an_incomplete_snapshot_but_the_link_works(caplog):
    async with fake_pbx("answered") as pbx:
        pbx.deny_actions.add("coreshowchannels")
        async with _link(pbx.port) as link:
            snap = None
            while snap is None:
                item = await asyncio.wait_for(link.queue.get(), 5)
                link.item_done()
                snap = item if isinstance(item, Snapshot) else None
            assert snap.complete is False and snap.channels == []
            assert link.ready
    assert "CoreShowChannels refused (Permission denied)" in caplog.text
    assert "write=system,reporting" in caplog.text


async def test_an_unanswered_resync_times_out_and_reconnects():
    async with fake_pbx("answered") as pbx:
        pbx.ignore_actions.add("queuestatus")
        async with _link(pbx.port, action_timeout=0.3) as link:
            await wait_until(lambda: pbx.logins >= 2, what="a second login")
            assert "no answer to QueueStatus within 0.3 s" in (link.last_error or "")
            assert link.resyncs == 0
            pbx.ignore_actions.clear()
            await wait_until(lambda: link.ready, what="ready at last")


async def test_link_down_is_queued_after_the_last_event_of_the_connection():
    name = "answered"
    async with fake_pbx(name) as pbx, _link(pbx.port) as link:
        pbx.plan = {40: Hold()}
        await wait_until(lambda: pbx.holding.is_set() and link.ready, what="holding")
        pbx.drop_client()
        items = []
        while not any(isinstance(i, LinkDown) for i in items):
            items += _split(await asyncio.wait_for(link.queue.get(), 5))
        down = items[-1]
        assert isinstance(down, LinkDown) and down.reason == "link_lost"
        sent_events = sum(1 for r in load_capture(capture(name))[:40] if r.msg.event)
        assert sum(isinstance(i, AmiEvent) for i in items) == sent_events + 1  # + FullyBooted
        pbx.release()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_then_the_pbx_appears():
    port = _free_port()
    async with _link(port) as link:
        await wait_until(lambda: link.reconnects >= 2, what="retries")
        assert link.state in (LinkState.DOWN, LinkState.CONNECTING) and link.last_error == "connection refused"
        pbx = DemoPbx(capture("answered"), speed=0, username="onechance", secret=SECRET, port=port)
        async with pbx:
            await wait_until(lambda: link.ready, what="ready once the PBX listens")


def test_backoff_grows_exponentially_with_jitter_up_to_the_maximum():
    link = AmiLink(_settings(1, reconnect_min=1.0, reconnect_max=30.0), rng=random.Random(1))
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (12, 30.0)]:
        delays = [link.backoff(failures) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base / 4  # jittered, not fixed


def test_capture_helper_sees_every_message():
    assert len(load_capture(capture("answered"))) == sum(1 for _ in AmiFramer().feed(capture("answered")))


async def test_back_pressure_is_not_taken_for_a_dead_pbx():
    """While the consumer lags, socket reading is paused and the answers to our Ping and resync lists wait
    unread behind the events: the PBX is not at fault, so no timeout, no reconnect, nothing lost."""
    name = "transfer_then_abandon"
    want = _capture_events(name)
    fast = {"queue_size": 100, "queue_bytes": 65536, "ping_interval": 0.05, "ping_timeout": 0.15,
            "action_timeout": 0.15}
    async with fake_pbx(name, chunks=None) as pbx, _link(pbx.port, **fast) as link:
        items: list[LinkItem] = []
        while (sum(isinstance(i, AmiEvent) for i in items) < len(want) + 1
               or not any(isinstance(i, Snapshot) for i in items)):
            items += _split(await asyncio.wait_for(link.queue.get(), 10))
            link.item_done()
            await asyncio.sleep(0.005)  # 50 items (high to low water mark) take longer than any timeout
        assert link.pauses >= 1
        assert not any(isinstance(i, LinkDown) for i in items)
        assert sum(isinstance(i, Snapshot) for i in items) == 1
        assert [i.msg.headers for i in items if isinstance(i, AmiEvent)][1:] == want
        assert link.watchdog_timeouts == 0 and link.reconnects == 0 and pbx.logins == 1
        assert link.ready


async def test_the_looping_demo_pbx_does_not_grow_pass_after_pass():
    """``make run`` loops the demo capture for as long as it runs: its model of the PBX must stay flat."""
    pbx = DemoPbx(capture("answered"), speed=0, loop=True, username="onechance", secret=SECRET)
    async with pbx, _link(pbx.port) as link:
        sizes = []
        while len(sizes) < 4:
            await asyncio.wait_for(link.queue.get(), 10)
            link.item_done()
            if pbx.passes > len(sizes):
                sizes.append(len(pbx.state.dead) + len(pbx.state.channels))
        assert sizes[-1] <= sizes[0], sizes


async def test_a_busy_pbx_that_answers_pings_late_is_not_taken_for_dead():
    """Asterisk streams events but its Pong is late (busy): the link stays up, nothing is lost.  Only when
    nothing at all comes any more is the link declared dead."""
    t0 = 1800000000.0
    events = b"".join(
        f"Event: VarSet\r\nPrivilege: dialplan,all\r\nTimestamp: {t0 + i * 0.01:.6f}\r\nChannel: none\r\n"
        f"Uniqueid: none\r\nVariable: BUSY\r\nValue: {i}\r\n\r\n".encode() for i in range(300))
    pbx = DemoPbx(b"Asterisk Call Manager/11.0.0\r\n" + events, speed=1, username="onechance", secret=SECRET)
    pbx.answer_pings = False
    fast = {"ping_interval": 0.1, "ping_timeout": 0.5, "action_timeout": 3.0}
    async with pbx:
        pbx.answer_pings = True  # the resync's Ping is answered; the watchdog's are not
        async with _link(pbx.port, **fast) as link:
            await wait_until(lambda: link.ready, what="ready")
            pbx.answer_pings = False
            got = 0
            while got < 300:
                items = _split(await asyncio.wait_for(link.queue.get(), 10))
                link.item_done()
                got += sum(isinstance(i, AmiEvent) and i.msg.headers.get("Variable") == "BUSY" for i in items)
            assert link.reconnects == 0 and link.watchdog_timeouts == 0 and pbx.logins == 1
            assert link.slow_pongs >= 1
            await wait_until(lambda: link.watchdog_timeouts >= 1, timeout=10, what="silence taken for dead")

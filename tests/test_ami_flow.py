"""Flow control between a socket and its consumer, on its own: order, bounds, pause and resume."""

from __future__ import annotations

import asyncio

from onechance.ami.flow import FlowControl


class Reader:
    """A transport's reading switch, as asyncio's transports have it."""

    def __init__(self) -> None:
        self.reading = True
        self.switches = 0

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.switches += 1

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True
        self.switches += 1


async def drain(flow: FlowControl[int]) -> list[int]:
    out = []
    while flow.depth:
        out.append(flow.queue.get_nowait())
        flow.item_done()
    return out


async def test_order_is_kept_through_the_backlog_and_reading_resumes_when_drained():
    flow: FlowControl[int] = FlowControl(8)
    reader = Reader()
    flow.attach(reader)
    for i in range(40):  # one socket read brought 40 messages
        assert flow.put(i)
    assert not reader.reading and flow.paused and flow.pauses == 1
    assert flow.queue.qsize() == 8 and flow.depth == 40
    taken = []
    for _ in range(35):
        taken.append(flow.queue.get_nowait())
        flow.item_done()
    assert not reader.reading  # the backlog is not empty yet
    taken += await drain(flow)
    assert taken == list(range(40))
    assert reader.reading and not flow.paused


async def test_high_and_low_water_marks():
    flow: FlowControl[int] = FlowControl(100)
    reader = Reader()
    flow.attach(reader)
    for i in range(74):
        flow.put(i)
    assert reader.reading
    flow.put(74)  # 75 = three quarters
    assert not reader.reading
    while flow.queue.qsize() > 26:
        flow.queue.get_nowait()
        flow.item_done()
    assert not reader.reading  # above a quarter: still paused
    flow.queue.get_nowait()
    flow.item_done()
    assert reader.reading  # at 25 it reads again


async def test_a_full_backlog_refuses_and_the_final_item_always_goes_last():
    flow: FlowControl[int] = FlowControl(4, backlog=3)
    flow.attach(Reader())
    assert all(flow.put(i) for i in range(7))
    assert not flow.put(99)  # the caller drops the connection rather than losing it silently
    flow.put_last(-1)
    assert await drain(flow) == [0, 1, 2, 3, 4, 5, 6, -1]


async def test_a_connection_that_ends_while_paused_is_not_touched_again():
    flow: FlowControl[int] = FlowControl(4)
    reader = Reader()
    flow.attach(reader)
    for i in range(6):
        flow.put(i)
    assert not reader.reading
    flow.detach()  # the transport is gone: resuming it would raise
    assert await drain(flow) == list(range(6))
    assert reader.switches == 1
    new = Reader()
    flow.attach(new)
    assert flow.put(6) and new.reading


def test_it_needs_no_running_loop_to_be_built_and_used_synchronously():
    flow: FlowControl[str] = FlowControl(2)
    assert flow.put("a") and flow.put("b") and flow.put("c")  # no reader attached: nothing to pause
    assert flow.depth == 3 and flow.pauses == 0
    asyncio.run(drain(flow))  # type: ignore[arg-type]

"""The daemon's paced garbage collection (onechance.gc_pace): full collections on a timer, Python's pace back
after it."""

from __future__ import annotations

import asyncio
import gc
import weakref

from onechance.gc_pace import FULL_AFTER, GcPace


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> _Node:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a


async def _run_for(pace: GcPace, seconds: float) -> None:
    task = asyncio.create_task(pace.run())
    await asyncio.sleep(seconds)
    task.cancel()


def test_installed_freezes_what_exists_and_paces_full_collections_then_restores_python_s_pace():
    before = gc.get_threshold()
    pace = GcPace(60)
    with pace.installed():
        assert gc.get_threshold() == (before[0], before[1], FULL_AFTER)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_made_meanwhile_is_freed_by_the_timer():
    pace = GcPace(0.05)
    with pace.installed():
        gc.collect()  # nothing young is left to push the cycle out by allocation count alone
        held = _cycle()
        ref = weakref.ref(held)
        for _ in range(3):
            gc.collect(1)  # young collections only: the cycle, still held, moves to the oldest generation
        del held  # now garbage, but only a full collection can see it
        gc.collect(1)
        assert ref() is not None
        asyncio.run(_run_for(pace, 0.2))
        assert ref() is None
        assert pace.full >= 1 and pace.longest > 0

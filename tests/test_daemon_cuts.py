"""The AMI connection killed again and again during ``load_a``.

Model of a cut (decided for these tests, see ``docs/daemon.md``): the fake PBX closes the TCP connection,
often in the middle of a message; the PBX goes on with its calls while nobody listens, so the next ``gap``
messages are lost; when the daemon has reconnected and logged in, the stream resumes after the gap and
``CoreShowChannels``/``QueueStatus`` describe the PBX as it is at that point.

A call is *in flight at a cut* when its lifetime (from the uncut replay) overlaps the time from the last
message delivered before the cut to the first one delivered after it.  Then:

* every call never in flight at a cut is reported exactly as the uncut replay reports it;
* every journey of a call in flight at a cut is ``uncertain``;
* no call is reported abandoned unless it really was abandoned, and no lost-call alert is invented;
* nothing is left in progress at the end.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from onechance.demo import Cut, load_capture
from onechance.replay import replay_files

from .livehelp import api_for, capture, fake_pbx, running, sample, settings_for, settled
from .truthcheck import DATA

#: fields that legitimately depend on what else was seen (a call-back in a gap, update times)
VOLATILE = frozenset({"updated_at", "recovered", "recovered_by", "recovered_at"})


def _plan(n_cuts: int, seed: int, max_gap: int) -> dict[int, Cut]:
    recs = load_capture(capture("load_a"))
    rng = random.Random(seed)
    plan: dict[int, Cut] = {}
    lo, hi = 100, len(recs) - 100
    step = (hi - lo) // n_cuts
    for k in range(n_cuts):
        at = lo + k * step + rng.randint(0, step - max_gap - 2)
        plan[at] = Cut(gap=rng.randint(0, max_gap), partial=rng.random() < 0.7)
    return plan


def _gaps(plan: dict[int, Cut]) -> list[tuple[float, float]]:
    """(last timestamp delivered before, first timestamp delivered after) for each cut."""
    recs = load_capture(capture("load_a"))
    stamps = [r.ts for r in recs]
    out = []
    for at, cut in sorted(plan.items()):
        lost = max(cut.gap, 1 if cut.partial else 0)
        before = max(t for t in stamps[:at] if t is not None)
        after = next((t for t in stamps[at + lost:] if t is not None), float("inf"))
        out.append((before, after))
    return out


async def _run(plan: dict[int, Cut], seed: int) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    async with fake_pbx("load_a", seed=seed) as pbx:
        pbx.plan = dict(plan)
        async with running(settings_for([("pbx1", pbx.port)])) as app:
            await settled(app, "pbx1", pbx, timeout=90)
            assert not pbx.plan, "every planned cut happened"
            async with api_for(app) as api:
                calls = await api.calls()
                live = await api.json("/api/live")
                metrics = await api.metrics()
    return calls, live, metrics


def _check(plan: dict[int, Cut], calls: list[dict[str, Any]], live: dict[str, Any]) -> tuple[int, int]:
    gaps = _gaps(plan)
    reference = [j.to_json() for j in replay_files([str(DATA / "load_a.ami")], pbx="pbx1").journeys]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        by_id.setdefault(c["call_id"], []).append(c)
    assert live["calls"] == []
    exact = in_flight = 0
    problems = []
    for ref in reference:
        ended = ref["ended_at"] if ref["ended_at"] is not None else float("inf")
        # strict: a call whose first message is the first one after the gap (or whose last is the last
        # one before it) was seen whole
        flying = any(ref["started_at"] < t1 and ended > t0 for t0, t1 in gaps)
        got = by_id.pop(ref["call_id"], [])
        if flying:
            in_flight += 1
            for g in got:
                if not g["uncertain"]:
                    problems.append(f"{ref['call_id']} ({ref['caller']}): in flight at a cut but not uncertain")
                if g["outcome"] == "abandoned" and ref["outcome"] != "abandoned":
                    problems.append(f"{ref['call_id']}: reported abandoned, really {ref['outcome']}")
                if g["alerts"] and not ref["alerts"]:  # (abandon vs timeout may blur when the
                    # caller's hang-up request fell in the gap: a lost call stays a lost call)
                    problems.append(f"{ref['call_id']}: alerts {g['alerts']}, really none")
            continue
        if len(got) != 1:
            problems.append(f"{ref['call_id']} ({ref['caller']}): not in flight, reported {len(got)} times")
            continue
        want = {k: v for k, v in ref.items() if k not in VOLATILE}
        have = {k: v for k, v in got[0].items() if k not in VOLATILE}
        if want != have:
            diff = sorted(k for k in want if want[k] != have.get(k))
            problems.append(f"{ref['call_id']} ({ref['caller']}): differs from the uncut replay in {diff}")
        else:
            exact += 1
    for call_id, extra in by_id.items():
        for g in extra:
            if not g["uncertain"]:
                problems.append(f"{call_id}: unknown to the uncut replay but not uncertain")
    assert problems == [], "\n".join(problems)
    return exact, in_flight


async def test_twenty_cuts_during_load_a_lose_nothing_outside_the_gaps():
    plan = _plan(20, seed=2024, max_gap=40)
    calls, live, metrics = await _run(plan, seed=11)
    exact, in_flight = _check(plan, calls, live)
    assert exact + in_flight == 60
    assert in_flight > 0  # (every call overlaps one of the 20 gaps: the few-cuts test checks the exact ones)
    assert sample(metrics, "onechance_ami_reconnects_total", pbx="pbx1") >= 20
    assert sample(metrics, "onechance_ami_resyncs_total", pbx="pbx1") >= 21
    assert sample(metrics, "onechance_ami_up", pbx="pbx1") == 1
    assert sample(metrics, "onechance_calls_unresolved_total", pbx="pbx1", reason="link_lost") >= 1


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_few_cuts_leave_most_calls_exact(seed):
    plan = _plan(3, seed=seed, max_gap=25)
    calls, live, _metrics = await _run(plan, seed=seed)
    exact, in_flight = _check(plan, calls, live)
    assert exact + in_flight == 60
    assert exact >= 20
    assert in_flight > 0  # the rules for calls cut in flight were checked too

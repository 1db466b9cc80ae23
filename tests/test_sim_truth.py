"""The simulator against the project's real parser and tracker: every simulated call's journey, as
``onechance replay --json`` reports it, equals the simulator's own truth (the captures' contract).

Many seeds of mixed, overlapping traffic in both PBX styles, plus runs that make the rare kinds common;
then one test per call kind, so that a failure names the kind.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from onechance.replay import replay_files
from onechance.sim import BANNER, Behaviour, Centre, RateProfile, SimConfig

from .truthcheck import check_sim

CALLS = 250


@dataclasses.dataclass
class Run:
    name: str
    centre: Centre
    truths: list[dict[str, Any]]
    journeys: list[dict[str, Any]]
    problems: dict[str, list[str]]
    events: int
    bad_messages: int
    tracker_errors: int


def members(cfg: SimConfig) -> dict[str, str]:
    return {op.ext: op.name for op in cfg.operators}


def run(cfg: SimConfig, calls: int, path: Path, name: str) -> Run:
    c = Centre(cfg)
    path.write_bytes(BANNER + c.run(calls=calls))
    res = replay_files([str(path)])
    truths = [t.to_dict() for t in c.truths]
    journeys = [j.to_json() for j in res.journeys]
    problems = check_sim(truths, journeys, members(cfg), wait_tolerance=0.05)
    return Run(name, c, truths, journeys, problems, res.events, res.bad_messages, res.tracker_errors)


# boosted behaviour: the rare kinds become common (transfers, bounces, pickups, key exits, callbacks...)
BOOST = Behaviour(transfer=0.45, attended_share=0.5, second_transfer=0.6, key_exit=0.25, direct=0.12,
                  refused=0.06, pickup=0.35, ring_back=0.5, call_back=0.9, call_back_answered=0.5,
                  impatient=0.15, patience=40.0)


def _full(cfg: SimConfig) -> SimConfig:
    """billing holds one caller at most: more callers are refused (QUEUESTATUS FULL)."""
    qs = tuple(dataclasses.replace(q, maxlen=1) if q.name == "billing" else q for q in cfg.queues)
    return dataclasses.replace(cfg, queues=qs)


MIXED = [("sip", seed) for seed in range(12)] + [("local", seed) for seed in range(10)]
BOOSTED = [("sip", seed) for seed in range(100, 104)] + [("local", seed) for seed in range(100, 103)]


def config(style: str, seed: int, boosted: bool) -> SimConfig:
    if not boosted:
        # from a calm day to an overloaded one
        return SimConfig.default(seed=seed, style=style, rate=RateProfile(scale=2 + seed % 6))
    cfg = SimConfig.default(seed=seed, style=style, rate=RateProfile(scale=8), behaviour=BOOST)
    return _full(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    out = []
    d = tmp_path_factory.mktemp("sim")
    for boosted, plan in ((False, MIXED), (True, BOOSTED)):
        for style, seed in plan:
            name = f"{style}-{'boosted-' if boosted else ''}{seed}"
            out.append(run(config(style, seed, boosted), CALLS, d / f"{name}.ami", name))
    return out


def _describe(r: Run, call_id: str) -> str:
    kinds = next((t["kinds"] for t in r.truths if t["call_id"] == call_id), [])
    return f"{r.name} {call_id} {kinds}: " + "; ".join(r.problems[call_id])


def test_every_simulated_call_matches_its_truth(runs: list[Run]) -> None:
    bad = [_describe(r, cid) for r in runs for cid in r.problems]
    total = sum(len(r.truths) for r in runs)
    assert total >= len(runs) * CALLS
    assert not bad, f"{len(bad)} of {total} calls differ:\n" + "\n".join(bad[:40])


def test_streams_are_clean_for_the_tracker(runs: list[Run]) -> None:
    for r in runs:
        assert r.bad_messages == 0, r.name
        assert r.tracker_errors == 0, r.name
        assert all(t["ended_at"] is not None for t in r.truths), f"{r.name}: a call never ended"
        assert all(j["outcome"] != "in_progress" for j in r.journeys), f"{r.name}: a journey never ended"


def test_calls_overlap_and_wait(runs: list[Run]) -> None:
    """The traffic is a call centre's, not one call after the other: calls overlap and callers wait."""
    for r in runs:
        spans = sorted((t["started_at"], t["ended_at"]) for t in r.truths)
        peak = 0
        ends: list[float] = []
        for start, end in spans:
            ends = [e for e in ends if e > start] + [end]
            peak = max(peak, len(ends))
        assert peak >= 5, f"{r.name}: at most {peak} calls at once"
        waits = [t["first_wait"] for t in r.truths if "first_wait" in t]
        assert max(waits) > 20, f"{r.name}: nobody waited long"


# every kind the simulator tags, with the least number of calls of that kind over all runs
KINDS = {
    "answered": 1000, "ring_no_answer": 100, "abandoned": 1000, "short_abandon": 150, "timeout": 60,
    "rejected": 200, "rejected_empty": 150, "rejected_full": 80, "caller_hung_up": 400, "operator_hung_up": 400,
    "blind_transfer": 150, "refer_blind": 80, "ami_blind": 20, "attended_transfer": 20, "refer_attended": 10,
    "feature_attended": 8, "bounced": 40, "pickup": 15, "key_exit": 30, "direct": 40, "unanswered": 30,
    "ring_back": 500, "recovered_by_ring_back": 300, "outbound": 60, "recovered_by_call_back": 40,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_call_kind(runs: list[Run], kind: str) -> None:
    calls = [(r, t) for r in runs for t in r.truths if kind in t["kinds"]]
    assert len(calls) >= KINDS[kind], f"only {len(calls)} calls of kind {kind}"
    bad = [_describe(r, t["call_id"]) for r, t in calls if t["call_id"] in r.problems]
    assert not bad, f"{len(bad)} of {len(calls)} {kind} calls differ:\n" + "\n".join(bad[:20])


def test_kind_counts_are_known(runs: list[Run]) -> None:
    """Every kind the simulator tags has its own test above."""
    seen = Counter(k for r in runs for t in r.truths for k in t["kinds"])
    assert set(seen) <= set(KINDS), sorted(set(seen) - set(KINDS))


def test_the_comparison_catches_a_different_judgement(tmp_path: Path) -> None:
    """A negative control: the same stream judged with another short-abandon threshold (10 s instead of
    the contract's 5 s) no longer matches the truth, and the mismatches are the abandons in between."""
    from onechance.journey import CallPolicy, QueueRule

    # callers who give up after about 8 s: many abandons between 5 and 10 s
    cfg = SimConfig.default(seed=3, rate=RateProfile(scale=6), behaviour=Behaviour(patience=8.0, patience_spread=0.3))
    c = Centre(cfg)
    path = tmp_path / "s.ami"
    path.write_bytes(BANNER + c.run(calls=150))
    res = replay_files([str(path)], policy=CallPolicy(default=QueueRule(short_abandon_seconds=10.0)))
    truths = [t.to_dict() for t in c.truths]
    problems = check_sim(truths, [j.to_json() for j in res.journeys], members(cfg), wait_tolerance=0.05)
    between = {t["call_id"] for t in truths if t["outcome"] == "abandoned" and 5.0 <= t["first_wait"] < 10.0
               and len(t["queues"]) == 1}
    assert between, "no abandon between 5 and 10 s in this run"
    assert between <= set(problems)
    assert all(any(e.startswith("short_abandon") for e in problems[cid]) for cid in between)


def test_runs_leave_nothing_behind(runs: list[Run]) -> None:
    """After a bounded run every call has ended: no process waits, no operator is busy, no caller queues,
    no device is in use (every channel was hung up)."""
    for r in runs:
        c = r.centre
        assert c.kernel.next_time is None, r.name
        assert [o.ext for o in c.ops.values() if o.busy] == [], r.name
        assert {n: len(q.entries) for n, q in c.queues.items() if q.entries} == {}, r.name
        assert c.pbx.devices == {}, r.name

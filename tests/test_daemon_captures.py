"""Every shared capture played live to the daemon: one fake Asterisk per capture (14 PBXs in one daemon),
chunked TCP, journeys read back over real HTTP from ``/api/calls`` and counts from ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from typing import Any

import pytest
import pytest_asyncio

from onechance.ami.parser import AmiFramer
from onechance.journey import CallPolicy
from onechance.metrics import wait_buckets
from onechance.replay import replay_files

from .livehelp import api_for, capture, fake_pbx, running, sample, samples, settings_for, settled
from .truthcheck import DATA, check_truth, expected_calls, load_truth, scenarios

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMES = scenarios()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live() -> Any:
    """Run the daemon once over all captures; collect what the API and /metrics say."""
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {}
        for i, name in enumerate(NAMES):
            pbxs[name] = await stack.enter_async_context(fake_pbx(name, seed=i))
        app = await stack.enter_async_context(running(settings_for([(n, p.port) for n, p in pbxs.items()])))
        await asyncio.gather(*(settled(app, n, p) for n, p in pbxs.items()))
        api = await stack.enter_async_context(api_for(app))
        calls = {name: await api.calls(pbx=name) for name in NAMES}
        metrics = await api.metrics()
        live_now = await api.json("/api/live")
        ready = await api.get("/readyz")
        yield {"calls": calls, "metrics": metrics, "live": live_now, "ready": ready, "pbxs": pbxs}


def _replayed(name: str) -> list[dict[str, Any]]:
    return [j.to_json() for j in replay_files([str(DATA / f"{name}.ami")], pbx=name).journeys]


@pytest.mark.parametrize("name", NAMES)
async def test_api_calls_match_truth(live, name):
    got = live["calls"][name]
    assert check_truth(load_truth(name), got) == []
    assert len(got) == expected_calls(load_truth(name))


@pytest.mark.parametrize("name", NAMES)
async def test_api_calls_equal_file_replay(live, name):
    """Over TCP, through the link and the consumer, the journeys are exactly those of the file replay."""
    got = sorted(live["calls"][name], key=lambda c: (c["started_at"], c["call_id"]))
    assert got, "no call: nothing compared"
    assert got == _replayed(name)
    assert all(not c["uncertain"] for c in got)


async def test_nothing_left_in_progress_and_ready(live):
    assert live["live"]["calls"] == []
    status, body = live["ready"]
    assert status == 200 and body["ready"] is True
    assert set(body["pbx"]) == set(NAMES)


def _first_queue(call: dict[str, Any]) -> str:
    return call["queues"][0] if call.get("queues") else ""


@pytest.mark.parametrize("name", NAMES)
async def test_call_counts_are_those_the_truth_implies(live, name):
    m = live["metrics"]
    doc = load_truth(name)
    truth = doc["calls"]
    # a truth call may leave its outcome open (outcome null): it is counted, under some outcome
    want = Counter((_first_queue(c), c["outcome"]) for c in truth if c.get("outcome"))
    want.update(("", "answered" if o["answered"] else "unanswered") for o in doc.get("outbound", []))
    open_calls = sum(1 for c in truth if not c.get("outcome"))
    got_pairs: Counter[tuple[str, str]] = Counter()
    for lab, v in samples(m, "onechance_calls_total", pbx=name).items():
        d = dict(lab)
        got_pairs[(d["first_queue"], d["outcome"])] += int(v)
    assert sum(got_pairs.values()) == expected_calls(doc)
    assert not want - got_pairs
    assert sum((got_pairs - want).values()) == open_calls
    assert sum(v for v in samples(m, "onechance_bounced_calls_total", pbx=name).values()) == \
        sum(1 for c in truth if c.get("bounced"))
    kinds = Counter(k for c in truth for k in c.get("transfers", []))
    got_kinds: Counter[str] = Counter()
    for lab, v in samples(m, "onechance_transfers_total", pbx=name).items():
        got_kinds[dict(lab)["kind"]] += int(v)
    assert not kinds - got_kinds
    unspecified = [c for c in truth if "transfers" not in c]  # the truth leaves them open
    assert got_kinds == kinds or unspecified
    replayed = Counter(t["kind"] for j in _replayed(name) for t in j["transfers"])
    assert got_kinds == replayed
    lost = sum(1 for c in truth if set(c.get("alerts", [])) & {"abandoned", "timeout", "rejected", "exited"})
    assert sum(samples(m, "onechance_lost_calls_total", pbx=name).values()) == lost
    abandoned = [c for c in truth if c["outcome"] == "abandoned"]
    shorts = [c for c in abandoned if c.get("short_abandon")]
    assert sum(samples(m, "onechance_queue_left_total", pbx=name, result="short_abandoned").values()) == len(shorts)
    # the abandoned calls' last visits (earlier visits of a call were answered and transferred)
    assert sum(samples(m, "onechance_queue_left_total", pbx=name, result="abandoned").values()) == \
        len(abandoned) - len(shorts)


@pytest.mark.parametrize("name", NAMES)
async def test_wait_histograms_are_those_the_journeys_imply(live, name):
    m = live["metrics"]
    waits: dict[tuple[str, str], list[float]] = {}
    for j in replay_files([str(DATA / f"{name}.ami")]).journeys:
        for v in (*j.queues, *j.consultations):
            result = {"answered": "answered", "abandoned": "abandoned", "timeout": "timeout",
                      "exited": "exited"}.get(str(v.result))
            if result is not None:
                waits.setdefault((v.queue, result), []).append(v.wait_seconds)
    got = {(dict(lab)["queue"], dict(lab)["result"]): v
           for lab, v in samples(m, "onechance_queue_wait_seconds_count", pbx=name).items() if v}
    assert got == {k: len(v) for k, v in waits.items()}
    buckets = wait_buckets(CallPolicy())
    for (queue, result), values in waits.items():
        assert math.isclose(sample(m, "onechance_queue_wait_seconds_sum", pbx=name, queue=queue, result=result),
                            sum(values), abs_tol=1e-6)
        for le in buckets:
            assert sample(m, "onechance_queue_wait_seconds_bucket", pbx=name, queue=queue, result=result,
                          le=f"{float(le)}") == sum(1 for w in values if w <= le), (queue, le)
    # the truth's first waits fall in the buckets the histogram shows (queue_log whole seconds, +-1.5 s)
    for c in load_truth(name)["calls"]:
        if "first_wait" in c and c.get("queues"):
            assert any(abs(w - c["first_wait"]) <= 1.5 for (q, _r), ws in waits.items() if q == c["queues"][0]
                       for w in ws)


@pytest.mark.parametrize("name", NAMES)
async def test_link_metrics(live, name):
    m = live["metrics"]
    framer = AmiFramer()
    events = sum(1 for msg in framer.feed(capture(name)) if msg.event)
    assert sample(m, "onechance_ami_up", pbx=name) == 1
    assert sample(m, "onechance_ami_events_total", pbx=name) == events + 1  # + FullyBooted after our login
    assert sample(m, "onechance_ami_bad_messages_total", pbx=name) == 0
    assert sample(m, "onechance_ami_reconnects_total", pbx=name) == 0
    assert sample(m, "onechance_ami_resyncs_total", pbx=name) == 1
    assert sample(m, "onechance_calls_in_progress", pbx=name) == 0
    # every queue a caller waited in has its gauges (none for a capture without one), all back at zero
    waited_in = {v.queue for j in replay_files([str(DATA / f"{name}.ami")]).journeys for v in j.queues
                 if str(v.result) != "rejected"}
    callers = {dict(lab)["queue"]: v for lab, v in samples(m, "onechance_queue_callers", pbx=name).items()}
    oldest = {dict(lab)["queue"]: v for lab, v in samples(m, "onechance_queue_oldest_wait_seconds", pbx=name).items()}
    assert waited_in <= set(callers)
    assert set(oldest) == set(callers)
    assert all(v == 0 for v in callers.values()), callers
    assert all(v == 0 for v in oldest.values()), oldest


async def test_no_caller_data_in_labels_and_build_info(live):
    m = live["metrics"]
    assert any(name == "onechance_build_info" for name, _ in m)
    for (_name, labels), _v in m.items():
        for key, value in labels:
            assert key not in ("caller", "uniqueid", "channel", "call_id")
            if key == "le":
                continue
            assert not value.startswith("+") and "Local/" not in value and "@" not in value
            assert not (value.replace(".", "").isdigit() and len(value) > 8), (key, value)

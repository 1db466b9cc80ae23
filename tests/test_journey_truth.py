"""Every shared capture, replayed through the parser and tracker, matches its truth file and agrees
with Asterisk's own queue_log."""

from __future__ import annotations

import pytest

from onechance.replay import replay_files

from .queuelog import QLVisit, parse_queue_log
from .truthcheck import DATA, check_truth, expected_calls, load_truth, scenarios

SCENARIOS = scenarios()


def replay(name: str) -> list[dict]:
    return [j.to_json() for j in replay_files([str(DATA / f"{name}.ami")]).journeys]


def test_every_capture_has_a_truth_file():
    assert len(SCENARIOS) >= 14
    assert "load_a" in SCENARIOS


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_matches_truth(name):
    journeys = replay(name)
    problems = check_truth(load_truth(name), journeys)
    assert problems == []
    assert len(journeys) == expected_calls(load_truth(name))  # (check_truth ignores journeys it does not expect)


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_agrees_with_queue_log(name):
    """Each ENTERQUEUE of queue_log is one visit of ours (same callid and queue) with the same result,
    the same member credited and a wait within 1.5 s of Asterisk's whole seconds.  (queue_log credits the
    member who was rung, also when another phone picked the call up: ``member``; who talked is ``operator``.)"""
    ql = parse_queue_log(DATA / f"{name}.queue_log")
    journeys = replay(name)
    ours = {}
    for j in journeys:
        for v in j["queues"] + j["consultations"]:
            if v["result"] != "rejected":  # a refused caller has no queue_log line at all
                ours.setdefault((v["callid"], v["queue"]), []).append(v)
    assert sum(len(v) for v in ours.values()) == len(ql)
    mapping = {"answered": "answered", "abandoned": "abandoned", "timeout": "timeout", "exitkey": "exited"}
    for qv in ql:
        visits = ours.get((qv.callid, qv.queue))
        assert visits, f"no visit for queue_log callid {qv.callid} in {qv.queue}"
        v = visits.pop(0)
        if v["result"] == "unknown":
            # a consultation still waiting when the caller hung up: the journey stops following it
            assert v.get("consultation") is True
            continue
        assert v["result"] == mapping[qv.result], (qv, v)
        assert abs(v["wait_seconds"] - qv.wait) <= 1.5, (qv, v)
        if qv.result == "answered":
            assert v["member"] == qv.agent


def test_load_a_outcomes_agree_with_queue_log():
    """Calls whose last queue visit is an ABANDON in queue_log are abandoned; CONNECTs are answered."""
    ql = parse_queue_log(DATA / "load_a.queue_log")
    last_by_caller_channel = {}
    for qv in ql:
        last_by_caller_channel[qv.callid] = qv
    journeys = replay("load_a")
    checked = 0
    for j in journeys:
        if not j["queues"]:
            continue
        last = j["queues"][-1]
        qv = last_by_caller_channel.get(last["callid"])
        if qv is None or qv.queue != last["queue"]:
            continue
        if qv.result == "abandoned":
            assert j["outcome"] == "abandoned", j["caller"]
            checked += 1
        elif qv.result == "answered":
            assert j["outcome"] == "answered", j["caller"]
            checked += 1
    assert checked >= 55


def test_names_survive_in_utf8():
    journeys = replay("bounced")
    assert journeys[0]["operators"] == ["Boris Petrov", "Jüri Õunapuu", "Мария Иванова", "Anna Tamm"]


def test_replaying_several_files_keeps_every_call_in_start_order():
    files = [str(DATA / f"{n}.ami") for n in ("answered", "abandoned", "bounced")]
    journeys = replay_files(files).journeys
    assert [j.caller for j in journeys] == ["+3725550101", "+3725550102", "+3725550106"]
    starts = [j.started_at for j in journeys]
    assert starts == sorted(starts)


def test_abandon_then_callback_is_recovered():
    journeys = replay("abandon_then_callback")
    lost, back = journeys
    assert lost["outcome"] == "abandoned" and lost["recovered"] is True
    assert lost["recovered_by"] == back["call_id"]
    assert back["outcome"] == "answered" and back["recovered"] is False


def conversation_ends(name: str) -> list[QLVisit]:
    """The visits queue_log closes with COMPLETECALLER or COMPLETEAGENT (not a transfer): its word on who
    ended a conversation that began in a queue.  From queue_log alone, not from our journeys."""
    return [qv for qv in parse_queue_log(DATA / f"{name}.queue_log")
            if {"COMPLETECALLER", "COMPLETEAGENT"} & set(qv.events) and qv.transfer is None]


# Only the captures whose queue_log says who ended a conversation: in the others no queue conversation ends
# in queue_log (no queue, a caller who never talked, a transfer), so there is nothing to compare with.
HANGUP_SCENARIOS = [name for name in SCENARIOS if conversation_ends(name)]


def test_the_hang_up_comparison_has_captures_to_compare():
    assert "load_a" in HANGUP_SCENARIOS and len(HANGUP_SCENARIOS) >= 8


@pytest.mark.parametrize("name", HANGUP_SCENARIOS)
def test_who_hung_up_agrees_with_queue_log(name):
    """COMPLETECALLER / COMPLETEAGENT of a call's last queue visit say who ended the conversation; every
    such queue_log visit is a visit of ours."""
    visits = {}
    for j in replay(name):
        for v in j["queues"] + j["consultations"]:
            visits[(v["callid"], v["queue"])] = (j, v)
    checked = 0
    for qv in conversation_ends(name):
        assert (qv.callid, qv.queue) in visits, f"queue_log visit {qv.callid} in {qv.queue} is no visit of ours"
        j, v = visits[(qv.callid, qv.queue)]
        if v["consultation"]:
            # a consultation visit's COMPLETECALLER/AGENT is about the consultation's own caller (the
            # transferring operator's phone), not about who ended the conversation with our caller
            continue
        if v is not j["queues"][-1]:
            # the caller went on to another queue (a phone's own transfer, SIP REFER, which queue_log does not
            # log as a transfer): this visit's end is not the end of the call, but we saw the transfer
            assert any(t["at"] >= v["left_at"] for t in j["transfers"]), j["caller"]
            continue
        assert j["outcome"] == "answered", j["caller"]
        assert j["hangup_by"] == ("caller" if "COMPLETECALLER" in qv.events else "operator"), j["caller"]
        checked += 1
    if name == "load_a":
        assert checked >= 40

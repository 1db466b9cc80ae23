"""Tracker scenarios beyond the captures: PJSIP channels without Local halves, a manager user without
the dialplan event class, thresholds, missing hang-ups, escaped names."""

from __future__ import annotations

from onechance.journey import (
    CallPolicy,
    JourneyTracker,
    JourneyUpdate,
    QueueRule,
    Recovered,
    TrackerSettings,
    UpdateKind,
)
from onechance.replay import JourneyLog

from .amibuild import Chan, Script


def run(script: Script, settings: TrackerSettings | None = None, tracker: JourneyTracker | None = None,
        policy: CallPolicy | None = None):
    tracker = tracker or JourneyTracker(policy, settings)
    updates = []
    for m in script.events:
        updates.extend(tracker.feed(m, arrival=script.t))
    log = JourneyLog()
    log.add(updates)
    return tracker, updates, [j.to_json() for j in log.ordered(tracker)]


def pjsip_call(s: Script, n: int = 1, num: str = "+3725551000") -> tuple[Chan, Chan]:
    uid = f"1800000000.{n * 10}"
    caller = Chan(f"PJSIP/trunk-{n:08x}", uid, uid, num, "Kai Kask")
    op = Chan(f"PJSIP/101-{n:08x}", f"1800000000.{n * 10 + 1}", uid, "101", "Anna", "from-internal", "101")
    return caller, op


def test_pjsip_answered_without_local_channels_and_without_dialplan_events():
    s = Script()
    caller, op = pjsip_call(s)
    s.newchannel(caller).at(0.5).join(caller, "support").at(0.01).newchannel(op)
    s.called(caller, op, "support", "PJSIP/101", "Anna Tamm").at(4).connect(caller, op, "support", "PJSIP/101",
                                                                             "Anna Tamm", 4)
    s.at(30).hangup(caller).hangup(op, request=False)
    s.ev("AgentComplete", caller.block(), op.block("Dest"), Queue="support", Interface="PJSIP/101",
         MemberName="Anna Tamm", HoldTime="4", TalkTime="30", Reason="caller")
    _, updates, (j,) = run(s)
    assert j["outcome"] == "answered"
    assert j["caller"] == "+3725551000" and j["caller_name"] == "Kai Kask"
    assert j["operators"] == ["Anna Tamm"]
    assert abs(j["queues"][0]["wait_seconds"] - 4.01) < 0.01
    assert abs(j["talk_seconds"] - 30) < 0.01
    assert j["hangup_by"] == "caller"
    assert [u.kind for u in updates].count(UpdateKind.ENDED) == 1


def test_pjsip_abandon_vs_timeout_without_queuestatus():
    # abandon: the caller's channel asks to hang up before QueueCallerAbandon
    s = Script()
    caller, _ = pjsip_call(s, 1, "+3725551001")
    s.newchannel(caller).join(caller, "sales").at(12)
    s.ev("HangupRequest", caller.block(), Cause="16").abandon(caller, "sales", 12)
    s.ev("Hangup", caller.block(), Cause="16")
    # timeout: QueueCallerAbandon with no hang-up; the caller goes on to voicemail, then hangs up
    caller2, _ = pjsip_call(s, 2, "+3725551002")
    s.at(1).newchannel(caller2).join(caller2, "sales").at(30).abandon(caller2, "sales", 30)
    s.at(20).hangup(caller2)
    _, updates, journeys = run(s)
    by = {j["caller"]: j for j in journeys}
    assert by["+3725551001"]["outcome"] == "abandoned"
    assert by["+3725551001"]["alerts"] == ["abandoned"]
    assert by["+3725551002"]["outcome"] == "timeout"
    assert by["+3725551002"]["alerts"] == ["timeout"]
    assert by["+3725551002"]["hangup_by"] == "queue"
    kinds = [u.kind for u in updates]
    assert UpdateKind.ABANDONED in kinds and UpdateKind.TIMED_OUT in kinds


def test_queuestatus_overrides_the_hangup_heuristic():
    s = Script()
    caller, _ = pjsip_call(s)
    s.newchannel(caller).join(caller, "sales").at(10)
    s.ev("HangupRequest", caller.block(), Cause="16").abandon(caller, "sales", 10)
    s.ev("VarSet", caller.block(), Variable="QUEUESTATUS", Value="LEAVEEMPTY").hangup(caller, request=False)
    _, _, (j,) = run(s)
    assert j["outcome"] == "timeout"
    assert j["queues"][0]["exit_status"] == "LEAVEEMPTY"


def test_rejected_caller_takes_the_queue_name_from_the_dialplan():
    s = Script()
    caller, _ = pjsip_call(s)
    s.newchannel(caller).at(0.2)
    s.ev("Newexten", caller.block(), Extension="s", Application="Queue", AppData="nightshift,t,,,60")
    s.ev("VarSet", caller.block(), Variable="QUEUESTATUS", Value="FULL").at(0.1).hangup(caller)
    _, updates, (j,) = run(s)
    assert j["outcome"] == "rejected"
    assert [(q["queue"], q["result"], q["wait_seconds"]) for q in j["queues"]] == [("nightshift", "rejected", 0.0)]
    assert j["alerts"] == ["rejected"]
    assert UpdateKind.REJECTED in [u.kind for u in updates]


def test_short_abandon_threshold_is_per_queue():
    policy = CallPolicy(QueueRule(), {"sales": QueueRule(short_abandon_seconds=10)})
    s = Script()
    for n, queue in ((1, "sales"), (2, "support")):
        caller, _ = pjsip_call(s, n, f"+37255510{n:02d}")
        s.newchannel(caller).join(caller, queue).at(7)
        s.ev("HangupRequest", caller.block(), Cause="16").abandon(caller, queue, 7).hangup(caller, request=False)
    _, _, journeys = run(s, policy=policy)
    by = {j["queues"][0]["queue"]: j for j in journeys}
    assert by["sales"]["short_abandon"] is True and by["sales"]["alerts"] == []
    assert by["support"]["short_abandon"] is False and by["support"]["alerts"] == ["abandoned"]


def test_a_call_that_never_hangs_up_is_closed_by_max_age():
    settings = TrackerSettings(max_call_age=3600)
    s = Script()
    caller, _ = pjsip_call(s, 1)
    s.newchannel(caller).join(caller, "support")
    other, _ = pjsip_call(s, 2, "+3725559999")
    s.at(4000).newchannel(other)  # an event two hours later sweeps the stale call
    tracker, _, journeys = run(s, settings)
    stale = next(j for j in journeys if j["caller"] == "+3725551000")
    assert stale["ended_at"] is not None and stale["uncertain"] is True
    assert stale["closed_reason"] == "max_age"
    assert len(tracker.calls) == 1


def test_late_events_do_not_revive_an_ended_call():
    s = Script()
    caller, _ = pjsip_call(s)
    s.newchannel(caller).hangup(caller)
    s.ev("VarSet", caller.block(), Variable="CDR(x)", Value="1")
    tracker, _, journeys = run(s)
    assert len(journeys) == 1 and tracker.calls == {}


def test_escaped_caller_name_and_missing_timestamps():
    s = Script()
    uid = "1800000000.5"
    caller = Chan("PJSIP/trunk-1", uid, uid, "+3725550000", 'Mari \\"Mats\\" Maasikas')
    s.ev("Newchannel", caller.block(), timestamp=False)
    tracker = JourneyTracker()
    (u,) = tracker.feed(s.events[0], arrival=1234.5)
    assert isinstance(u, JourneyUpdate)
    assert u.record.caller_name == 'Mari "Mats" Maasikas'
    assert u.record.started_at == 1234.5


def test_bounce_threshold_and_recovery_of_a_timed_out_caller():
    policy = CallPolicy.with_defaults(bounce_transfers=3)
    s = Script()
    caller, _ = pjsip_call(s, 1, "+3725551234")
    s.newchannel(caller).join(caller, "support").at(40).abandon(caller, "support", 40).at(1).hangup(caller)
    # later the same number is answered: the lost call is recovered
    caller2, op2 = pjsip_call(s, 2, "+3725551234")
    s.at(60).newchannel(caller2).join(caller2, "support").newchannel(op2)
    s.called(caller2, op2, "support", "PJSIP/101", "Anna Tamm").at(2).connect(caller2, op2, "support",
                                                                              "PJSIP/101", "Anna Tamm", 2)
    for i in range(3):
        s.at(5).ev("BlindTransfer", op2.block("Transferer"), caller2.block("Transferee"), Result="Success",
                   IsExternal="Yes", Context="from-internal", Extension=f"20{i}")
    _, updates, journeys = run(s, policy=policy)
    first, second = sorted(journeys, key=lambda j: j["started_at"])
    assert first["outcome"] == "timeout" and first["recovered"] is True
    assert first["recovered_by"] == second["call_id"]
    assert second["transfers"][0]["from"] == "Anna Tamm"
    assert second["bounced"] is True
    bounced = [u for u in updates if isinstance(u, JourneyUpdate) and u.kind == UpdateKind.BOUNCED]
    assert len(bounced) == 1 and bounced[0].detail == {"transfers": 3}


def local_pair(name: str, n: int, linkedid: str, num: str = "<unknown>") -> tuple[Chan, Chan]:
    base = f"1800000100.{n}"
    exten, _, rest = name.removeprefix("Local/").partition("@")
    context = rest.rsplit("-", 1)[0]
    one = Chan(f"{name};1", base + "1", linkedid, num, context=context, exten=exten)
    two = Chan(f"{name};2", base + "2", linkedid, num, context=context, exten=exten)
    return one, two


def queue_answered_call(s: Script) -> tuple[Chan, Chan, Chan, Chan]:
    """A PJSIP caller in `support`, answered by member Local/101@agents/n (Anna Tamm)."""
    caller = Chan("PJSIP/trunk-00000001", "1800000000.1", "1800000000.1", "+3725550555", "Ülle Õis")
    m1, m2 = local_pair("Local/101@agents-00000001", 1, caller.uid)
    s.newchannel(caller).at(0.5).join(caller, "support").newchannel(m1).newchannel(m2)
    s.called(caller, m1, "support", "Local/101@agents/n", "Anna Tamm")
    s.at(3).connect(caller, m1, "support", "Local/101@agents/n", "Anna Tamm", 3)
    # the member directory also knows Дмитрий (sales) from QueueMemberStatus
    s.ev("QueueMemberStatus", Queue="sales", MemberName="Дмитрий Орлов", Interface="Local/202@agents/n",
         StateInterface="Local/202@agents/n", Status="1")
    return caller, m1, m2, caller


def test_blind_transfer_to_an_operators_own_extension():
    s = Script()
    caller, m1, m2, _ = queue_answered_call(s)
    s.at(10).ev("BlindTransfer", m1.block("Transferer"), caller.block("Transferee"), Result="Success",
                IsExternal="Yes", Context="inbound", Extension="202")
    s.ev("AgentComplete", caller.block(), m1.block("Dest"), Queue="support", Interface="Local/101@agents/n",
         MemberName="Anna Tamm", HoldTime="3", TalkTime="10", Reason="transfer")
    s.hangup(m1, request=False).hangup(m2, request=False)
    # the caller's channel goes on in the dialplan and dials the extension
    d1, d2 = local_pair("Local/202@agents-00000002", 2, caller.uid)
    s.at(0.1).newchannel(d1).newchannel(d2)
    s.ev("DialBegin", caller.block(), d1.block("Dest"), DialString="202@agents/n")
    s.at(4).ev("DialEnd", caller.block(), d1.block("Dest"), DialStatus="ANSWER")
    s.at(20).hangup(d2).hangup(d1, request=False).hangup(caller)
    _, updates, (j,) = run(s)
    assert j["outcome"] == "answered"
    assert j["queues"] == [j["queues"][0]] and j["queues"][0]["queue"] == "support"  # no queue_log trace
    assert j["operators"] == ["Anna Tamm", "Дмитрий Орлов"]
    assert [(t["kind"], t["from"], t["to"]) for t in j["transfers"]] == [("blind", "Anna Tamm", "202")]
    assert j["legs"][1]["kind"] == "dial" and abs(j["legs"][1]["talk_seconds"] - 20) < 0.01
    assert j["hangup_by"] == "operator"
    assert [u.kind for u in updates].count(UpdateKind.ANSWERED) == 2


def test_attended_transfer_to_an_extension_joins_the_consulted_operator_at_completion():
    s = Script()
    caller, m1, m2, _ = queue_answered_call(s)
    # Anna presses *2 and dials 202: a consultation Local pair with the caller's linkedid
    c1, c2 = local_pair("Local/202@inbound-00000003", 3, caller.uid)
    s.at(5).ev("Hold", m1.block())
    s.newchannel(c1).newchannel(c2)
    s.ev("BridgeEnter", c1.block(), BridgeUniqueid="consult-bridge")
    s.ev("BridgeLeave", m1.block(), BridgeUniqueid="queue-bridge")
    s.ev("BridgeEnter", m1.block(), BridgeUniqueid="consult-bridge")
    d1, d2 = local_pair("Local/202@agents-00000004", 4, caller.uid)
    s.newchannel(d1).newchannel(d2)
    s.ev("DialBegin", c2.block(), d1.block("Dest"), DialString="202@agents/n")
    s.at(2).ev("DialEnd", c2.block(), d1.block("Dest"), DialStatus="ANSWER")
    mid = run(s)[2][0]
    assert mid["operators"] == ["Anna Tamm"]  # the consulted operator has not talked to the caller yet
    s.at(6).ev("HangupRequest", m2.block(), Cause="16")
    s.ev("AttendedTransfer", m1.block("OrigTransferer"), m1.block("SecondTransferer"),
         caller.block("Transferee"), c1.block("TransferTarget"), Result="Success", IsExternal="No",
         DestType="Bridge", DestBridgeUniqueid="queue-bridge")
    s.hangup(m1, request=False).hangup(m2, request=False)
    s.at(30).hangup(caller).hangup(c1, request=False).hangup(c2, request=False)
    s.hangup(d1, request=False).hangup(d2, request=False)
    _, _, (j,) = run(s)
    assert j["outcome"] == "answered"
    assert j["operators"] == ["Anna Tamm", "Дмитрий Орлов"]
    assert [(t["kind"], t["from"], t["to"]) for t in j["transfers"]] == [("attended", "Anna Tamm", "202")]
    legs = j["legs"]
    assert legs[1]["talk_from"] > legs[1]["answered_at"]  # talks to the caller from the transfer on
    assert abs(legs[1]["talk_seconds"] - 30) < 0.01
    assert j["hangup_by"] == "caller"


def ivr_into_queue(s: Script, n: int, num: str, answered: bool) -> None:
    """A PJSIP caller whose dialplan Dial()s a Local channel that answers and runs Queue(support)."""
    uid = f"1800000200.{n}"
    caller = Chan(f"PJSIP/trunk-0000020{n}", uid, uid, num, "Piret Puu")
    l1, l2 = local_pair(f"Local/7001@ivr-0000030{n}", 30 + n, uid, num)
    s.newchannel(caller).newchannel(l1).newchannel(l2)
    s.ev("DialBegin", caller.block(), l1.block("Dest"), DialString="7001@ivr")
    s.at(0.01).ev("DialEnd", caller.block(), l1.block("Dest"), DialStatus="ANSWER")
    s.at(0.5).join(l2, "support")
    if answered:
        m1, m2 = local_pair(f"Local/101@agents-0000040{n}", 40 + n, uid, num)
        s.newchannel(m1).newchannel(m2).called(l2, m1, "support", "Local/101@agents/n", "Anna Tamm")
        s.at(6).connect(l2, m1, "support", "Local/101@agents/n", "Anna Tamm", 6)
        s.at(60).hangup(caller).hangup(l1, request=False).hangup(l2, request=False)
        s.hangup(m1, request=False).hangup(m2, request=False)
    else:
        s.at(20).ev("HangupRequest", caller.block(), Cause="16").ev("HangupRequest", l1.block(), Cause="16")
        s.abandon(l2, "support", 20).hangup(caller, request=False).hangup(l1, request=False)
        s.hangup(l2, request=False)


def test_an_ivr_local_channel_into_a_queue_is_the_caller_not_an_operator():
    s = Script()
    caller, _ = pjsip_call(s, 1, "+3725558888")
    s.newchannel(caller).join(caller, "support").at(30)
    s.ev("HangupRequest", caller.block(), Cause="16").abandon(caller, "support", 30).hangup(caller, request=False)
    s.at(100)
    ivr_into_queue(s, 1, "+3725558888", answered=False)  # lost again: must not recover the first
    s.at(100)
    ivr_into_queue(s, 2, "+3725558888", answered=True)  # answered: recovers both
    _, updates, journeys = run(s)
    first, second, third = sorted(journeys, key=lambda j: j["started_at"])
    assert second["outcome"] == "abandoned" and second["operators"] == [] and second["legs"] == []
    assert [q["queue"] for q in second["queues"]] == ["support"]
    assert third["outcome"] == "answered" and third["operators"] == ["Anna Tamm"]
    recovered = [u for u in updates if isinstance(u, Recovered)]
    assert [(u.call_id, u.by, u.how) for u in recovered] == [
        (first["call_id"], third["call_id"], "inbound"), (second["call_id"], third["call_id"], "inbound")]
    answered = [u for u in updates if isinstance(u, JourneyUpdate) and u.kind == UpdateKind.ANSWERED]
    assert [u.record.call_id for u in answered] == [third["call_id"]]


def test_a_direct_dial_answered_by_a_local_channel_is_announced_after_a_moment():
    s = Script()
    uid = "1800000300.1"
    caller = Chan("PJSIP/trunk-00000301", uid, uid, "+3725557777")
    d1, d2 = local_pair("Local/201@agents-00000302", 77, uid)
    s.newchannel(caller).newchannel(d1).newchannel(d2)
    s.ev("DialBegin", caller.block(), d1.block("Dest"), DialString="201@agents/n")
    s.at(3).ev("DialEnd", caller.block(), d1.block("Dest"), DialStatus="ANSWER")
    s.at(0.5).ev("BridgeEnter", caller.block(), BridgeUniqueid="b1")
    s.at(0.6).ev("Newstate", caller.block())
    s.at(10).hangup(caller).hangup(d1, request=False).hangup(d2, request=False)
    tracker = JourneyTracker()
    kinds_at = []
    for m in s.events:
        kinds_at += [(u.kind, m.headers["Event"]) for u in tracker.feed(m) if isinstance(u, JourneyUpdate)]
    assert (UpdateKind.ANSWERED, "Newstate") in kinds_at  # confirmed by the first event a second later
    answered = [k for k in kinds_at if k[0] == UpdateKind.ANSWERED]
    assert len(answered) == 1


def test_lost_calls_of_a_number_expire_one_by_one():
    """A number lost again and again is not watched forever: each lost call leaves the recovery watch
    list when it is older than the recovery window."""
    settings = TrackerSettings(recovery_window=86400)
    s = Script()
    for day in range(5):
        caller, _ = pjsip_call(s, day + 1, "+3725556666")
        s.at(86400 * 0.6).newchannel(caller).join(caller, "support").at(30)
        s.abandon(caller, "support", 30).at(1).hangup(caller)  # a timeout each time
    tracker, _, journeys = run(s, settings)
    assert len(journeys) == 5
    assert 1 <= tracker.watched() <= 2
    # the newest lost call is still watched: an answered call from the number recovers it, and only it
    # (the older ones left the watch list one by one)
    caller, op = pjsip_call(s, 9, "+3725556666")
    before = len(s.events)
    s.at(60).newchannel(caller).join(caller, "support").newchannel(op)
    s.called(caller, op, "support", "PJSIP/101", "Anna Tamm").at(2).connect(caller, op, "support", "PJSIP/101",
                                                                             "Anna Tamm", 2)
    recovered = [u for m in s.events[before:] for u in tracker.feed(m, arrival=s.t) if isinstance(u, Recovered)]
    newest = max(journeys, key=lambda j: j["started_at"])
    assert newest["call_id"] in [r.call_id for r in recovered]
    assert all(j["ended_at"] >= s.t - 86400 - 120 for j in journeys if j["call_id"] in [r.call_id for r in recovered])

"""The simulator against the real captures, message by message.

Every capture of ``tests/data`` (the shared ``ami-captures``) is re-enacted with its script
(:mod:`onechance.sim.captures`) and compared burst by burst (messages less than 0.25 s apart): each burst
must hold the same messages, every header and value, once ids are made symbolic (channel names by base
and order of appearance, Uniqueids by their channel, bridges by order).  What two runs of the same real
Asterisk would not repeat either is left out or compared loosely, and each case says why:

* times: ``Timestamp`` and the values measured in time (``HoldTime``, ``TalkTime``, ``RingTime`` of
  ``AgentConnect``, ``QUEUEWAIT``, ``*_MS``, ``ANSWEREDTIME``, ``DIALEDTIME``), the media statistics
  (``RTPAUDIOQOS*``), PJSIP session ids and addresses, ``LoginTime``/``LastCall``/``CallsTaken``/``Uptime``;
* the channel snapshot of ``AgentComplete`` and the ``Dest`` state, connected line and exten in
  ``AgentCalled``/``DialBegin``/``DialState``, ``BridgeNumChannels`` of ``BridgeLeave``: taken by Asterisk's
  threads at a moment that races with the channel's own changes;
* ``DeviceStateChange``, ``QueueMemberStatus`` (without ``Status``/``State``/``InCall``) and the RTCP reports
  (per channel): sent by other threads whenever they get to it, so compared as a set over the stream
  (the few RTCP reports without a channel, from an RTP instance a transfer left behind, are not simulated).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable

import pytest

from onechance.sim.captures import CAPTURES, capture_centre, capture_script

from .truthcheck import DATA

Headers = list[tuple[str, str]]

PFX = ("", "Dest", "Transferer", "Transferee", "TransferTarget", "OrigTransferer", "SecondTransferer",
       "LocalOne", "LocalTwo", "Source", "Target")
BLOCK = ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
         "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid", "Linkedid")
SKIP_EVENTS = {"SuccessfulAuth", "FullyBooted", "ChallengeSent"}  # at login, or of the phone's registration
SKIP_KEYS = {"Timestamp", "EventTV", "SessionID", "LocalAddress", "RemoteAddress", "SessionTV", "LoginTime",
             "LastCall", "CallsTaken", "Uptime", "LastReload"}
TIMED_VARS = {"ANSWEREDTIME", "DIALEDTIME", "QUEUEWAIT"}
CHAN_RE = re.compile(r"^(.*)-([0-9a-f]{8})(;[12])?$")


def parse(data: bytes) -> list[Headers]:
    if data.startswith(b"Asterisk Call Manager"):
        data = data.partition(b"\r\n")[2]
    out = []
    for raw in data.split(b"\r\n\r\n"):
        if not raw.strip():
            continue
        out.append([tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")  # type: ignore[misc]
                    for line in raw.decode().split("\r\n")])
    return out


def canon(msgs: Iterable[Headers], gap: float = 0.25) -> tuple[list[collections.Counter[str]], set[str]]:
    """The stream as bursts of normalised messages, and the set of the racy ones."""
    names: dict[str, str] = {}
    counts: collections.Counter[str] = collections.Counter()
    uids: dict[str, str] = {}
    bridges: dict[str, str] = {}

    def chsym(name: str) -> str:
        m = CHAN_RE.match(name)
        if not m:
            return name
        key = f"{m.group(1)}-{m.group(2)}"
        if key not in names:
            counts[m.group(1)] += 1
            names[key] = f"{m.group(1)}#{counts[m.group(1)]}"
        return names[key] + (m.group(3) or "")

    bursts: list[collections.Counter[str]] = []
    racy: set[str] = set()
    last = None
    cur: collections.Counter[str] = collections.Counter()
    for hs in msgs:
        d = dict(hs)
        ev = d.get("Event")
        if not ev or ev in SKIP_EVENTS or "Timestamp" not in d:
            continue
        t = float(d["Timestamp"])
        for p in PFX:
            if p + "Channel" in d and p + "Uniqueid" in d:
                uids.setdefault(d[p + "Uniqueid"], chsym(d[p + "Channel"]))
        if ev in ("RTCPSent", "RTCPReceived"):
            if "Channel" in d:  # an RTP instance that a transfer left without a channel: not simulated
                racy.add(f"{ev} {chsym(d['Channel'])}")
            continue
        if last is None or t - last > gap:
            cur = collections.Counter()
            bursts.append(cur)
        last = t
        var = d.get("Variable", "")
        parts = []
        for k, v in hs:
            if k in SKIP_KEYS or (k == "ActionID" and ev == "OriginateResponse"):
                continue
            if ev == "AgentComplete" and (k.startswith("Dest") or k in BLOCK):
                continue
            if (k.endswith("Uniqueid") and "Bridge" not in k) or k.endswith("Linkedid") or k == "DestUniqueId":
                v = uids.get(v, v if v in ("", "none") else "?" + v)
            elif "BridgeUniqueid" in k:
                v = bridges.setdefault(v, f"B{len(bridges)}")
            elif k == "Value" and (var.endswith("_MS") or var.startswith(("RTPAUDIOQOS", "BRIDGEPVTCALLID"))
                                   or var in TIMED_VARS):
                v = "#"
            elif ev in ("AgentCalled", "DialBegin", "DialState") and k in (
                    "DestChannelState", "DestChannelStateDesc", "DestConnectedLineNum", "DestConnectedLineName",
                    "DestExten"):
                v = "*"
            elif (ev == "BridgeLeave" and k == "BridgeNumChannels") or k in ("TalkTime", "HoldTime") \
                    or (k == "RingTime" and ev == "AgentConnect"):
                v = "#"
            elif "Channel" in k or k in ("Value", "Newname"):
                v = chsym(v) if CHAN_RE.match(v) else v
            parts.append(f"{k}={v}")
        line = " ".join(parts)
        if ev in ("DeviceStateChange", "QueueMemberStatus"):
            racy.add(" ".join(p for p in parts if not p.startswith(("State=", "Status=", "InCall="))))
            continue
        cur[line] += 1
    return bursts, racy


def differences(capture: list[Headers], sim: list[Headers]) -> list[str]:
    a, ra = canon(capture)
    b, rb = canon(sim)
    out = []
    if ra - rb:
        out.append(f"device/member states or RTCP only in the capture: {sorted(ra - rb)[:5]}")
    if len(a) != len(b):
        out.append(f"{len(a)} bursts in the capture, {len(b)} simulated")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            out.append(f"burst {i}: capture only {sorted((x - y).elements())[:3]}; "
                       f"simulated only {sorted((y - x).elements())[:3]}")
    return out


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_is_reenacted_message_by_message(name: str) -> None:
    capture = parse((DATA / f"{name}.ami").read_bytes())
    c = capture_centre(name)
    sim = parse(c.run(calls=len(capture_script(name))))
    diffs = differences(capture, sim)
    assert not diffs, f"{name}:\n" + "\n".join(diffs[:10])


def test_every_capture_has_a_script() -> None:
    """All single-scenario captures are re-enacted (load_a is many calls at once: the random tests' job)."""
    captures = {p.stem for p in DATA.glob("*.ami")} - {"load_a"}
    assert captures == set(CAPTURES)


def test_the_comparison_sees_a_wrong_message() -> None:
    """A negative control: one changed header in the simulated stream is a difference."""
    name = "blind_transfer"
    capture = parse((DATA / f"{name}.ami").read_bytes())
    sim = parse(capture_centre(name).run(calls=1))
    for hs in sim:
        if dict(hs).get("Event") == "BlindTransfer":
            hs[:] = [(k, "sales2" if k == "Extension" else v) for k, v in hs]
    assert differences(capture, sim)

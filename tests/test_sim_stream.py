"""The simulated stream itself: reproducible, well-formed AMI with the captures' exact header order,
ids and names as Asterisk 22 makes them, realistic and configurable traffic, several PBXs, big centres."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
from pathlib import Path

import pytest

from onechance.ami.parser import AmiFramer
from onechance.replay import replay_files
from onechance.sim import (
    BANNER,
    Behaviour,
    CallerPool,
    Centre,
    OperatorSpec,
    QueueSpec,
    RateProfile,
    SimConfig,
    SimConfigError,
)

from .truthcheck import DATA, check_sim

BOOST = Behaviour(transfer=0.45, attended_share=0.5, second_transfer=0.6, key_exit=0.25, direct=0.12,
                  refused=0.06, pickup=0.35, ring_back=0.5, call_back=0.9, impatient=0.15)


def split(data: bytes) -> list[list[tuple[str, str]]]:
    """Raw messages as (key, value) lists, in order (no parser in between)."""
    if data.startswith(b"Asterisk Call Manager"):
        data = data.partition(b"\r\n")[2]
    out = []
    for raw in data.split(b"\r\n\r\n"):
        if raw:
            out.append([tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")  # type: ignore[misc]
                        for line in raw.decode().split("\r\n")])
    return out


def stream(style: str, seed: int = 1, calls: int = 150, **kw: object) -> bytes:
    cfg = SimConfig.default(seed=seed, style=style, rate=RateProfile(scale=6), behaviour=BOOST, **kw)
    return Centre(cfg).run(calls=calls)


@pytest.fixture(scope="module")
def streams() -> dict[str, bytes]:
    return {style: stream(style) for style in ("sip", "local")}


# ---- reproducible --------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["sip", "local"])
def test_same_seed_same_bytes(style: str, streams: dict[str, bytes]) -> None:
    assert stream(style) == streams[style]
    assert stream(style, seed=2) != streams[style]


def test_start_is_the_time_origin() -> None:
    """The same traffic 100 days earlier (the rate profile is by hour of the day): the same stream, every
    Timestamp and Uniqueid moved by those days."""
    shift = 100 * 86400
    a = split(stream("sip", calls=20, start=1_800_000_000.0))
    b = split(stream("sip", calls=20, start=1_800_000_000.0 - shift))
    assert len(a) == len(b)
    for ma, mb in zip(a, b):
        for (ka, va), (kb, vb) in zip(ma, mb):
            assert ka == kb
            if ka == "Timestamp" or (ka.endswith(("Uniqueid", "Linkedid")) and "Bridge" not in ka
                                     and va not in ("", "none")):
                assert abs(float(va) - float(vb) - shift) < 1e-6
    assert float(dict(a[0])["Timestamp"]) >= 1_800_000_000.0


def test_endless_stream_and_chunks_agree() -> None:
    """``messages()`` goes on for ever (no call limit); ``chunks()`` is the same bytes in bigger pieces."""
    cfg = SimConfig.default(seed=3, rate=RateProfile(scale=6))
    msgs = list(itertools.islice(Centre(cfg).messages(), 30_000))
    assert len(msgs) == 30_000 and all(m.endswith(b"\r\n\r\n") and m.count(b"\r\n\r\n") == 1 for m in msgs)
    first = b"".join(msgs)
    got = b""
    for chunk in Centre(cfg).chunks():
        got += chunk
        if len(got) >= len(first):
            break
    assert got.startswith(first)
    span = float(dict(split(msgs[-1])[0])["Timestamp"]) - cfg.start
    assert span > 1800  # half an hour of calls and more


# ---- well-formed -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["sip", "local"])
def test_every_message_parses(style: str, streams: dict[str, bytes]) -> None:
    data = streams[style]
    framer = AmiFramer()
    msgs = list(framer.iter_feed(BANNER + data))
    assert framer.finish()
    assert framer.bad_messages == 0
    assert len(msgs) == data.count(b"\r\n\r\n") == len(split(data))
    last = 0.0
    for m in msgs:
        assert m.event and m.get("Privilege") and m.get("Timestamp"), m.headers
        assert re.fullmatch(r"\d{10}\.\d{6}", m.get("Timestamp") or "")
        ts = float(m.get("Timestamp") or 0)
        assert ts >= last  # the clock never goes back
        last = ts


def _key_orders(data: bytes) -> dict[str, set[tuple[str, ...]]]:
    out: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for m in split(data):
        out[m[0][1]].add(tuple(k for k, _v in m))
    return out


def test_header_order_of_every_event_is_a_captured_one() -> None:
    """Each event the simulator writes has exactly the header keys, in the order, of the same event in a
    real capture (no invented or reordered header); and it writes every event type of the captures but
    those of the login."""
    captured: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for path in DATA.glob("*.ami"):
        for ev, orders in _key_orders(path.read_bytes()).items():
            captured[ev] |= orders
    simulated: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for style, seed in (("sip", 1), ("sip", 2), ("sip", 3), ("local", 1), ("local", 2)):
        for ev, orders in _key_orders(stream(style, seed=seed, calls=200)).items():
            simulated[ev] |= orders
    for ev, orders in simulated.items():
        assert ev in captured, f"{ev} is in no capture"
        extra = orders - captured[ev]
        assert not extra, f"{ev}: header order in no capture: {sorted(extra)[:2]}"
    login = {"FullyBooted", "Success", "Goodbye"}  # the answers of Login/Logoff, the demo PBX's job
    assert set(captured) - set(simulated) == login


@pytest.mark.parametrize("style", ["sip", "local"])
def test_ids_and_channel_names(style: str, streams: dict[str, bytes]) -> None:
    """Uniqueids are ``<epoch>.<counter>`` with one counter for the PBX, given out in order as channels
    are made; channel names carry one hex counter per technology (``Local/...-0000002a;1``/``;2``,
    ``PJSIP/carrier-0000001b``)."""
    seen_uid: list[int] = []
    names: dict[str, list[int]] = collections.defaultdict(list)
    halves: dict[str, set[str]] = collections.defaultdict(set)
    for m in split(streams[style]):
        d = dict(m)
        if d["Event"] != "Newchannel":
            continue
        epoch, counter = d["Uniqueid"].split(".")
        assert int(epoch) <= float(d["Timestamp"]) < int(epoch) + 1
        seen_uid.append(int(counter))
        mm = re.fullmatch(r"(Local|PJSIP)/(.+)-([0-9a-f]{8})(;[12])?", d["Channel"])
        assert mm, d["Channel"]
        tech, _base, hexn, half = mm.groups()
        assert (half is not None) == (tech == "Local")
        if half:
            halves[f"{tech}{hexn}"].add(half)
        if half != ";2":
            names[tech].append(int(hexn, 16))
    assert seen_uid == list(range(len(seen_uid)))
    for tech, ns in names.items():
        assert ns == list(range(len(ns))), tech
    assert all(h == {";1", ";2"} for h in halves.values())
    if style == "sip":
        assert names["PJSIP"] and names["Local"]


def test_system_name_and_several_pbxs(tmp_path: Path) -> None:
    """Several PBXs: each its own Uniqueid space (``<systemname>-<epoch>.<counter>``) and ``SystemName``
    header; each stream followed by its own tracker gives its own calls, equal to its truth."""
    out = {}
    for i, name in enumerate(("pbx-tallinn", "pbx-tartu", "pbx-narva")):
        cfg = SimConfig.default(seed=40 + i, system_name=name, rate=RateProfile(scale=6),
                                style="sip" if i != 1 else "local")
        c = Centre(cfg, pbx_name=name)
        data = c.run(calls=80)
        msgs = split(data)
        assert all(dict(m).get("SystemName") == name for m in msgs)
        assert all(k == "SystemName" for m in msgs for k, _v in m[3:4])  # right after Timestamp
        uids = {v for m in msgs for k, v in m if k.endswith(("Uniqueid", "Linkedid")) and "Bridge" not in k
                and v not in ("", "none")}
        assert uids and all(u.startswith(f"{name}-") for u in uids)
        path = tmp_path / f"{name}.ami"
        path.write_bytes(BANNER + data)
        res = replay_files([str(path)], pbx=name)
        truths = [t.to_dict() for t in c.truths]
        assert all(t["pbx"] == name for t in truths)
        assert check_sim(truths, [j.to_json() for j in res.journeys], {o.ext: o.name for o in cfg.operators},
                         0.05) == {}
        out[name] = uids
    a, b, c3 = out.values()
    assert not (a & b) and not (b & c3) and not (a & c3)


# ---- realistic and configurable -----------------------------------------------------------------------------
def test_arrivals_follow_the_rate_profile() -> None:
    per_hour = tuple(0 if h < 8 or h >= 18 else (40 if h in (10, 11) else 10) for h in range(24))
    day = 1_800_000_000 - 1_800_000_000 % 86400  # midnight UTC
    cfg = SimConfig.default(seed=5, start=float(day), rate=RateProfile(per_hour=per_hour))
    c = Centre(cfg)
    c.run(seconds=86400)
    hours = collections.Counter(int((t.started_at - day) // 3600) for t in c.truths if t.direction == "inbound"
                                and "ring_back" not in t.kinds)
    assert all(hours[h] == 0 for h in range(24) if h < 7 or h > 18)
    assert 8 * 5 < hours[10] + hours[11] < 2 * 40 * 2  # about 2 x 40 (the profile is linear between hours)
    assert hours[10] + hours[11] > 2 * (hours[14] + hours[15])


@pytest.mark.parametrize(("style", "seed"), [("sip", 9), ("sip", 100), ("sip", 101), ("local", 9), ("local", 100)])
def test_operators_talk_to_one_caller_at_a_time(style: str, seed: int) -> None:
    """An operator is rung, talks, or consults for one caller at a time (``ringinuse = no``): in the local
    style at most one ``Local/<ext>@agents`` pair lives per operator; in the sip style at most one of the
    operator's phone channels is live and was not put on hold (two only while one holds the caller during
    an attended transfer's consultation)."""
    cfg = SimConfig.default(seed=seed, style=style, rate=RateProfile(scale=8), behaviour=BOOST)
    # billing holds one caller at most: transferred legs are refused too, and take their chain down at once
    cfg = dataclasses.replace(cfg, queues=tuple(dataclasses.replace(q, maxlen=1) if q.name == "billing" else q
                                                for q in cfg.queues))
    data = Centre(cfg).run(calls=250)
    live: dict[str, set[str]] = collections.defaultdict(set)
    held: set[str] = set()
    worst = 0
    for m in split(data):
        d = dict(m)
        ev, name = d["Event"], d.get("Channel", "")
        mm = re.fullmatch(r"Local/(\d+)@agents-[0-9a-f]{8};1" if style == "local" else r"PJSIP/(\d+)-[0-9a-f]{8}", name)
        if not mm:
            continue
        ext = mm.group(1)
        if ev == "Newchannel":
            live[ext].add(name)
        elif ev == "Hangup":
            live[ext].discard(name)
            held.discard(name)
        elif ev == "Hold":
            held.add(name)  # until it hangs up (the REFER unholds both phone channels just before)
        active = len(live[ext] - held)
        assert active <= 1, f"{ext} on {sorted(live[ext])} at {d['Timestamp']}"
        worst = max(worst, len(live[ext]))
    assert worst == (2 if style == "sip" else 1)


def test_names_in_many_scripts_and_numbers_in_many_formats() -> None:
    cfg = SimConfig.default(seed=4, rate=RateProfile(scale=6), callers=CallerPool(size=300))
    c = Centre(cfg)
    c.run(calls=400)
    names = " ".join(t.caller_name for t in c.truths)
    for pattern in (r"[äöüõšžéñøåł]", r"[а-яё]", r"[α-ω]", r"[\u4e00-\u9fff\uac00-\ud7a3]", r"[\u0600-\u06ff]"):
        assert re.search(pattern, names, re.IGNORECASE), pattern
    numbers = [t.caller for t in c.truths if t.direction == "inbound"]
    assert any(n.startswith("+372") for n in numbers)
    assert any(n.startswith("00") for n in numbers)
    assert any(n[0] != "+" and not n.startswith("00") for n in numbers)
    # O'Brien's apostrophe is escaped in CallerIDName as Asterisk does (ast_escape_c)
    people = CallerPool(size=2000, scripts={"latin": 1.0})
    c2 = Centre(dataclasses.replace(cfg, callers=people))
    data = c2.run(calls=300).decode()
    assert any("'" in t.caller_name for t in c2.truths)
    assert re.search(r"CallerIDName: [^\r]*O\\'(Brien|Connor)\r", data)
    assert not re.search(r"CallerIDName: [^\r]*[^\\]'", data)


def test_queue_strategies_ring_as_configured() -> None:
    """ringall rings every free member at once; rrmemory one member at a time, in turn."""
    data = stream("local", seed=6, calls=200)
    rounds: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    last_ts: dict[tuple[str, str], float] = {}
    strategy = {q.name: q.strategy for q in SimConfig.default().queues}
    sizes: dict[str, list[int]] = collections.defaultdict(list)
    for m in split(data):
        d = dict(m)
        if d["Event"] != "AgentCalled":
            continue
        key = (d["Queue"], d["Uniqueid"])
        ts = float(d["Timestamp"])
        if key in last_ts and ts - last_ts[key] < 0.5:
            rounds[key].append(d["MemberName"])
        else:
            if rounds.get(key):
                sizes[d["Queue"]].append(len(rounds[key]))
            rounds[key] = [d["MemberName"]]
        last_ts[key] = ts
    for key, members in rounds.items():
        sizes[key[0]].append(len(members))
    assert set(sizes["support"]) == {1} and strategy["support"] == "rrmemory"
    assert max(sizes["sales"]) == 2 and strategy["sales"] == "ringall"


def test_a_big_centre(tmp_path: Path) -> None:
    """60 queues, 360 operators, callers by the hundred at once, every call as its truth says."""
    cfg = SimConfig.large(queues=60, operators_per_queue=6, seed=2, rate=RateProfile(scale=400),
                          start=1_800_000_000 + 2 * 3600.0, rtcp=False)
    c = Centre(cfg)
    data = c.run(calls=2500)
    truths = [t.to_dict() for t in c.truths]
    spans = sorted((t["started_at"], t["ended_at"]) for t in truths)
    live: list[float] = []
    peak = 0
    for start, end in spans:
        live = [e for e in live if e > start] + [end]
        peak = max(peak, len(live))
    assert peak >= 300
    assert len({q for t in truths for q in t["queues"]}) == 60
    path = tmp_path / "big.ami"
    path.write_bytes(BANNER + data)
    res = replay_files([str(path)])
    assert check_sim(truths, [j.to_json() for j in res.journeys], {o.ext: o.name for o in cfg.operators},
                     0.05) == {}


@pytest.mark.parametrize(("change", "message"), [
    ({"style": "pbx"}, "style must be one of"),
    ({"queues": ()}, "at least one queue"),
    ({"queues": (QueueSpec("q", ("999",)),)}, "member 999 is not an operator"),
    ({"queues": (QueueSpec("q", ("101",), strategy="random"),)}, "strategy must be ringall or rrmemory"),
    ({"operators": (OperatorSpec("101", "A"), OperatorSpec("101", "B"))}, "defined twice"),
    ({"rate": RateProfile(per_hour=(1,) * 23)}, "24 non-negative numbers"),
    ({"behaviour": Behaviour(transfer=1.5)}, "behaviour.transfer must be in [0, 1]"),
    ({"start": 12.0}, "start must be an epoch"),
])
def test_bad_settings_say_what_is_wrong_in_one_line(change: dict[str, object], message: str) -> None:
    with pytest.raises(SimConfigError) as err:
        SimConfig.default(**change)
    assert message in str(err.value) and "\n" not in str(err.value)

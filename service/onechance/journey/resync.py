"""Resynchronising a :class:`~onechance.journey.tracker.JourneyTracker` after the AMI stream was cut.

AMI has no replay: what happens while the daemon is disconnected is never seen.  The rules:

* when the link is lost, :func:`close_for_gap` finishes every live call as ``uncertain`` (the tracker's
  ``close_all``): a waiting caller's visit ends ``unknown``, never ``abandoned``.  What the tracker knew of
  each live channel is kept in a :class:`Gap`;
* after the next login the link fetches ``CoreShowChannels`` and ``QueueStatus`` and
  :func:`apply_snapshot` rebuilds the calls that are live now: channels are grouped into calls by
  ``Linkedid`` (and Local ``;1``/``;2`` pairs); a call that was closed at the gap and is still there is
  taken up again (the same journey, reopened, still ``uncertain``); a call never seen before is created
  ``uncertain``; callers listed by ``QueueEntry`` get a waiting visit (joined ``Wait`` seconds ago); an
  operator channel bridged with the caller gets an answered leg (talk counted from the resync);
* channels that hung up between the lists and the moment the snapshot is applied (``hung_up``) are left
  out, so a stale list never resurrects a finished call.

These functions read and change the tracker's internals (``calls``, ``channels``, ``by_name``, ``bridges``,
``open_queue_legs``, ``lost``; ended ids through ``is_ended``/``forget_ended``): they are the tracker's resync half.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from ..ami.parser import AmiMessage
from .model import Journey, JourneyUpdate, OperatorLeg, QueueVisit, UpdateKind, VisitResult
from .tracker import LOCAL_HALF, CallState, Channel, JourneyTracker, clean, extension_of

__all__ = ["Gap", "apply_snapshot", "close_for_gap"]

_CHANNEL_SUFFIX = re.compile(r"^(.*)-[0-9a-fA-F]{8}(?:;[12])?$")


@dataclass(slots=True)
class _ChanInfo:
    call_id: str
    name: str
    side: str | None
    group: str
    leg: OperatorLeg | None
    app_queue: str | None


@dataclass
class Gap:
    """The calls the tracker stopped seeing at a link loss, kept so a resync can take them up again."""

    at: float
    journeys: dict[str, Journey] = field(default_factory=dict)  # call_id -> journey closed uncertain
    channels: dict[str, _ChanInfo] = field(default_factory=dict)  # Uniqueid -> what the tracker knew
    talking: dict[int, OperatorLeg] = field(default_factory=dict)  # id -> leg the gap cut short

    def merge(self, later: Gap) -> None:
        self.journeys.update(later.journeys)
        self.channels.update(later.channels)
        self.talking.update(later.talking)


def close_for_gap(tracker: JourneyTracker, at: float, reason: str = "link_lost",
                  gap: Gap | None = None) -> tuple[list[JourneyUpdate], Gap]:
    """Finish every live call as uncertain; return the updates and the (merged) :class:`Gap`."""
    new = Gap(at)
    for call in tracker.calls.values():
        j = call.journey
        new.journeys[j.call_id] = j
        for leg in j.legs:
            if leg.started_at is not None and leg.ended_at is None:
                new.talking[id(leg)] = leg
        for uid, ch in call.channels.items():
            if ch.alive:
                new.channels[uid] = _ChanInfo(j.call_id, ch.name, ch.side, ch.group, ch.leg, ch.app_queue)
    updates = tracker.close_all(at, reason)
    if gap is not None:
        gap.merge(new)
        return updates, gap
    return updates, new


@dataclass(slots=True)
class _Snap:
    uid: str
    linkedid: str
    name: str
    app: str
    appdata: str
    bridge: str
    duration: float
    num: str
    cname: str


def _duration(text: str | None) -> float:
    try:
        h, m, s = (int(x) for x in (text or "").split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


def _snap_channels(items: Iterable[AmiMessage], hung_up: Collection[str]) -> dict[str, _Snap]:
    out = {}
    for m in items:
        h = m.headers
        uid = h.get("Uniqueid")
        if not uid or uid in hung_up:
            continue
        out[uid] = _Snap(uid, h.get("Linkedid") or uid, h.get("Channel") or "", h.get("Application") or "",
                         h.get("ApplicationData") or "", h.get("BridgeId") or "", _duration(h.get("Duration")),
                         clean(h.get("CallerIDNum")), clean(h.get("CallerIDName")))
    return out


def _followable(tracker: JourneyTracker, gap: Gap | None, c: _Snap) -> bool:
    """False for what is left of a call the tracker already finished (e.g. a consultation channel that
    outlives the caller): the tracker ignores those channels' events too."""
    if gap is not None and (c.uid in gap.channels or c.linkedid in gap.journeys):
        return True
    return not tracker.is_ended(c.uid) and (not tracker.is_ended(c.linkedid) or c.linkedid in tracker.calls)


def _groups(chans: dict[str, _Snap]) -> list[list[str]]:
    """Channels of one call: same Linkedid, or two halves of one Local channel."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    by_name = {c.name: uid for uid, c in chans.items() if c.name}
    for uid, c in chans.items():
        union(uid, "L:" + c.linkedid)
        m = LOCAL_HALF.match(c.name)
        if m:
            other = by_name.get(f"{m.group(1)};{'1' if m.group(2) == '2' else '2'}")
            if other is not None:
                union(uid, other)
    groups: dict[str, list[str]] = {}
    for uid in chans:
        groups.setdefault(find(uid), []).append(uid)
    return list(groups.values())


def _partner_name(name: str) -> str | None:
    m = LOCAL_HALF.match(name)
    if not m:
        return None
    return f"{m.group(1)};{'1' if m.group(2) == '2' else '2'}"


def _interface(tracker: JourneyTracker, name: str, locations: Iterable[str]) -> tuple[str, str]:
    """(interface, operator label) of an operator channel, from the queue members the PBX reported."""
    m = _CHANNEL_SUFFIX.match(name)
    base = m.group(1) if m else name
    for iface in [*tracker.members, *locations]:
        if iface == base or iface.startswith(base + "/"):
            return iface, tracker.members.get(iface) or extension_of(iface)
    return base, extension_of(base)


def _new_journey(tracker: JourneyTracker, call_id: str, started_at: float) -> Journey:
    s = tracker.settings
    return Journey(
        call_id=call_id,
        started_at=started_at,
        pbx=tracker.pbx,
        short_abandon_seconds=s.short_abandon_seconds,
        short_abandon_by_queue={q: r.short_abandon_seconds for q, r in s.queues.items()
                                if r.short_abandon_seconds is not None} or None,
        updated_at=started_at,
        uncertain=True,
    )


def _register(tracker: JourneyTracker, call: CallState, snap: _Snap) -> Channel:
    ch = Channel(snap.uid, snap.name, call)
    call.channels[snap.uid] = ch
    tracker.channels[snap.uid] = ch
    tracker.forget_ended(snap.uid)
    if snap.name:
        tracker.by_name[snap.name] = snap.uid
    if snap.bridge:
        tracker.bridges.setdefault(snap.bridge, set()).add(snap.uid)
        ch.bridge = snap.bridge
    if snap.app == "Queue":
        ch.app_queue = snap.appdata.split(",", 1)[0].strip()
    return ch


def _reopen(journey: Journey) -> None:
    journey.ended_at = None
    journey.closed_reason = None
    journey.hangup_by = None
    journey.uncertain = True


def apply_snapshot(
    tracker: JourneyTracker,
    *,
    channels: Iterable[AmiMessage],
    entries: Iterable[AmiMessage] = (),
    members: Iterable[AmiMessage] = (),
    at: float,
    gap: Gap | None = None,
    hung_up: Collection[str] = (),
) -> list[JourneyUpdate]:
    """Make the tracker follow the calls the PBX lists as live at ``at``; return the updates (``STARTED``
    with ``{"resync": True, "revived": bool}`` for each call rebuilt or taken up again)."""
    locations: list[str] = []
    for m in members:
        tracker.feed(m, at)  # learns member names (QueueMember: Name, Location)
        loc = m.headers.get("Location")
        if loc:
            locations.append(loc)
    chans = {uid: c for uid, c in _snap_channels(channels, hung_up).items() if _followable(tracker, gap, c)}
    waiting: dict[str, tuple[str, float, AmiMessage]] = {}
    for m in entries:
        h = m.headers
        uid = h.get("Uniqueid") or ""
        if uid in chans:
            try:
                wait = float(h.get("Wait") or 0)
            except ValueError:
                wait = 0.0
            waiting[uid] = (h.get("Queue") or "", wait, m)
    updates: list[JourneyUpdate] = []
    revived_ids: set[str] = set()
    for group in _groups(chans):
        known = [uid for uid in group if uid in tracker.channels]
        revived = False
        if known:
            call = tracker.channels[known[0]].call
        else:
            old = None
            if gap is not None:
                for uid in group:
                    info = gap.channels.get(uid)
                    if info is not None and info.call_id not in revived_ids and info.call_id not in tracker.calls:
                        old = gap.journeys.get(info.call_id)
                        if old is not None:
                            break
            longest = max(group, key=lambda u: chans[u].duration)
            if old is not None:
                journey = old
                _reopen(journey)
                revived = True
                revived_ids.add(journey.call_id)
                for lost in tracker.lost.values():
                    if journey in lost:
                        lost.remove(journey)
            else:
                linked = [chans[u].linkedid for u in group]
                call_id = max(set(linked), key=linked.count)
                existing = tracker.calls.get(call_id)
                if existing is not None:
                    known = [next(iter(existing.channels))] if existing.channels else []
                    call = existing
                    journey = existing.journey
                else:
                    journey = _new_journey(tracker, call_id, at - chans[longest].duration)
            if not known:
                originator = journey.call_id if journey.call_id in group else next(
                    (u for u in group if u in waiting), longest)
                call = CallState(journey, originator)
                call.started_emitted = True
                tracker.calls[journey.call_id] = call
                tracker.forget_ended(journey.call_id)
        fresh = [uid for uid in group if uid not in tracker.channels]
        if not fresh and not any(uid in waiting for uid in group):
            continue
        journey = call.journey
        prev = {uid: gap.channels[uid] for uid in fresh if gap is not None and uid in gap.channels
                and gap.channels[uid].call_id == journey.call_id}
        added = [_register(tracker, call, chans[uid]) for uid in fresh]
        changed = bool(added)
        _assign_sides(tracker, call, added, chans, waiting, prev)
        changed |= _visits(call, group, waiting, set(fresh), at)
        changed |= _legs(tracker, call, added, chans, prev, gap, locations, at)
        if not journey.caller:
            orig = chans.get(call.originator)
            for source in [w[2] for u, w in waiting.items() if u in group]:
                journey.caller = clean(source.headers.get("CallerIDNum")) or journey.caller
                journey.caller_name = clean(source.headers.get("CallerIDName")) or journey.caller_name
            if not journey.caller and orig is not None:
                journey.caller, journey.caller_name = orig.num, orig.cname or journey.caller_name
        if changed or revived:
            journey.uncertain = True
            journey.updated_at = max(journey.updated_at, at)
            updates.append(JourneyUpdate(UpdateKind.STARTED, journey, at, {"resync": True, "revived": revived}))
    return updates


def _assign_sides(tracker: JourneyTracker, call: CallState, added: list[Channel], chans: dict[str, _Snap],
                  waiting: dict[str, tuple[str, float, AmiMessage]], prev: dict[str, _ChanInfo]) -> None:
    caller_bridges = set()
    for ch in added:
        info = prev.get(ch.uid)
        if info is not None:
            ch.side, ch.group, ch.leg = info.side, info.group, info.leg
            ch.app_queue = ch.app_queue or info.app_queue
        elif ch.uid == call.originator or ch.uid in waiting:
            ch.side = "caller"
        if ch.side == "caller" and ch.bridge:
            caller_bridges.add(ch.bridge)
    for ch in added:
        if ch.side is not None:
            continue
        snap = chans[ch.uid]
        if snap.app == "AppQueue" or (snap.bridge and snap.bridge in caller_bridges):
            ch.side = "operator"
    # Local halves share a side (and an operator's leg)
    for ch in added:
        other_name = _partner_name(ch.name)
        other_uid = tracker.by_name.get(other_name) if other_name else None
        other = call.channels.get(other_uid) if other_uid else None
        if other is None:
            continue
        ch.partner, other.partner = other.uid, ch.uid
        if ch.side is None and other.side is not None:
            ch.side, ch.group, ch.leg = other.side, other.group, other.leg
        elif other.side is None and ch.side is not None:
            other.side, other.group, other.leg = ch.side, ch.group, ch.leg


def _visits(call: CallState, group: list[str], waiting: dict[str, tuple[str, float, AmiMessage]],
            fresh: set[str], at: float) -> bool:
    """A waiting visit for each caller ``QueueEntry`` lists, unless the tracker already has it."""
    changed = False
    j = call.journey
    for uid in group:
        if uid not in waiting:
            continue
        queue, wait, _msg = waiting[uid]
        if uid not in fresh and any(v.channel == uid and v.queue == queue for v in j.visits):
            continue  # followed all along: the tracker knows better (it may be ahead of the list)
        ch = call.channels[uid]
        ch.app_queue = queue
        visit = next((v for v in reversed(j.visits) if v.channel == uid and v.queue == queue), None)
        if visit is not None and visit.left_at is None and visit.result in (VisitResult.WAITING,
                                                                             VisitResult.UNKNOWN):
            if visit.result != VisitResult.WAITING:
                visit.result = VisitResult.WAITING
                changed = True
            continue
        consult = ch.side == "consult"
        j.visits.append(QueueVisit(queue=queue, channel=uid, joined_at=at - wait, consultation=consult,
                                   group=ch.group if consult else "caller"))
        changed = True
    return changed


def _legs(tracker: JourneyTracker, call: CallState, added: list[Channel], chans: dict[str, _Snap],
          prev: dict[str, _ChanInfo], gap: Gap | None, locations: list[str], at: float) -> bool:
    """Operator channels bridged with the caller: an answered leg (reopened when the gap cut it short)."""
    changed = False
    j = call.journey
    caller_bridges = {ch.bridge for ch in call.channels.values() if ch.side == "caller" and ch.bridge}
    for ch in added:
        if ch.side != "operator" or not ch.bridge or ch.bridge not in caller_bridges:
            continue
        leg = ch.leg
        if leg is not None and leg in j.legs:
            if gap is not None and gap.talking.get(id(leg)) is leg:
                leg.ended_at = None  # the talk went on across the gap
                leg.ended_by = None
                changed = True
        elif leg is None:
            snap = chans[ch.uid]
            iface, label = _interface(tracker, snap.name, locations)
            visits = j.caller_visits()
            queue = visits[-1].queue if visits and snap.app == "AppQueue" else None
            leg = OperatorLeg(operator=label, kind="queue" if snap.app == "AppQueue" else "dial",
                              channel=ch.uid, queue=queue, interface=iface, group="caller",
                              rang_at=max(j.started_at, at - snap.duration), started_at=at)
            j.legs.append(leg)
            ch.leg = leg
            if ch.partner and ch.partner in call.channels:
                call.channels[ch.partner].leg = leg
            if visits and visits[-1].result in (VisitResult.WAITING, VisitResult.UNKNOWN) and queue:
                visits[-1].operator = visits[-1].operator or label
            changed = True
        else:
            continue
        if leg.kind == "queue" and leg.queue and leg.interface and leg.ended_at is None:
            tracker.open_queue_legs[(leg.queue, leg.interface)] = leg
    return changed

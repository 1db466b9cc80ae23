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

Everything goes through the tracker's :class:`~onechance.journey.index.ChannelIndex` API and its ``report``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from ..ami.parser import AmiMessage
from .index import CallState, Channel, local_partner_name
from .model import CALLER_GROUP, Journey, LegKind, OperatorLeg, QueueVisit, Side, UpdateKind, VisitResult
from .tracker import JourneyTracker, clean, extension_of
from .updates import Update

__all__ = ["Gap", "TakeUp", "apply_snapshot", "close_for_gap"]

_CHANNEL_SUFFIX = re.compile(r"^(.*)-[0-9a-fA-F]{8}(?:;[12])?$")


@dataclass(slots=True)
class _ChanInfo:
    call_id: str
    name: str
    side: Side | None
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
        """Another link loss before a resync: what it knew of a call (taken up again meanwhile) replaces what
        this one knew (channels that hung up since are no longer the call's, legs that ended no longer talk)."""
        again = later.journeys
        if again:
            for uid in [u for u, info in self.channels.items() if info.call_id in again]:
                del self.channels[uid]
            for j in again.values():
                for leg in j.legs:
                    self.talking.pop(id(leg), None)
        self.journeys.update(again)
        self.channels.update(later.channels)
        self.talking.update(later.talking)


def close_for_gap(tracker: JourneyTracker, at: float, reason: str = "link_lost",
                  gap: Gap | None = None) -> tuple[list[Update], Gap]:
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


def _closed_by_gap(j: Journey) -> bool:
    """Still as a link loss closed it: not taken up since (live), nor taken up and then really ended (what is
    left of it, e.g. consultation channels outliving the caller, never brings it back)."""
    return j.ended_at is not None and j.closed_reason is not None


def _reopen(tracker: JourneyTracker, old: Journey, originator: str) -> CallState:
    """A call closed at the gap is live again (the same journey, still ``uncertain``)."""
    old.ended_at = None
    old.closed_reason = None
    old.hangup_by = None
    old.uncertain = True
    tracker.unwatch(old.call_id, old.caller)
    call = tracker.index.new_call(old, originator)
    call.started_emitted = True
    tracker.track_waiting(old)
    return call


class TakeUp:
    """Between the reconnection and the resync, an event about a call the gap closed shows that it goes on:
    the call is taken up again at once (reported ``STARTED`` with ``revived``), with every channel the tracker
    knew it had, so the events that follow (an answer, a transfer, the hang-up) are followed as without the
    gap.  A waiting visit the gap made ``unknown`` stays so (its end was not seen); a talk the gap cut short goes
    on.  Channels that hung up during the gap are not known yet: :meth:`settle`, at the resync, drops those the
    PBX no longer lists (and ends the call, ``uncertain``, when none of it is left)."""

    def __init__(self, tracker: JourneyTracker, gap: Gap, at: float, reason: str = "link_lost") -> None:
        self.tracker = tracker
        self.gap = gap
        self.at = at
        self.reason = reason  # of the latest loss (``link_lost``, ``pbx_restart``): what a call not seen end says
        self.unconfirmed: dict[str, list[str]] = {}  # call id -> channels taken up with it
        self.ending: dict[str, float] = {}  # call id -> when its caller hung up, other channels still up

    def call(self, call_id: str) -> CallState | None:
        index = self.tracker.index
        live = index.calls.get(call_id)
        if live is not None:
            return live
        old = self.gap.journeys.get(call_id)
        if old is None or not _closed_by_gap(old):
            return None
        index.closed = None  # (no lookup of the gap from inside the take-up)
        try:
            call = _reopen(self.tracker, old, call_id)
            uids = [uid for uid, info in self.gap.channels.items() if info.call_id == call_id]
            for uid in uids:
                self._channel(call, uid, self.gap.channels[uid])
            self.unconfirmed[call_id] = uids
            self.tracker.report(UpdateKind.STARTED, call, self.at, resync=True, revived=True)
        finally:
            index.closed = self
        return call

    def _channel(self, call: CallState, uid: str, info: _ChanInfo) -> None:
        index = self.tracker.index
        ch = index.add_channel(call, uid, info.name)
        index.set_side(ch, info.side, info.group, info.leg, follow_partner=False)
        ch.app_queue = info.app_queue
        leg = info.leg
        if leg is not None and self.gap.talking.get(id(leg)) is leg and leg.ended_at is not None:
            leg.ended_at = None  # the talk went on across the gap (its end is seen from here)
            leg.ended_by = None
            self.tracker.track_queue_leg(leg)

    def channel(self, uid: str) -> Channel | None:
        info = self.gap.channels.get(uid)
        if info is None or info.call_id in self.unconfirmed:
            return None  # not of a call closed at the gap, or of one taken up already (and gone since)
        call = self.call(info.call_id)
        return call.channels.get(uid) if call is not None else None

    def keeps(self, call: CallState, ts: float) -> bool:
        """A call taken up here whose caller hung up while some of its channels are still up is not over yet:
        they may be a transfer the gap hid, which the resync folds into the caller's call.  Ended after the
        resync (:meth:`end_kept`), as of ``ts``, if it is still on its own."""
        call_id = call.journey.call_id
        if call_id in self.unconfirmed and any(ch.alive for ch in call.channels.values()):
            self.ending.setdefault(call_id, ts)
            return True
        return False

    def end_kept(self) -> list[Update]:
        """After the resync: the calls :meth:`keeps` kept that are still on their own end, their caller gone."""
        index = self.tracker.index
        for call_id, ts in self.ending.items():
            call = index.calls.get(call_id)
            if call is not None and not call.caller_present():
                self.tracker.close_call(call, max(ts, call.journey.updated_at), None)
        self.ending.clear()
        return self.tracker.take_updates()

    def settle(self, listed: Collection[str], at: float) -> list[Update]:
        """At the resync: the channels taken up that the PBX no longer lists hung up during the gap; the
        updates (a call ended when nothing of it is left)."""
        index = self.tracker.index
        for call_id, uids in self.unconfirmed.items():
            call = index.calls.get(call_id)
            if call is None:
                continue
            for uid in uids:
                ch = call.channels.get(uid)
                if ch is None or not ch.alive or uid in listed:
                    continue
                ch.alive = False
                if ch.leg is not None and ch.leg.started_at is not None and ch.leg.ended_at is None:
                    ch.leg.ended_at = self.gap.at  # the last moment it was known to talk
            if not any(ch.alive for ch in call.channels.values()):
                self.tracker.close_call(call, at, self.reason)
        return self.tracker.take_updates()


@dataclass(slots=True)
class _Snap:
    """One channel as ``CoreShowChannels`` listed it."""

    uid: str
    linkedid: str
    name: str
    app: str
    appdata: str
    bridge: str
    duration: float
    num: str
    cname: str


@dataclass(slots=True)
class _Waiting:
    """A caller ``QueueStatus`` listed as waiting."""

    queue: str
    wait: float
    num: str
    cname: str


def _duration(text: str | None) -> float:
    try:
        h, m, s = (int(x) for x in (text or "").split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


def _groups(chans: dict[str, _Snap], gap: Gap | None = None) -> list[list[str]]:
    """Channels of one call: same Linkedid, two halves of one Local channel, channels the tracker had in one
    call before the gap, or the two channels of a two-party bridge that handed a caller over
    (:func:`_handed_over`).  A phone's attended transfer joins a consultation with its own Linkedid to the
    caller's call: its channels keep their Linkedid, and when it happened during the gap the bridge is all
    that tells (the tracker makes such calls one at the transfer, :meth:`JourneyTracker._merge_consultation`)."""
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
        other_name = local_partner_name(c.name)
        other = by_name.get(other_name) if other_name else None
        if other is not None:
            union(uid, other)
        info = gap.channels.get(uid) if gap is not None else None
        if info is not None:
            union(uid, "C:" + info.call_id)
    bridged: dict[str, list[str]] = {}
    for uid, c in chans.items():
        if c.bridge:
            bridged.setdefault(c.bridge, []).append(uid)
    for pair in bridged.values():
        if len(pair) == 2 and _handed_over(pair[0], pair[1], gap):
            union(pair[0], pair[1])
    groups: dict[str, list[str]] = {}
    for uid in chans:
        groups.setdefault(find(uid), []).append(uid)
    return list(groups.values())


def _handed_over(a: str, b: str, gap: Gap | None) -> bool:
    """Two channels alone in a bridge that the gap knew in two different calls, not both as their call's
    caller: the caller handed over to another call's operator (a transfer or a pickup the gap hid).  Two
    callers (a conference room, a parking lot) are two calls still; channels the gap did not know are left to
    their Linkedid."""
    ia = gap.channels.get(a) if gap is not None else None
    ib = gap.channels.get(b) if gap is not None else None
    if ia is None or ib is None or ia.call_id == ib.call_id:
        return False
    return not (ia.side == Side.CALLER and ib.side == Side.CALLER)


class _Resync:
    """One snapshot being applied, step by step."""

    def __init__(self, tracker: JourneyTracker, gap: Gap | None, at: float) -> None:
        self.tracker = tracker
        self.index = tracker.index
        self.gap = gap
        self.at = at
        self.locations: list[str] = []
        self.revived: set[str] = set()
        self.folded: dict[str, str] = {}  # call id closed at the gap -> the call it is part of now
        self.early: list[Update] = []  # updates the tracker gave while the members were learnt

    # ---- step 1: what the PBX listed -------------------------------------------------------------------
    def learn_members(self, members: Iterable[AmiMessage]) -> None:
        for m in members:
            # learns member names (QueueMember: Name, Location); what it reports is kept for the caller
            self.early += self.tracker.feed(m, self.at)
            loc = m.headers.get("Location")
            if loc:
                self.locations.append(loc)

    def live_channels(self, items: Iterable[AmiMessage], hung_up: Collection[str]) -> dict[str, _Snap]:
        """The listed channels still worth following (not hung up meanwhile, not left over from a call
        the tracker already finished, e.g. a consultation channel outliving the caller)."""
        out = {}
        for m in items:
            h = m.headers
            uid = h.get("Uniqueid")
            if not uid or uid in hung_up:
                continue
            snap = _Snap(uid, h.get("Linkedid") or uid, h.get("Channel") or "", h.get("Application") or "",
                         h.get("ApplicationData") or "", h.get("BridgeId") or "", _duration(h.get("Duration")),
                         clean(h.get("CallerIDNum")), clean(h.get("CallerIDName")))
            if self._followable(snap):
                out[uid] = snap
        return out

    def _followable(self, c: _Snap) -> bool:
        gap = self.gap
        if gap is not None:
            info = gap.channels.get(c.uid)
            old = gap.journeys.get(info.call_id if info is not None else c.linkedid)
            if old is not None and _closed_by_gap(old):
                return True
        index = self.index
        return not index.is_ended(c.uid) and (not index.is_ended(c.linkedid) or c.linkedid in index.calls)

    @staticmethod
    def waiting_callers(entries: Iterable[AmiMessage], chans: dict[str, _Snap]) -> dict[str, _Waiting]:
        waiting = {}
        for m in entries:
            h = m.headers
            uid = h.get("Uniqueid") or ""
            if uid not in chans:
                continue
            try:
                wait = float(h.get("Wait") or 0)
            except ValueError:
                wait = 0.0
            waiting[uid] = _Waiting(h.get("Queue") or "", wait, clean(h.get("CallerIDNum")),
                                    clean(h.get("CallerIDName")))
        return waiting

    # ---- step 2: one call per group of channels ----------------------------------------------------------
    def take_up(self, group: list[str], chans: dict[str, _Snap], waiting: dict[str, _Waiting]) -> None:
        call, revived = self._call_for(group, chans, waiting)
        fresh = [uid for uid in group if uid not in self.index.channels]
        # channels taken up before the lists (TakeUp) lost their bridge at the gap: the lists give it back
        rebridged = [ch for uid in group if uid not in fresh and (ch := self.index.channels[uid]).bridge is None
                     and chans[uid].bridge]
        for ch in rebridged:
            self.index.enter_bridge(ch, chans[ch.uid].bridge)
        if not fresh and not rebridged and not any(uid in waiting for uid in group):
            return
        journey = call.journey
        prev = {uid: info for uid in fresh if (info := self._gap_info(uid)) is not None
                and (info.call_id == journey.call_id
                     # of a call folded into this one: what served it goes on serving (its caller does not)
                     or (self.folded.get(info.call_id) == journey.call_id and info.side != Side.CALLER))}
        added = [self._register(call, chans[uid]) for uid in fresh]
        self._assign_sides(call, added, chans, waiting, prev)
        changed = bool(added)
        changed |= self._visits(call, group, waiting, set(fresh))
        changed |= self._legs(call, added + rebridged, chans)
        self._identify_caller(call, group, chans, waiting)
        if changed or revived:
            journey.uncertain = True
            self.tracker.report(UpdateKind.STARTED, call, self.at, resync=True, revived=revived)

    def _gap_info(self, uid: str) -> _ChanInfo | None:
        return self.gap.channels.get(uid) if self.gap is not None else None

    def _call_for(self, group: list[str], chans: dict[str, _Snap],
                  waiting: dict[str, _Waiting]) -> tuple[CallState, bool]:
        """The live call these channels belong to: already followed, taken up again from the gap, or new."""
        index = self.index
        olds = self._closed_at_gap(group)
        lives = list({id(ch.call): ch.call for uid in group if (ch := index.get(uid)) is not None}.values())
        if lives or olds:
            survivor = self._survivor([c.journey for c in lives] + olds, group)
            revived = survivor in olds
            if revived:
                olds.remove(survivor)
                self.revived.add(survivor.call_id)
                call = _reopen(self.tracker, survivor, self._originator(survivor.call_id, group, chans, waiting))
            else:
                call = next(c for c in lives if c.journey is survivor)
            for other in lives:
                if other is not call:
                    self._fold_live(call, other)
            self._fold(call, olds)
            return call, revived
        linked = [chans[u].linkedid for u in group]
        # the most channels' Linkedid; of a bridge that joined two calls, the older call's (the caller's)
        call_id = chans[max(group, key=lambda u: (linked.count(chans[u].linkedid), chans[u].duration))].linkedid
        existing = index.calls.get(call_id)
        if existing is not None:
            return existing, False
        longest = max(group, key=lambda u: chans[u].duration)
        journey = self.tracker.new_journey(call_id, self.at - chans[longest].duration, uncertain=True)
        call = index.new_call(journey, self._originator(call_id, group, chans, waiting))
        call.started_emitted = True
        return call, False

    def _closed_at_gap(self, group: list[str]) -> list[Journey]:
        """The calls closed at the gap that these channels belonged to (not taken up again yet)."""
        if self.gap is None:
            return []
        found: dict[str, Journey] = {}
        for uid in group:
            info = self.gap.channels.get(uid)
            if info is not None and info.call_id not in self.revived and info.call_id not in self.index.calls:
                old = self.gap.journeys.get(info.call_id)
                if old is not None and _closed_by_gap(old):
                    found.setdefault(old.call_id, old)
        return list(found.values())

    def _survivor(self, journeys: list[Journey], group: list[str]) -> Journey:
        """Of several calls whose channels are now one call (live, or closed at the gap), the one that goes on:
        the one whose caller is still there (the transferred or picked-up caller's), else the oldest."""
        with_caller = set()
        for uid in group:
            ch = self.index.channels.get(uid)
            info = self.gap.channels.get(uid) if self.gap is not None else None
            if ch is not None and ch.side == Side.CALLER:
                with_caller.add(ch.call.journey.call_id)
            elif ch is None and info is not None and info.side == Side.CALLER:
                with_caller.add(info.call_id)
        return min(journeys, key=lambda j: (j.call_id not in with_caller, j.started_at))

    def _fold_live(self, call: CallState, other: CallState) -> None:
        """A live call that became part of ``call`` while unseen (a transfer the gap hid, both calls taken up
        since): its channels move over, the caller side of it as a consultation's (the phone that handed the
        caller over), and it is reported ``MERGED`` into ``call``."""
        index = self.index
        for ch in list(other.channels.values()):
            index.move_channel(ch, call)
            if ch.side in (Side.CALLER, None):
                index.set_side(ch, Side.CONSULT, other.journey.call_id, follow_partner=False)
        index.drop(other)
        self._fold(call, [other.journey])

    def _fold(self, call: CallState, others: list[Journey]) -> None:
        """Calls closed at the gap that became part of ``call`` meanwhile (a transfer or a pickup the gap hid):
        their visits and operators move over, and each is reported ``MERGED`` into it, never as a call of its
        own."""
        if not others:
            return
        j = call.journey
        for other in others:
            self.revived.add(other.call_id)
            j.visits.extend(other.visits)
            j.legs.extend(other.legs)
            j.started_at = min(j.started_at, other.started_at)
            self.tracker.unwatch(other.call_id, other.caller)
            self.folded[other.call_id] = j.call_id
            self.tracker.report_gone(UpdateKind.MERGED, other, self.at, into=j.call_id)
        j.visits.sort(key=lambda v: v.joined_at)
        j.legs.sort(key=lambda leg: leg.caller_talk_start or leg.rang_at)
        self.tracker.track_waiting(j)

    @staticmethod
    def _originator(call_id: str, group: list[str], chans: dict[str, _Snap], waiting: dict[str, _Waiting]) -> str:
        if call_id in group:
            return call_id
        return next((u for u in group if u in waiting), max(group, key=lambda u: chans[u].duration))

    def _register(self, call: CallState, snap: _Snap) -> Channel:
        ch = self.index.add_channel(call, snap.uid, snap.name)
        if snap.bridge:
            self.index.enter_bridge(ch, snap.bridge)
        if snap.app == "Queue":
            ch.app_queue = snap.appdata.split(",", 1)[0].strip()
        return ch

    # ---- step 3: sides, visits, legs, caller -------------------------------------------------------------
    def _assign_sides(self, call: CallState, added: list[Channel], chans: dict[str, _Snap],
                      waiting: dict[str, _Waiting], prev: dict[str, _ChanInfo]) -> None:
        index = self.index
        caller_bridges = set()
        for ch in added:
            info = prev.get(ch.uid)
            if info is not None:
                index.set_side(ch, info.side, info.group, info.leg, follow_partner=False)
                ch.leg = info.leg
                ch.app_queue = ch.app_queue or info.app_queue
            elif ch.uid == call.originator or ch.uid in waiting:
                index.set_side(ch, Side.CALLER, follow_partner=False)
            if ch.side == Side.CALLER and ch.bridge:
                caller_bridges.add(ch.bridge)
        for ch in added:
            if ch.side is not None:
                continue
            snap = chans[ch.uid]
            if snap.app == "AppQueue" or (snap.bridge and snap.bridge in caller_bridges):
                index.set_side(ch, Side.OPERATOR, follow_partner=False)
        # Local halves share a side (and an operator's leg)
        for ch in added:
            other_name = local_partner_name(ch.name)
            other = index.by_name(other_name) if other_name else None
            if other is not None and other.call is call:
                index.pair(ch, other)

    def _visits(self, call: CallState, group: list[str], waiting: dict[str, _Waiting], fresh: set[str]) -> bool:
        """A waiting visit for each caller ``QueueEntry`` lists, unless the tracker already has it."""
        changed = False
        j = call.journey
        for uid in group:
            entry = waiting.get(uid)
            if entry is None:
                continue
            if uid not in fresh and any(v.channel == uid and v.queue == entry.queue for v in j.visits):
                continue  # followed all along: the tracker knows better (it may be ahead of the list)
            ch = call.channels[uid]
            ch.app_queue = entry.queue
            visit = next((v for v in reversed(j.visits) if v.channel == uid and v.queue == entry.queue), None)
            if visit is not None and visit.left_at is None and visit.result in (VisitResult.WAITING,
                                                                                 VisitResult.UNKNOWN):
                if visit.result != VisitResult.WAITING:
                    visit.result = VisitResult.WAITING
                    self.tracker.track_waiting(j)
                    changed = True
                continue
            consult = ch.side == Side.CONSULT
            j.visits.append(QueueVisit(queue=entry.queue, channel=uid, joined_at=self.at - entry.wait,
                                       consultation=consult, group=ch.group if consult else CALLER_GROUP))
            self.tracker.track_waiting(j)
            changed = True
        return changed

    def _legs(self, call: CallState, added: list[Channel], chans: dict[str, _Snap]) -> bool:
        """Operator channels bridged with the caller: an answered leg (reopened when the gap cut it short)."""
        changed = False
        j = call.journey
        caller_bridges = {ch.bridge for ch in call.channels.values() if ch.side == Side.CALLER and ch.bridge}
        for ch in added:
            if ch.side != Side.OPERATOR or not ch.bridge or ch.bridge not in caller_bridges:
                continue
            leg = ch.leg
            if leg is not None and leg in j.legs:
                if self.gap is not None and self.gap.talking.get(id(leg)) is leg:
                    leg.ended_at = None  # the talk went on across the gap
                    leg.ended_by = None
                    changed = True
            elif leg is None:
                leg = self._new_leg(j, ch, chans[ch.uid])
                changed = True
            else:
                continue
            self.tracker.track_queue_leg(leg)
        return changed

    def _new_leg(self, j: Journey, ch: Channel, snap: _Snap) -> OperatorLeg:
        iface, label = self._interface(snap.name)
        visits = j.caller_visits()
        from_queue = snap.app == "AppQueue"
        queue = visits[-1].queue if visits and from_queue else None
        leg = OperatorLeg(operator=label, kind=LegKind.QUEUE if from_queue else LegKind.DIAL, channel=ch.uid,
                          queue=queue, interface=iface, group=CALLER_GROUP,
                          rang_at=max(j.started_at, self.at - snap.duration), started_at=self.at)
        j.legs.append(leg)
        self.index.set_side(ch, Side.OPERATOR, leg=leg)
        if visits and visits[-1].result in (VisitResult.WAITING, VisitResult.UNKNOWN) and queue:
            visits[-1].operator = visits[-1].operator or label
        return leg

    def _interface(self, name: str) -> tuple[str, str]:
        """(interface, operator label) of an operator channel, from the queue members the PBX reported."""
        m = _CHANNEL_SUFFIX.match(name)
        base = m.group(1) if m else name
        members = self.tracker.members
        for iface in [*members, *self.locations]:
            if iface == base or iface.startswith(base + "/"):
                return iface, members.get(iface) or extension_of(iface)
        return base, extension_of(base)

    @staticmethod
    def _identify_caller(call: CallState, group: list[str], chans: dict[str, _Snap],
                         waiting: dict[str, _Waiting]) -> None:
        j = call.journey
        if j.caller:
            return
        for uid in group:
            entry = waiting.get(uid)
            if entry is not None:
                j.caller = entry.num or j.caller
                j.caller_name = entry.cname or j.caller_name
        orig = chans.get(call.originator)
        if not j.caller and orig is not None:
            j.caller, j.caller_name = orig.num, orig.cname or j.caller_name


def apply_snapshot(
    tracker: JourneyTracker,
    *,
    channels: Iterable[AmiMessage],
    entries: Iterable[AmiMessage] = (),
    members: Iterable[AmiMessage] = (),
    at: float,
    gap: Gap | None = None,
    hung_up: Collection[str] = (),
) -> list[Update]:
    """Make the tracker follow the calls the PBX lists as live at ``at``; return the updates (``STARTED``
    with ``{"resync": True, "revived": bool}`` for each call rebuilt or taken up again)."""
    rs = _Resync(tracker, gap, at)
    rs.learn_members(members)
    chans = rs.live_channels(channels, hung_up)
    waiting = rs.waiting_callers(entries, chans)
    for group in _groups(chans, gap):
        rs.take_up(group, chans, waiting)
    return rs.early + tracker.take_updates()

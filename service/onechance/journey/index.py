"""The channel/call index: which Asterisk channel belongs to which live call, and on whose side.

Used by the tracker's event handlers and by the resync (``resync.py``) through one small API: create a call,
add a channel (Local ``;1``/``;2`` halves are paired by name), pair halves, set a channel's side, follow
bridges and renames, finish a call (its ids are remembered so late events never revive it), reopen a call a
resync found alive, and forget an ended id.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol

from .model import Journey, OperatorLeg, Side

__all__ = ["LOCAL_HALF", "CallState", "Channel", "ChannelIndex", "local_partner_name"]

LOCAL_HALF = re.compile(r"^(Local/.+);([12])$")


def local_partner_name(name: str) -> str | None:
    """``Local/101@agents-0000002a;1`` -> ``...;2`` (None for a channel that is not a Local half)."""
    m = LOCAL_HALF.match(name)
    if not m:
        return None
    return f"{m.group(1)};{'1' if m.group(2) == '2' else '2'}"


class Channel:
    """What the tracker knows of one Asterisk channel."""

    __slots__ = ("alive", "app_queue", "bridge", "call", "context", "dtmf", "group", "hangup_requested", "leg",
                 "name", "partner", "side", "uid")

    def __init__(self, uid: str, name: str, call: CallState) -> None:
        self.uid = uid
        self.name = name
        self.call = call
        self.partner: str | None = None  # the other half of a Local pair
        self.side: Side | None = None
        self.group: str = ""  # consultation group id (for Side.CONSULT)
        self.leg: OperatorLeg | None = None  # operator leg this channel carries
        self.alive = True
        self.hangup_requested = False
        self.bridge: str | None = None
        self.app_queue: str | None = None  # queue named by the last Queue() the channel ran
        self.context: str | None = None  # dialplan context when it joined a queue (to see a key exit)
        self.dtmf: str | None = None  # last key received while waiting in a queue


class CallState:
    """A live call: its journey plus the channels behind it."""

    __slots__ = ("channels", "journey", "originator", "started_emitted")

    def __init__(self, journey: Journey, originator: str) -> None:
        self.journey = journey
        self.originator = originator
        self.channels: dict[str, Channel] = {}
        self.started_emitted = False

    def caller_present(self) -> bool:
        """A caller channel is still up and has not asked to hang up."""
        return any(ch.side == Side.CALLER and ch.alive and not ch.hangup_requested for ch in self.channels.values())


class ClosedAtGap(Protocol):
    """What a link gap closed, for the events that arrive after the reconnection and before the resync
    (:class:`~onechance.journey.resync.TakeUp`): a channel or call seen again is taken up at once."""

    def channel(self, uid: str) -> Channel | None: ...

    def call(self, call_id: str) -> CallState | None: ...

    def keeps(self, call: CallState, ts: float) -> bool: ...


class ChannelIndex:
    """Live calls by call id, their channels by Uniqueid and name, bridges, and the ids of ended calls."""

    def __init__(self, remember_ended: int = 20000) -> None:
        self.calls: dict[str, CallState] = {}  # call_id -> live call
        self.channels: dict[str, Channel] = {}  # Uniqueid -> channel of a live call
        self._by_name: dict[str, str] = {}  # channel name -> Uniqueid (live channels)
        self._bridges: dict[str, set[str]] = {}  # bridge id -> Uniqueids in it
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_ended
        self.closed: ClosedAtGap | None = None  # between a link loss and the resync

    # ---- lookups -------------------------------------------------------------------------------------------
    def get(self, uid: str | None) -> Channel | None:
        if not uid:
            return None
        ch = self.channels.get(uid)
        if ch is None and self.closed is not None:
            return self.closed.channel(uid)
        return ch

    def by_name(self, name: str) -> Channel | None:
        uid = self._by_name.get(name)
        return self.channels.get(uid) if uid is not None else None

    def partner(self, ch: Channel) -> Channel | None:
        return self.channels.get(ch.partner) if ch.partner else None

    def call_for(self, uid: str | None, linkedid: str | None) -> CallState | None:
        """The live call of a channel, or of a linkedid (a call id, or a channel's Uniqueid)."""
        if uid:
            ch = self.channels.get(uid)
            if ch is not None:
                return ch.call
        if linkedid:
            call = self.calls.get(linkedid)
            if call is not None:
                return call
            ch = self.channels.get(linkedid)
            if ch is not None:
                return ch.call
        return None

    def bridged_with(self, ch: Channel) -> Iterator[Channel]:
        """The other live channels in ``ch``'s bridge."""
        if ch.bridge is None:
            return
        for uid in self._bridges.get(ch.bridge, ()):
            other = self.channels.get(uid)
            if other is not None and other is not ch:
                yield other

    def is_ended(self, uid: str) -> bool:
        """True for a channel or call id of a call already finished (late events for it are ignored)."""
        return uid in self._ended

    # ---- calls and channels --------------------------------------------------------------------------------
    def new_call(self, journey: Journey, originator: str) -> CallState:
        call = CallState(journey, originator)
        self.calls[journey.call_id] = call
        self._ended.pop(journey.call_id, None)
        return call

    def add_channel(self, call: CallState, uid: str, name: str) -> Channel:
        """Add a channel to a call; a Local half whose other half is known is paired with it."""
        ch = Channel(uid, name, call)
        call.channels[uid] = ch
        self.channels[uid] = ch
        self._ended.pop(uid, None)
        if name:
            self._by_name[name] = uid
            other_name = local_partner_name(name)
            if other_name is not None:
                other = self._by_name.get(other_name)
                if other is not None and other in self.channels:
                    self.pair(ch, self.channels[other])
        return ch

    def pair(self, a: Channel, b: Channel) -> None:
        """Two halves of one Local channel: they share a side (and an operator's leg)."""
        a.partner, b.partner = b.uid, a.uid
        if a.side is None and b.side is not None:
            self.set_side(a, b.side, b.group, b.leg)
        elif b.side is None and a.side is not None:
            self.set_side(b, a.side, a.group, a.leg)

    def set_side(self, ch: Channel, side: Side | None, group: str = "", leg: OperatorLeg | None = None,
                 follow_partner: bool = True) -> None:
        ch.side = side
        ch.group = group
        ch.leg = leg if side == Side.OPERATOR else None
        if follow_partner and ch.partner is not None:
            p = self.channels.get(ch.partner)
            if p is not None and (p.side != side or p.group != group or p.leg is not ch.leg):
                self.set_side(p, side, group, leg, follow_partner=False)

    def rename(self, ch: Channel, new: str) -> None:
        if self._by_name.get(ch.name) == ch.uid:
            del self._by_name[ch.name]
        ch.name = new
        self._by_name[new] = ch.uid

    def enter_bridge(self, ch: Channel, bridge: str) -> list[Channel]:
        """Put a channel in a bridge; returns the live channels already there."""
        members = self._bridges.setdefault(bridge, set())
        ch.bridge = bridge
        others = [self.channels[u] for u in members if u in self.channels and u != ch.uid]
        members.add(ch.uid)
        return others

    def leave_bridge(self, uid: str, bridge: str) -> None:
        self._discard_from_bridge(uid, bridge)
        ch = self.channels.get(uid)
        if ch is not None and ch.bridge == bridge:
            ch.bridge = None

    def _discard_from_bridge(self, uid: str, bridge: str) -> None:
        members = self._bridges.get(bridge)
        if members is not None:
            members.discard(uid)
            if not members:
                del self._bridges[bridge]

    def move_channel(self, ch: Channel, to: CallState) -> None:
        """Hand a channel over to another live call (two calls became one)."""
        ch.call.channels.pop(ch.uid, None)
        ch.call = to
        to.channels[ch.uid] = ch

    def finish(self, call: CallState) -> bool:
        """Remove a call and its channels; their ids are remembered as ended.  False if it was not live."""
        call_id = call.journey.call_id
        if self.calls.get(call_id) is not call:
            return False
        del self.calls[call_id]
        for uid, ch in call.channels.items():
            if self.channels.get(uid) is ch:
                del self.channels[uid]
            if self._by_name.get(ch.name) == uid:
                del self._by_name[ch.name]
            if ch.bridge is not None:
                self._discard_from_bridge(uid, ch.bridge)
            self._remember_ended(uid)
        self._remember_ended(call_id)
        return True

    def drop(self, call: CallState) -> None:
        """Remove a call that was merged into another one (its channels live on there)."""
        if self.calls.get(call.journey.call_id) is call:
            del self.calls[call.journey.call_id]
        self._remember_ended(call.journey.call_id)

    def clear_bridges(self) -> None:
        self._bridges.clear()

    def forget_ended(self, uid: str) -> None:
        """Let a finished channel or call id be followed again (a resync found it alive)."""
        self._ended.pop(uid, None)

    def _remember_ended(self, uid: str) -> None:
        self._ended[uid] = None
        if len(self._ended) > self._remember:
            self._ended.popitem(last=False)

"""Channels, ids and the AMI messages of one simulated Asterisk 22.

:class:`Pbx` holds what a real Asterisk numbers and names: one Uniqueid counter (``<epoch>.<counter>``,
``<systemname>-<epoch>.<counter>`` when a system name is set), one name counter per channel technology
(``Local/101@agents-0000002a;1``, ``PJSIP/carrier-0000001b``), bridge UUIDs, aggregate device states,
and the clock of the stream: every message gets ``Timestamp: <epoch>.<usec>``, a few microseconds after
the previous one, never going back.

:class:`Chan` is one channel and renders its *channel snapshot block* (``Channel`` ... ``Linkedid``, with
an optional prefix such as ``Dest``) the way ``ast_manager_build_channel_state_string_prefix()`` does,
cached until a field changes.  The event methods of :class:`Pbx` emit each event with the exact header
order of the real captures (``shared/ami-captures``); scenario code calls them in capture order.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

__all__ = ["PRIVILEGE", "STATE_DESC", "Bridge", "Chan", "Pbx"]

STATE_DESC = {0: "Down", 1: "Rsrvd", 2: "OffHook", 3: "Dialing", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}
UNKNOWN = "<unknown>"

#: Privilege header of every event the simulator emits (as in the captures)
PRIVILEGE = {
    "AgentCalled": "agent,all", "AgentComplete": "agent,all", "AgentConnect": "agent,all",
    "AgentRingNoAnswer": "agent,all", "QueueCallerAbandon": "agent,all", "QueueCallerJoin": "agent,all",
    "QueueCallerLeave": "agent,all", "QueueMemberStatus": "agent,all",
    "Newexten": "dialplan,all", "VarSet": "dialplan,all",
    "DTMFBegin": "dtmf,all", "DTMFEnd": "dtmf,all",
    "RTCPSent": "reporting,all", "RTCPReceived": "reporting,all",
    "ChallengeSent": "security,all", "SuccessfulAuth": "security,all",
    "FullyBooted": "system,all",
}
CALL = "call,all"

CAUSE_TXT = {0: "Unknown", 16: "Normal Clearing", 17: "User busy", 19: "No answer", 21: "Call Rejected",
             26: "Answered elsewhere", 127: "Interworking, unspecified"}

#: C escaping of caller-id names (ast_escape_c): what Asterisk does to CallerIDName/ConnectedLineName
_C_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "'": "\\'", "?": "\\?", "\n": "\\n", "\r": "\\r",
                            "\t": "\\t", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"})


def c_escape(value: str) -> str:
    return value.translate(_C_ESCAPES)


@dataclass(slots=True, eq=False, repr=False)
class Chan:
    """One channel.  ``None`` caller-id parts render as ``<unknown>``."""

    name: str
    uid: str
    lid: str
    context: str
    exten: str
    _: KW_ONLY
    state: int = 0
    prio: int = 1
    cid_num: str | None = None
    cid_name: str | None = None
    cl_num: str | None = None
    cl_name: str | None = None
    tech: str = ""
    born: int = 0
    lang: str = field(default="en", init=False)
    acct: str = field(default="", init=False)
    up: bool = field(default=True, init=False)
    vars: dict[str, Any] | None = field(default=None, init=False)  # the style's own notes (inherited variables...)
    dev: str = field(default="", init=False)  # the device whose state this channel makes in use (Local pair, PJSIP)
    pair: Chan | None = field(default=None, init=False)  # the other half of a Local pair
    counted: bool = field(default=False, init=False)  # counts for its device's state right now
    _block: dict[str, str] = field(default_factory=dict, init=False)
    _b0: str | None = field(default=None, init=False)  # the block without prefix, the most used

    def set(self, **fields: object) -> Chan:
        for key, value in fields.items():
            setattr(self, key, value)
        self._block = {}
        self._b0 = None
        return self

    def block(self, p: str = "") -> str:
        """The channel snapshot block with prefix ``p`` (cached)."""
        if not p:
            b = self._b0
            if b is None:
                b = self._b0 = self.render()
            return b
        b = self._block.get(p)
        if b is None:
            b = self._block[p] = self.render(p)
        return b

    def render(self, p: str = "", /, **override: object) -> str:
        """The block, optionally as an older/other snapshot (``override`` replaces fields)."""
        f = self
        g = override.get
        state = g("state", f.state)
        cid_num = g("cid_num", f.cid_num)
        cid_name = g("cid_name", f.cid_name)
        cl_num = g("cl_num", f.cl_num)
        cl_name = g("cl_name", f.cl_name)
        return (
            f"{p}Channel: {f.name}\r\n{p}ChannelState: {state}\r\n{p}ChannelStateDesc: {STATE_DESC[state]}\r\n"  # type: ignore[index]
            f"{p}CallerIDNum: {cid_num or UNKNOWN}\r\n"
            f"{p}CallerIDName: {c_escape(cid_name) if cid_name else UNKNOWN}\r\n"  # type: ignore[arg-type]
            f"{p}ConnectedLineNum: {cl_num or UNKNOWN}\r\n"
            f"{p}ConnectedLineName: {c_escape(cl_name) if cl_name else UNKNOWN}\r\n"  # type: ignore[arg-type]
            f"{p}Language: {f.lang}\r\n{p}AccountCode: {f.acct}\r\n"
            f"{p}Context: {g('context', f.context)}\r\n{p}Exten: {g('exten', f.exten)}\r\n"
            f"{p}Priority: {g('prio', f.prio)}\r\n{p}Uniqueid: {f.uid}\r\n{p}Linkedid: {g('lid', f.lid)}\r\n"
        )

    def __repr__(self) -> str:
        return f"Chan({self.name!r}, {self.uid!r})"


class Bridge:
    __slots__ = ("id", "members")

    def __init__(self, bid: str) -> None:
        self.id = bid
        self.members: list[Chan] = []

    def block(self, p: str = "", n: int | None = None) -> str:
        return (f"{p}BridgeUniqueid: {self.id}\r\n{p}BridgeType: basic\r\n{p}BridgeTechnology: simple_bridge\r\n"
                f"{p}BridgeCreator: <unknown>\r\n{p}BridgeName: <unknown>\r\n"
                f"{p}BridgeNumChannels: {len(self.members) if n is None else n}\r\n"
                f"{p}BridgeVideoSourceMode: none\r\n")


class Pbx:
    """The numbering, device states, clock and output of one simulated Asterisk."""

    def __init__(self, rng: random.Random, start: float, system_name: str = "") -> None:
        self.rng = rng
        self.t = round(start * 1_000_000)  # the stream clock, microseconds
        self.system_name = system_name
        self._sys = f"SystemName: {system_name}\r\n" if system_name else ""
        self._uid_prefix = f"{system_name}-" if system_name else ""
        self.counter = 0
        self.seq: dict[str, int] = {}
        self.devices: dict[str, int] = {}
        self.out: list[bytes] = []
        self._jit = [rng.randint(2, 18) for _ in range(251)]
        self._ji = 0
        self._sec = -1
        self._secs = ""
        self._hdr: dict[str, str] = {}
        self.on_idle: Callable[[str], None] | None = None  # told when a device's last channel hangs up

    # ---- clock and numbering ---------------------------------------------------------------------------
    def at(self, t_us: int) -> None:
        """Start a burst of messages at ``t_us`` (the clock never goes back)."""
        if t_us > self.t:
            self.t = t_us

    @property
    def now(self) -> float:
        return self.t / 1_000_000

    def new_uid(self) -> str:
        uid = f"{self._uid_prefix}{self.t // 1_000_000}.{self.counter}"
        self.counter += 1
        return uid

    def chan_name(self, base: str, tech: str) -> str:
        n = self.seq.get(tech, 0)
        self.seq[tech] = n + 1
        return f"{base}-{n:08x}"

    def local_pair(self, base: str, context: str, exten: str, lid: str | None = None) -> tuple[Chan, Chan]:
        """A new Local channel pair ``base-0000000n;1`` (Down) and ``;2`` (Ring)."""
        name = self.chan_name(base, "Local")
        uid1 = self.new_uid()
        one = Chan(f"{name};1", uid1, lid or uid1, context, exten, state=0, born=self.t)
        two = Chan(f"{name};2", self.new_uid(), lid or uid1, context, exten, state=4, born=self.t)
        one.pair, two.pair = two, one
        one.dev = two.dev = base
        one.counted = True  # a Local device is in use while both halves of a pair live (local_devicestate)
        self.dev_use(base, 1)
        return one, two

    def pjsip(self, endpoint: str, context: str, exten: str, *, lid: str | None = None, state: int = 0,
              cid_num: str | None = None, cid_name: str | None = None) -> Chan:
        """A new ``PJSIP/<endpoint>-0000000n`` channel."""
        uid = self.new_uid()
        ch = Chan(self.chan_name(f"PJSIP/{endpoint}", "PJSIP"), uid, lid or uid, context, exten, state=state,
                  cid_num=cid_num, cid_name=cid_name, tech="PJSIP", born=self.t)
        ch.dev = f"PJSIP/{endpoint}"
        if state == 6:
            ch.counted = True
            self.dev_use(ch.dev, 1)
        return ch

    def bridge(self) -> Bridge:
        return Bridge(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))

    # ---- output ----------------------------------------------------------------------------------------
    def emit(self, event: str, body: str) -> None:
        ji = self._ji + 1
        if ji == 251:
            ji = 0
        self._ji = ji
        t = self.t = self.t + self._jit[ji]
        sec, us = divmod(t, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._secs = f"{sec}."
        hdr = self._hdr.get(event)
        if hdr is None:
            hdr = self._hdr[event] = f"Event: {event}\r\nPrivilege: {PRIVILEGE.get(event, CALL)}\r\nTimestamp: "
        self.out.append(f"{hdr}{self._secs}{us:06d}\r\n{self._sys}{body}\r\n".encode())

    def take(self) -> list[bytes]:
        out = self.out
        self.out = []
        return out

    # ---- device states ---------------------------------------------------------------------------------
    def dev_use(self, device: str, delta: int) -> str:
        n = max(0, self.devices.get(device, 0) + delta)
        if n:
            self.devices[device] = n
        else:
            self.devices.pop(device, None)
        return "INUSE" if n else "NOT_INUSE"

    def dev_state(self, device: str) -> str:
        return "INUSE" if self.devices.get(device) else "NOT_INUSE"

    def devstate(self, device: str, state: str | None = None) -> None:
        self.emit("DeviceStateChange", f"Device: {device}\r\nState: {state or self.dev_state(device)}\r\n")

    # ---- channel events --------------------------------------------------------------------------------
    def newchannel(self, ch: Chan) -> None:
        self.emit("Newchannel", ch.block())

    def newstate(self, ch: Chan, state: int) -> None:
        ch.set(state=state)
        if state == 6 and ch.tech == "PJSIP" and not ch.counted:
            ch.counted = True
            self.dev_use(ch.dev, 1)
        self.emit("Newstate", ch.block())

    def newexten(self, ch: Chan, prio: int, app: str, data: str = "", *, context: str | None = None,
                 exten: str | None = None) -> None:
        if context is not None:
            ch.set(context=context, exten=exten, prio=prio)
        elif ch.prio != prio:
            ch.set(prio=prio)
        self.emit("Newexten", f"{ch.block()}Extension: {ch.exten}\r\nApplication: {app}\r\nAppData: {data}\r\n")

    def varset(self, ch: Chan, variable: str, value: str = "") -> None:
        self.emit("VarSet", f"{ch.block()}Variable: {variable}\r\nValue: {value}\r\n")

    def varsets(self, ch: Chan, pairs: Iterable[tuple[str, str]]) -> None:
        b = ch.block()
        for variable, value in pairs:
            self.emit("VarSet", f"{b}Variable: {variable}\r\nValue: {value}\r\n")

    def newcallerid(self, ch: Chan, pres: str = "0 (Presentation Allowed, Not Screened)") -> None:
        self.emit("NewCallerid", f"{ch.block()}CID-CallingPres: {pres}\r\n")

    def newconnectedline(self, ch: Chan) -> None:
        self.emit("NewConnectedLine", ch.block())

    def hangup_request(self, ch: Chan, cause: int | None = None, tech: int | None = None) -> None:
        self.emit("HangupRequest", ch.block() + ("" if cause is None else f"Cause: {cause}\r\n")
                  + ("" if tech is None else f"TechCause: {tech}\r\n"))

    def soft_hangup_request(self, ch: Chan, cause: int = 16, tech: int | None = None) -> None:
        self.emit("SoftHangupRequest",
                  f"{ch.block()}Cause: {cause}\r\n" + ("" if tech is None else f"TechCause: {tech}\r\n"))

    def hangup(self, ch: Chan, cause: int = 16, tech: int | None = None) -> None:
        ch.up = False
        owner = ch if ch.counted else (ch.pair if ch.pair is not None and ch.pair.counted else None)
        idle = False
        if owner is not None:
            owner.counted = False
            idle = self.dev_use(ch.dev, -1) == "NOT_INUSE"
        self.emit("Hangup", f"{ch.block()}Cause: {cause}\r\nCause-txt: {CAUSE_TXT.get(cause, 'Unknown')}\r\n"
                            + ("" if tech is None else f"TechCause: {tech}\r\n"))
        if idle and self.on_idle is not None:
            self.on_idle(ch.dev)

    def hold(self, ch: Chan, music: str | None = "default") -> None:
        self.emit("Hold", ch.block() + (f"MusicClass: {music}\r\n" if music else ""))

    def unhold(self, ch: Chan) -> None:
        self.emit("Unhold", ch.block())

    def moh_start(self, ch: Chan) -> None:
        self.emit("MusicOnHoldStart", f"{ch.block()}Class: default\r\n")

    def moh_stop(self, ch: Chan) -> None:
        self.emit("MusicOnHoldStop", ch.block())

    def dtmf(self, ch: Chan, digit: str, phase: str, duration_ms: int = 120) -> None:
        if phase == "begin":
            self.emit("DTMFBegin", f"{ch.block()}Digit: {digit}\r\nDirection: Received\r\n")
        else:
            self.emit("DTMFEnd", f"{ch.block()}Digit: {digit}\r\nDurationMs: {duration_ms}\r\nDirection: Received\r\n")

    # ---- dial ------------------------------------------------------------------------------------------
    def dial_begin(self, src: Chan | None, dst: Chan, dial_string: str, dst_block: str | None = None) -> None:
        self.emit("DialBegin", f"{src.block() if src else ''}{dst_block or dst.block('Dest')}"
                               f"DialString: {dial_string}\r\n")

    def dial_state(self, src: Chan | None, dst: Chan, status: str = "RINGING") -> None:
        self.emit("DialState", f"{src.block() if src else ''}{dst.block('Dest')}DialStatus: {status}\r\n")

    def dial_end(self, src: Chan | None, dst: Chan, status: str, dst_block: str | None = None) -> None:
        self.emit("DialEnd", f"{src.block() if src else ''}{dst_block or dst.block('Dest')}"
                             f"DialStatus: {status}\r\n")

    def local_bridge(self, one: Chan, two: Chan, context: str, exten: str, optimization: str = "No") -> None:
        self.emit("LocalBridge", f"{one.block('LocalOne')}{two.block('LocalTwo')}Context: {context}\r\n"
                                 f"Exten: {exten}\r\nLocalOptimization: {optimization}\r\n")

    # ---- bridges ---------------------------------------------------------------------------------------
    def bridge_create(self, b: Bridge) -> None:
        self.emit("BridgeCreate", b.block())

    def bridge_enter(self, b: Bridge, ch: Chan, swap: Chan | None = None) -> None:
        b.members.append(ch)
        self.emit("BridgeEnter", b.block() + ch.block() + (f"SwapUniqueid: {swap.uid}\r\n" if swap else ""))

    def bridge_leave(self, b: Bridge, ch: Chan) -> None:
        if ch in b.members:
            b.members.remove(ch)
        self.emit("BridgeLeave", b.block() + ch.block())

    def bridge_destroy(self, b: Bridge) -> None:
        self.emit("BridgeDestroy", b.block())

    # ---- queue events ----------------------------------------------------------------------------------
    def queue_caller(self, event: str, ch: Chan, queue: str, tail: str) -> None:
        self.emit(event, f"{ch.block()}Queue: {queue}\r\n{tail}")

    def agent_event(self, event: str, caller: Chan | None, member: Chan | None, queue: str, interface: str,
                    member_name: str, tail: str = "", dest_block: str | None = None) -> None:
        self.emit(event, f"{caller.block() if caller else ''}"
                         f"{dest_block if dest_block is not None else (member.block('Dest') if member else '')}"
                         f"Queue: {queue}\r\nInterface: {interface}\r\nMemberName: {member_name}\r\n{tail}")

    def rtcp(self, event: str, ch: Chan, body: str) -> None:
        self.emit(event, ch.block() + body)

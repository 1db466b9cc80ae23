"""Build synthetic AMI events (the fields Asterisk 22 sends) for tracker scenarios the captures lack,
e.g. PJSIP callers and operators without Local channels, or a manager user without the dialplan class."""

from __future__ import annotations

from onechance.ami.parser import AmiMessage


class Chan:
    def __init__(self, name: str, uid: str, linkedid: str, num: str = "<unknown>", cname: str = "<unknown>",
                 context: str = "from-trunk", exten: str = "s") -> None:
        self.name, self.uid, self.linkedid = name, uid, linkedid
        self.num, self.cname, self.context, self.exten = num, cname, context, exten

    def block(self, prefix: str = "") -> dict[str, str]:
        return {
            f"{prefix}Channel": self.name,
            f"{prefix}ChannelState": "6",
            f"{prefix}ChannelStateDesc": "Up",
            f"{prefix}CallerIDNum": self.num,
            f"{prefix}CallerIDName": self.cname,
            f"{prefix}ConnectedLineNum": "<unknown>",
            f"{prefix}ConnectedLineName": "<unknown>",
            f"{prefix}Language": "en",
            f"{prefix}AccountCode": "",
            f"{prefix}Context": self.context,
            f"{prefix}Exten": self.exten,
            f"{prefix}Priority": "1",
            f"{prefix}Uniqueid": self.uid,
            f"{prefix}Linkedid": self.linkedid,
        }


class Script:
    """Accumulates events with increasing timestamps."""

    def __init__(self, t0: float = 1_800_000_000.0) -> None:
        self.t = t0
        self.events: list[AmiMessage] = []

    def at(self, dt: float) -> Script:
        self.t += dt
        return self

    def ev(self, name: str, *blocks: dict[str, str], timestamp: bool = True, **fields: str) -> Script:
        h = {"Event": name, "Privilege": "call,all"}
        if timestamp:
            h["Timestamp"] = f"{self.t:.6f}"
        for b in blocks:
            h.update(b)
        h.update({k: str(v) for k, v in fields.items()})
        self.events.append(AmiMessage(h))
        return self

    # common shapes
    def newchannel(self, c: Chan) -> Script:
        return self.ev("Newchannel", c.block())

    def hangup(self, c: Chan, cause: str = "16", request: bool = True) -> Script:
        if request:
            self.ev("HangupRequest", c.block(), Cause=cause)
        return self.ev("Hangup", c.block(), Cause=cause, **{"Cause-txt": "Normal Clearing"})

    def join(self, c: Chan, queue: str, position: int = 1) -> Script:
        return self.ev("QueueCallerJoin", c.block(), Queue=queue, Position=str(position), Count=str(position))

    def called(self, c: Chan, member: Chan, queue: str, interface: str, name: str) -> Script:
        self.ev("AgentCalled", c.block(), member.block("Dest"), Queue=queue, Interface=interface, MemberName=name)
        return self.ev("DialBegin", c.block(), member.block("Dest"), DialString=interface.split("/", 1)[1])

    def connect(self, c: Chan, member: Chan, queue: str, interface: str, name: str, hold: int) -> Script:
        self.ev("DialEnd", c.block(), member.block("Dest"), DialStatus="ANSWER")
        self.ev("QueueCallerLeave", c.block(), Queue=queue, Position="1", Count="0")
        return self.ev("AgentConnect", c.block(), member.block("Dest"), Queue=queue, Interface=interface,
                       MemberName=name, HoldTime=str(hold), RingTime="1")

    def abandon(self, c: Chan, queue: str, hold: int) -> Script:
        self.ev("QueueCallerAbandon", c.block(), Queue=queue, Position="1", OriginalPosition="1",
                HoldTime=str(hold))
        return self.ev("QueueCallerLeave", c.block(), Queue=queue, Position="1", Count="0")

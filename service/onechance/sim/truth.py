"""What the simulator knows about every call it generated: the journey the tracker should report.

One :class:`CallTruth` per call (per Linkedid), in the ``onechance replay --json`` contract of the
shared captures' README: ``call_id``, ``caller``, ``caller_name``, ``outcome``, ``short_abandon``,
``queues`` (queue names, consultation visits of attended transfers and refused visits included),
``first_wait``, ``operators`` (member names; ``ext:NNN`` where the captures' truth files write an
extension: a pickup by another phone and a direct call), ``transfers`` (kinds), ``bounced``, ``alerts``,
``recovered``, ``direction``, ``callee``, ``dialled_by`` (outbound: who dialled; ``operators`` names them
only when the callee answered), ``exit_key``, with the default thresholds (short abandon under
5 s, bounced at the 2nd transfer).  ``kinds`` lists what happened to the call (``answered``,
``ring_no_answer``, ``blind_transfer``, ...) so tests can pick calls by kind; it is not part of the
contract.

:class:`TruthBook` also applies the recovery rule: a lost call (abandoned but not short, timed out,
refused, or left by a key) that has ended is recovered when a later call from the same number is answered, or when an
operator's outbound call to that number is answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BOUNCE_AT", "SHORT_ABANDON", "CallTruth", "TruthBook"]

SHORT_ABANDON = 5.0
BOUNCE_AT = 2
LOST = ("abandoned", "timeout", "rejected", "exited")
RECOVERY_WINDOW = 7 * 86400.0  # a lost call is recovered by an answer within this many seconds (the tracker's)


@dataclass
class CallTruth:
    call_id: str
    caller: str
    caller_name: str
    started_at: float
    direction: str = "inbound"
    callee: str = ""
    dialled_by: str = ""
    outcome: str = "in_progress"
    queues: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    exit_key: str = ""
    ended_at: float | None = None
    recovered: bool = False
    kinds: list[str] = field(default_factory=list)
    pbx: str = ""
    last_wait: float = 0.0

    @property
    def short_abandon(self) -> bool:
        return self.outcome == "abandoned" and self.last_wait < SHORT_ABANDON

    @property
    def bounced(self) -> bool:
        return len(self.transfers) >= BOUNCE_AT

    @property
    def lost(self) -> bool:
        return self.outcome in LOST and not self.short_abandon

    @property
    def alerts(self) -> list[str]:
        out = []
        if self.lost:
            out.append(self.outcome)
        if self.bounced:
            out.append("bounced")
        return out

    def kind(self, tag: str) -> None:
        if tag not in self.kinds:
            self.kinds.append(tag)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "call_id": self.call_id,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "direction": self.direction,
            "started_at": round(self.started_at, 6),
            "ended_at": None if self.ended_at is None else round(self.ended_at, 6),
            "outcome": self.outcome,
            "short_abandon": self.short_abandon,
            "queues": list(self.queues),
            "operators": list(self.operators),
            "transfers": list(self.transfers),
            "bounced": self.bounced,
            "alerts": self.alerts,
            "recovered": self.recovered,
            "kinds": list(self.kinds),
        }
        if self.waits:
            d["first_wait"] = round(self.waits[0], 3)
        if self.callee:
            d["callee"] = self.callee
        if self.dialled_by:
            d["dialled_by"] = self.dialled_by
        if self.exit_key:
            d["exit_key"] = self.exit_key
        if self.pbx:
            d["pbx"] = self.pbx
        return d


class TruthBook:
    """Every call's truth, and the lost calls waiting to be recovered."""

    def __init__(self, pbx: str = "") -> None:
        self.pbx = pbx
        self.lost: dict[str, list[CallTruth]] = {}
        self.live = 0  # calls started and not ended

    def new(self, call_id: str, caller: str, caller_name: str, at: float, **kw: Any) -> CallTruth:
        self.live += 1
        return CallTruth(call_id, caller, caller_name, at, pbx=self.pbx, **kw)

    def answered(self, number: str, at: float, via: str = "ring_back") -> None:
        """A call from ``number`` was answered at ``at`` (``via="ring_back"``) or an operator's outbound call
        to it (``via="call_back"``): lost calls of it that have ended are recovered (within the window)."""
        for t in self.lost.pop(number, ()):
            if t.ended_at is not None and t.ended_at < at - RECOVERY_WINDOW:
                continue
            t.recovered = True
            t.kind(f"recovered_by_{via}")

    def end(self, t: CallTruth, at: float) -> None:
        if t.ended_at is None:
            self.live -= 1
        t.ended_at = at
        if t.direction == "inbound" and t.lost and t.caller:
            lost = self.lost.setdefault(t.caller, [])
            while lost and lost[0].ended_at is not None and lost[0].ended_at < at - RECOVERY_WINDOW:
                del lost[0]
            lost.append(t)

"""Scripted calls: play given calls instead of random traffic (to re-enact a capture, or a test case).

A :class:`ScriptedCall` says when a caller calls, whom, and every decision the random behaviour would
otherwise draw: how each rung operator answers (in ring order), how each answered part ends, transfers,
pickups.  ``Centre(config, script=[...])`` plays exactly those calls (no random arrivals); anything the
script leaves open is drawn as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Part", "ScriptedCall"]


@dataclass
class Part:
    """How one answered part of a call ends: ``operator`` or ``caller`` hangs up after ``talk`` seconds
    (from the answer), or the operator transfers (``kind`` blind/attended, ``method`` phone/ami/feature,
    to the queue ``target``) after ``talk`` seconds; ``consult_talk`` is the talk between the two operators
    of an attended transfer (``hold``: how long a phone holds the caller before dialling it)."""

    end: str = "operator"
    talk: float = 10.0
    kind: str = ""
    method: str = ""
    target: str = ""
    consult_talk: float = 2.0
    hold: float = 2.2  # phone attended transfer: seconds on hold before the consultation call


@dataclass
class ScriptedCall:
    """One call of a script.

    ``rings``: for each operator extension, what it does each time it is rung (seconds before answering,
    or None to let it ring), consumed in order (missing: does not answer).  ``pickup``: (picker
    extension, seconds after the ring starts) for the first ring round (sip style).  ``direct``: an
    extension dialled instead of a queue; ``callback``: instead of an inbound call, operator
    ``callback[0]`` calls the number back, answered or not (``callback[1]``) after ``callback[2]``
    seconds of ringing, talking ``parts[0].talk`` seconds."""

    at: float
    number: str
    name: str = ""
    queue: str = ""
    direct: str = ""
    patience: float = 10_000.0
    key_at: float | None = None
    rings: dict[str, list[float | None]] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    pickup: tuple[str, float] | None = None
    callback: tuple[str, bool, float] | None = None
    rr_after: dict[str, str] = field(default_factory=dict)  # queue -> member rung last before this call
    voicemail: float = 10.0  # seconds a key-exit caller spends leaving a message

"""What the two PBX styles (:mod:`.local`, :mod:`.sip`) write alike.

Both styles are the same app_queue on an Asterisk 22 with queue members ``Local/EXT@agents/n``: the
``Dial()`` variables and times, the truth a transfer leaves, are the same in both.  The styles call these
where their captures put them and write out themselves what differs.
"""

from __future__ import annotations

from .channels import Chan
from .scenarios import Call

__all__ = ["DIAL_VARS_EMPTY", "count_transfer", "dial_times"]

#: the variables ``Dial()`` clears when it starts
DIAL_VARS_EMPTY = (("DIALSTATUS", ""), ("DIALEDPEERNUMBER", ""), ("DIALEDPEERNAME", ""), ("ANSWEREDTIME", ""),
                   ("ANSWEREDTIME_MS", ""), ("DIALEDTIME", ""), ("DIALEDTIME_MS", ""), ("RINGTIME", ""),
                   ("RINGTIME_MS", ""), ("PROGRESSTIME", ""), ("PROGRESSTIME_MS", ""))


def dial_times(t: int, ch: Chan, since: int) -> tuple[tuple[str, str], ...]:
    """ANSWEREDTIME(_MS) since ``since`` and DIALEDTIME(_MS) since ``ch`` was created, at ``t`` (µs)."""
    a = max(0, (t - since) // 1000)
    d = max(0, (t - ch.born) // 1000)
    return (("ANSWEREDTIME", str(a // 1000)), ("ANSWEREDTIME_MS", str(a)),
            ("DIALEDTIME", str(d // 1000)), ("DIALEDTIME_MS", str(d)))


def count_transfer(call: Call, kind: str, method: str) -> None:
    """A transfer of ``call`` and its truth: ``kind`` blind/attended, ``method`` the tag of how it was done;
    a second (third...) transfer bounces the call."""
    call.transfers += 1
    if kind == "attended":
        call.attended = True  # the caller's chain went through an attended transfer
    call.truth.transfers.append(kind)
    call.truth.kind(f"{kind}_transfer")
    call.truth.kind(method)
    if call.transfers >= 2:
        call.truth.kind("bounced")

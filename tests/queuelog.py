"""Read Asterisk's own queue_log (``epoch|callid|queue|agent|EVENT|data...``), an independent record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class QLVisit:
    """One caller's stay in one queue, as queue_log tells it."""

    callid: str
    queue: str
    caller: str
    entered: int
    result: str | None = None  # answered, abandoned, timeout, exitempty, exitkey, withdraw
    wait: int | None = None
    agent: str | None = None
    talk: int | None = None
    transfer: str | None = None  # blind, attended
    events: list[str] = field(default_factory=list)


def parse_queue_log(path: Path) -> list[QLVisit]:
    visits: list[QLVisit] = []
    open_by_key: dict[tuple[str, str], QLVisit] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        epoch, callid, queue, agent, event, data = int(parts[0]), parts[1], parts[2], parts[3], parts[4], parts[5:]
        key = (callid, queue)
        if event == "ENTERQUEUE":
            v = QLVisit(callid, queue, data[1] if len(data) > 1 else "", epoch)
            visits.append(v)
            open_by_key[key] = v
            continue
        v = open_by_key.get(key)
        if v is None:
            continue
        v.events.append(event)
        if event == "CONNECT":
            v.result, v.wait, v.agent = "answered", int(data[0]), agent
        elif event == "ABANDON":
            v.result, v.wait = "abandoned", int(data[2])
        elif event == "EXITWITHTIMEOUT":
            v.result, v.wait = "timeout", int(data[2])
        elif event == "EXITEMPTY":
            v.result, v.wait = "exitempty", int(data[2])
        elif event == "EXITWITHKEY":
            v.result, v.wait = "exitkey", int(data[3])
        elif event in ("COMPLETECALLER", "COMPLETEAGENT"):
            v.talk = int(data[1])
        elif event == "BLINDTRANSFER":
            v.transfer, v.talk = "blind", int(data[3])
        elif event == "ATTENDEDTRANSFER":
            v.transfer = "attended"
            v.talk = int(data[-2])
    return visits

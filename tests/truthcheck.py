"""Compare journeys (``Journey.to_json()`` / ``onechance replay --json`` objects) with a ``*.truth.json``.

The rules are those of the shared capture contract: truth calls are matched to journeys by caller
number in start order; ``first_wait`` is compared within 1.5 s; an operator written ``ext:201`` may be
reported by extension or by that extension's member name (taken from the PBX's queues.conf).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


TEST_PBX = DATA.parent.parent / "asterisk-conf" / "test-pbx"


def member_names(queues_conf: Path = TEST_PBX / "queues.conf") -> dict[str, str]:
    """Extension -> member name, from ``member => Local/101@agents/n,0,Anna Tamm`` lines."""
    out = {}
    for line in queues_conf.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*member\s*=>\s*\w+/(\d+)@[^,]*,[^,]*,(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _op_ok(want: str, got: Any, members: dict[str, str]) -> bool:
    if want.startswith("ext:"):
        ext = want[4:]
        return ext in str(got) or got == members.get(ext)
    return want == got


def compare(want: dict[str, Any], got: dict[str, Any], members: dict[str, str]) -> list[str]:
    errs: list[str] = []

    def chk(name: str, ok: bool, w: Any, g: Any) -> None:
        if not ok:
            errs.append(f"{name}: want {w!r} got {g!r}")

    if want.get("outcome") is not None:
        chk("outcome", got.get("outcome") == want["outcome"], want["outcome"], got.get("outcome"))
    if "caller_name" in want:
        chk("caller_name", got.get("caller_name") == want["caller_name"], want["caller_name"], got.get("caller_name"))
    if "short_abandon" in want:
        chk("short_abandon", bool(got.get("short_abandon")) == want["short_abandon"], want["short_abandon"],
            got.get("short_abandon"))
    gq = [q["queue"] for q in got.get("queues") or []]
    if "queues" in want:
        chk("queues", gq == want["queues"], want["queues"], gq)
    if "first_wait" in want:
        qs = got.get("queues") or []
        w = qs[0].get("wait_seconds") if qs else None
        chk("first_wait", isinstance(w, (int, float)) and abs(w - want["first_wait"]) <= 1.5, want["first_wait"], w)
    if "operators" in want:
        go = got.get("operators") or []
        ok = len(go) == len(want["operators"]) and all(_op_ok(w, g, members) for w, g in zip(want["operators"], go))
        chk("operators", ok, want["operators"], go)
    if "transfers" in want:
        gk = [t["kind"] for t in got.get("transfers") or []]
        chk("transfers", gk == want["transfers"], want["transfers"], gk)
    if "bounced" in want:
        chk("bounced", bool(got.get("bounced")) == want["bounced"], want["bounced"], got.get("bounced"))
    if "alerts" in want:
        chk("alerts", sorted(got.get("alerts") or []) == sorted(want["alerts"]), sorted(want["alerts"]),
            sorted(got.get("alerts") or []))
    if "recovered" in want:
        chk("recovered", bool(got.get("recovered")) == want["recovered"], want["recovered"], got.get("recovered"))
    return errs


def check_truth(truth: dict[str, Any], journeys: list[dict[str, Any]]) -> list[str]:
    """Every mismatch, as readable lines (empty when every truth call matches)."""
    members = member_names()
    by_caller: dict[str, list[dict[str, Any]]] = {}
    for g in sorted(journeys, key=lambda g: g.get("started_at") or 0):
        by_caller.setdefault(g.get("caller") or "", []).append(g)
    problems = []
    for want in truth["calls"]:
        cands = by_caller.get(want["caller"]) or []
        if not cands:
            problems.append(f"{want['caller']}: no journey reported")
            continue
        got = cands.pop(0)
        errs = compare(want, got, members)
        if errs:
            problems.append(f"{want['caller']}: " + "; ".join(errs))
    # outbound calls (an operator dialling an outside number): direction, callee, answered or not
    outbound = [g for g in journeys if g.get("direction") == "outbound"]
    for want in truth.get("outbound", []):
        digits = "".join(ch for ch in want["callee"] if ch.isdigit())
        cand = [g for g in outbound if "".join(ch for ch in str(g.get("callee") or "") if ch.isdigit()) == digits]
        if not cand:
            problems.append(f"outbound to {want['callee']}: no journey with direction 'outbound' and this callee")
            continue
        got = cand[0]
        outbound.remove(got)
        if (got["outcome"] == "answered") != bool(want["answered"]):
            problems.append(f"outbound to {want['callee']}: answered: want {want['answered']} got {got['outcome']}")
        if "operator" in want and got.get("dialled_by") != want["operator"]:
            problems.append(f"outbound to {want['callee']}: dialled by {got.get('dialled_by')!r}, "
                            f"want {want['operator']!r}")
    return problems


def expected_calls(truth: dict[str, Any]) -> int:
    """How many journeys a truth file describes (inbound calls and outbound ones)."""
    return len(truth["calls"]) + len(truth.get("outbound", []))


def load_truth(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.truth.json").read_text(encoding="utf-8"))


def scenarios() -> list[str]:
    return sorted(p.name[: -len(".truth.json")] for p in DATA.glob("*.truth.json"))


# ---- the simulator's truth (onechance.sim) ---------------------------------------------------------------
def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value or "") if ch.isdigit())


def compare_sim(want: dict[str, Any], got: dict[str, Any], members: dict[str, str],
                wait_tolerance: float = 1.5) -> list[str]:
    """:func:`compare` for a simulated call (``CallTruth.to_dict()``), plus what the simulator knows
    exactly: the caller, the direction (a journey without one counts as inbound), an outbound call's
    callee (digits) and who dialled it, a key exit's key, every visit's queue in order.  ``first_wait`` is
    compared within ``wait_tolerance`` seconds (the simulator knows it to the microsecond)."""
    errs = compare({k: v for k, v in want.items() if k != "first_wait"}, got, members)

    def chk(name: str, ok: bool, w: Any, g: Any) -> None:
        if not ok:
            errs.append(f"{name}: want {w!r} got {g!r}")

    chk("caller", got.get("caller") == want["caller"], want["caller"], got.get("caller"))
    direction = got.get("direction") or "inbound"
    chk("direction", direction == want.get("direction", "inbound"), want.get("direction", "inbound"), direction)
    if want.get("direction") == "outbound":
        chk("callee", _digits(got.get("callee")) == _digits(want.get("callee")), want.get("callee"),
            got.get("callee"))
        chk("dialled_by", got.get("dialled_by") == want.get("dialled_by"), want.get("dialled_by"),
            got.get("dialled_by"))
    chk("exit_key", (got.get("exit_key") or "") == want.get("exit_key", ""), want.get("exit_key", ""),
        got.get("exit_key"))
    if "first_wait" in want:
        qs = got.get("queues") or []
        w = qs[0].get("wait_seconds") if qs else None
        chk("first_wait", isinstance(w, (int, float)) and abs(w - want["first_wait"]) <= wait_tolerance,
            want["first_wait"], w)
    return errs


def check_sim(truths: list[dict[str, Any]], journeys: list[dict[str, Any]], members: dict[str, str],
              wait_tolerance: float = 1.5) -> dict[str, list[str]]:
    """Every simulated call against the journey with its call id: ``{call_id: [mismatch, ...]}`` for the
    calls that differ, a missing journey included.  A journey the simulator never made (a phantom call,
    e.g. a consultation call not joined to its caller) is reported under ``"phantom <call_id>"``."""
    by_id: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    for g in journeys:
        if g["call_id"] in by_id:
            problems[f"twice {g['call_id']}"] = ["two journeys with this call id"]
        by_id[g["call_id"]] = g
    for want in truths:
        got = by_id.pop(want["call_id"], None)
        if got is None:
            problems[want["call_id"]] = ["no journey reported"]
            continue
        errs = compare_sim(want, got, members, wait_tolerance)
        if errs:
            problems[want["call_id"]] = errs
    for call_id, got in by_id.items():
        problems[f"phantom {call_id}"] = [f"a journey the simulator did not make (caller {got.get('caller')!r}, "
                                          f"outcome {got.get('outcome')!r})"]
    return problems

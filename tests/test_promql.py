"""The PromQL cookbook of docs/metrics.md gives, per queue, the figures ``onechance report`` gives for the same
calls: a real Prometheus (Debian package) scrapes a daemon fed the ``load_a`` capture every second; when every
call has ended and been scraped, the documented queries are run as written and compared with ``daily_figures``
on the daemon's own database (per queue: offered, answered, service level, service level 2, abandon rate, ASA;
per first queue: lost callers, recovery rate, bounced calls), and the queue members with what the capture's
member events reported.

The documented queries use ``increase(...[1h])``.  The run lasts well under an hour, so ``[1h]`` covers all of
it, and they are evaluated at the time of the last scrape: ``increase()`` then has nothing to extrapolate (every
series was scraped at 0 before the first call -- checked -- and the range ends on a sample), so it is the exact
count, and the raw counters must say the same.  The recording rules, evaluated by Prometheus at its own times
(their ends extrapolated by a fraction of a second, by the same factor for every series of the target), must give
the same ratios.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from onechance.demo import Hold, load_capture
from onechance.journey import CallPolicy
from onechance.members import QueueMembers
from onechance.store import daily_figures, engine_from_settings
from onechance.store.report import QueueDay

from .livehelp import capture, fake_pbx, pipeline, running, settings_for, settled, wait_until
from .test_deploy_monitoring import Prometheus, prometheus, scrape_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
PBX = "pbx1"
#: the cookbook figures compared with the report, per queue (and the capture's member events) ...
FIGURES = ("offered", "answered", "service level", "service level 2", "abandon rate", "ASA", "transfers",
           "members by state")
#: ... and per first queue (whole calls)
CALL_FIGURES = ("lost callers", "recovery rate", "bounced calls")


def cookbook() -> dict[str, str]:
    """The PromQL cookbook table of docs/metrics.md: figure (the text before any parenthesis) -> query."""
    text = DOC.read_text(encoding="utf-8").split("## PromQL cookbook", 1)[1]
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\| (.+) \| `([^`]+)` \|$", line)
        if m:
            figure = m.group(1).split(" (")[0].strip()
            out[figure] = m.group(2).replace("\\|", "|")
    return out


def queues_of(name: str) -> list[str]:
    return sorted({r.msg.headers["Queue"] for r in load_capture(capture(name))
                   if r.msg.headers.get("Event") == "QueueCallerJoin"})


def members_reported(name: str) -> dict[tuple[str, str], float]:
    """(queue, state) -> members, from the capture's member events fed to a :class:`QueueMembers`."""
    members = QueueMembers()
    for r in load_capture(capture(name)):
        if r.msg.headers.get("Event") in QueueMembers.EVENTS:
            members.feed(r.msg)
    return {(q, str(s)): float(n) for (q, s), n in members.counts().items()}


def total(rows: list[QueueDay]) -> dict[str, QueueDay]:
    """Per queue over every day of the run (the counts summed; ratios are computed from the sums)."""
    out: dict[str, QueueDay] = {}
    for r in rows:
        assert r.queue is not None
        t = out.setdefault(r.queue, QueueDay(kind="queue", pbx=r.pbx, queue=r.queue, period="all", period_start=None))
        for f in ("offered", "answered", "abandoned", "short_abandoned", "timeouts", "answered_in_sl",
                  "unanswered_in_sl", "answered_wait", "lost", "recovered", "bounced", "transfers"):
            setattr(t, f, getattr(t, f) + getattr(r, f))
    return out


def pct(x: float) -> float:
    return round(100.0 * x, 1)


async def test_the_cookbook_queries_give_the_report_figures(tmp_path):
    book = cookbook()
    wanted = {*FIGURES, *CALL_FIGURES}
    assert wanted <= set(book), f"docs/metrics.md cookbook lacks {wanted - set(book)}"
    queues = queues_of("load_a")
    assert len(queues) == 3
    # the queues are configured (as a real Asterisk lists them in QueueStatus at login; this capture starts
    # with no QueueStatus): every series exists at 0 from the first scrape
    pbx = fake_pbx("load_a", speed=40.0)  # ~6 s: the scrapes see the counters climb
    pbx.plan[0] = Hold()  # nothing is played until Prometheus has scraped the idle daemon
    async with pbx:
        settings = settings_for([(PBX, pbx.port)], data_dir=tmp_path / "data", queues={q: {} for q in queues})
        async with running(settings) as app:
            assert app.http_port
            async with prometheus(tmp_path / "prom", scrape_config({"onechance": app.http_port})) as prom:
                idle = await prom.wait_for(f'onechance_queue_entered_total{{pbx="{PBX}"}} == 0 and on() '
                                           f'onechance_ami_up{{pbx="{PBX}"}} == 1', "a scrape of the idle daemon")
                assert sorted(r["metric"]["queue"] for r in idle) == queues
                pbx.release()
                await settled(app, PBX, pbx)
                p = pipeline(app, PBX)
                await wait_until(lambda: not p.tracker.calls, 10, "every call of load_a to end")
                events = p.link.events if p.link else -1
                done = time.time()
                # a scrape after the end, which saw every event
                last = await prom.wait_for(f"timestamp(onechance_ami_events_total) > {done} "
                                           f"and onechance_ami_events_total == {events}", "a scrape after the end")
                at = float(last[0]["value"][1])
                got = await figures_from(prom, book, at)
                await prom.wait_for(f"timestamp(pbx_queue:onechance_queue_service_level:ratio1h) > {at}",
                                    "the rules evaluated after the last scrape")
                rules = await rule_figures(prom)
    # the daemon stopped: its store has written every journey
    engine = engine_from_settings(settings)
    try:
        report = total(await daily_figures(engine, 0.0, 1e11, pbx=PBX, policy=CallPolicy.from_settings(settings)))
    finally:
        await engine.dispose()
    assert sorted(report) == queues

    for q in queues:
        r = report[q]
        assert r.offered > 0 and r.answered > 0
        assert got["offered"][q] == r.offered, (q, "offered")
        assert got["answered"][q] == r.answered, (q, "answered")
        assert got["raw offered"][q] == r.offered, (q, "raw counter offered")
        assert got["raw answered"][q] == r.answered, (q, "raw counter answered")
        assert pct(got["service level"][q]) == r.service_level, (q, "service level")
        assert pct(got["service level 2"][q]) == r.service_level2, (q, "service level 2")
        assert got["abandon rate"][q] == (r.abandoned - r.short_abandoned) / r.offered, (q, "abandon rate")
        assert r.asa_seconds is not None
        assert abs(got["ASA"][q] - r.asa_seconds) <= 0.05 + 1e-9, (q, "ASA", got["ASA"][q], r.asa_seconds)
        assert math.isclose(got["ASA"][q], r.answered_wait / r.answered, rel_tol=1e-9), (q, "ASA unrounded")
        assert got["transfers"].get(q, 0) == r.transfers, (q, "transfers")
        # whole calls, by their first queue
        assert got["lost callers"][q] == r.lost, (q, "lost callers")
        assert got["bounced calls"][q] == r.bounced, (q, "bounced calls")
        if r.lost:
            assert pct(got["recovery rate"][q]) == r.recovery_rate, (q, "recovery rate")
        # the recording rules: the same definitions
        assert pct(rules["service level"][q]) == r.service_level, (q, "rule: service level")
        assert pct(rules["service level 2"][q]) == r.service_level2, (q, "rule: service level 2")
        assert math.isclose(rules["abandon rate"][q], (r.abandoned - r.short_abandoned) / r.offered,
                            rel_tol=1e-9, abs_tol=1e-12), (q, "rule: abandon rate")
        assert math.isclose(rules["ASA"][q], r.answered_wait / r.answered, rel_tol=1e-9), (q, "rule: ASA")
    # not a vacuous comparison: load_a has service levels below 100 %, abandons and short abandons
    assert any(report[q].service_level != 100.0 for q in queues)
    assert sum(report[q].abandoned - report[q].short_abandoned for q in queues) > 0
    assert sum(report[q].lost for q in queues) > 0 and sum(report[q].bounced for q in queues) > 0
    assert sum(report[q].transfers for q in queues) > 0

    reported = members_reported("load_a")
    assert sum(reported.values()) > 0
    members = got["members by state"]
    assert {k: v for k, v in members.items() if v} == reported
    assert {q for q, _s in members} == set(queues)  # every state of every queue, 0 included


async def figures_from(prom: Prometheus, book: dict[str, str], at: float) -> dict[str, Any]:
    """The cookbook's figures (and the raw counters), per queue, at ``at``."""
    out: dict[str, Any] = {}
    for figure in FIGURES[:-1]:
        out[figure] = await prom.values(book[figure], "queue", at)
    for figure in CALL_FIGURES:
        out[figure] = await prom.values(book[figure], "first_queue", at)
    out["raw offered"] = await prom.values("sum by (queue) (onechance_queue_entered_total)", "queue", at)
    out["raw answered"] = await prom.values('sum by (queue) (onechance_queue_left_total{result="answered"})',
                                            "queue", at)
    out["members by state"] = {(r["metric"]["queue"], r["metric"]["state"]): float(r["value"][1])
                               for r in await prom.query(book["members by state"], at)}
    return out


async def rule_figures(prom: Prometheus) -> dict[str, dict[str, float]]:
    names = {
        "service level": "pbx_queue:onechance_queue_service_level:ratio1h",
        "service level 2": "pbx_queue:onechance_queue_service_level2:ratio1h",
        "abandon rate": "pbx_queue:onechance_queue_abandon_rate:ratio1h",
        "ASA": "pbx_queue:onechance_queue_asa_seconds:mean1h",
    }
    return {figure: await prom.values(f'{name}{{pbx="{PBX}"}}', "queue") for figure, name in names.items()}

"""When alerts are raised and where they go: the raiser on real captures, the router's filters, mute and
business hours."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from onechance.alerts.hours import BusinessHours
from onechance.alerts.model import Alert, DeliveryState, alert_id
from onechance.alerts.outbox import Outbox
from onechance.alerts.raiser import AlertRaiser
from onechance.alerts.routing import Router
from onechance.config import ChannelSettings, HoursSettings, load_settings
from onechance.journey import AlertKind, CallPolicy, JourneyUpdate, QueueRule, UpdateKind
from onechance.replay import replay_files
from onechance.store.facts import AlertRow, DeliveryRow

from .truthcheck import DATA, load_truth, scenarios


class Memory:
    """The outbox's store side, keeping what it is given (the writer's contract: persist waits for durability)."""

    def __init__(self) -> None:
        self.facts: list[AlertRow | DeliveryRow] = []

    async def persist(self, facts: Any) -> None:
        self.facts.extend(facts)

    def submit(self, item: Any) -> None:
        self.facts.append(item)


def raised(name: str, policy: CallPolicy | None = None) -> list[tuple[str, str, str]]:
    """(caller, kind, queue) of every alert the raiser raises while ``name`` is replayed."""
    policy = policy or CallPolicy()
    outbox = Outbox(Router(policy, [], {}), {}, [], Memory(), CollectorRegistry())
    raiser = AlertRaiser(policy, outbox)

    async def run() -> list[dict[str, Any]]:
        replay_files([str(DATA / f"{name}.ami")], policy, on_update=raiser.handle)
        task = asyncio.create_task(outbox.run())
        await asyncio.sleep(0.05)
        await outbox.aclose()
        await task
        return outbox.recent()

    return sorted((a["caller"], a["kind"], a["queue"]) for a in asyncio.run(run()))


@pytest.mark.parametrize("name", scenarios())
def test_the_captures_raise_exactly_the_alerts_of_their_truth_files(name):
    truth = load_truth(name)
    want = sorted((c["caller"], kind) for c in truth["calls"] for kind in c.get("alerts", []))
    got = [(caller, kind) for caller, kind, _queue in raised(name)]
    assert got == want


def test_an_abandon_is_about_the_queue_the_caller_hung_up_in():
    # support -> blind transfer to sales, abandoned there
    assert [(k, q) for _c, k, q in raised("transfer_then_abandon")] == [("abandoned", "sales")]


def test_a_queue_that_does_not_alert_on_a_kind_raises_none():
    quiet = CallPolicy(QueueRule(), {"support": QueueRule(alert_kinds=frozenset({AlertKind.BOUNCED}))})
    assert raised("abandoned", quiet) == []
    assert raised("abandoned") != []


def test_long_wait_comes_from_the_tick_before_the_call_ends():
    from onechance.ami.parser import AmiFramer
    from onechance.journey import JourneyTracker

    policy = CallPolicy.with_defaults(long_wait_seconds=5.0, alert_kinds=frozenset(AlertKind))
    tracker = JourneyTracker(policy)
    kinds: list[tuple[UpdateKind, float]] = []
    join = None
    for msg in AmiFramer().feed((DATA / "abandoned.ami").read_bytes()):
        for u in tracker.feed(msg):
            if isinstance(u, JourneyUpdate):
                kinds.append((u.kind, u.at))
        if msg.event == "QueueCallerJoin":
            join = float(msg["Timestamp"])
        if join is not None:
            for u in tracker.tick(float(msg.get("Timestamp") or 0)):
                assert isinstance(u, JourneyUpdate)
                kinds.append((u.kind, u.at))
    long_waits = [at for k, at in kinds if k == UpdateKind.LONG_WAIT]
    ended = [at for k, at in kinds if k == UpdateKind.ENDED]
    assert len(long_waits) == 1 and join is not None
    assert long_waits[0] - join >= 5.0 and long_waits[0] < ended[0]


# ---- routing ------------------------------------------------------------------------------------------
def _alert(queue: str = "support", kind: AlertKind = AlertKind.ABANDONED, pbx: str = "p", at: float = 0.0
           ) -> Alert:
    (record,) = replay_files([str(DATA / "abandoned.ami")], pbx=pbx).journeys
    return Alert(alert_id(pbx, record.call_id, str(kind)), kind, record, queue, at or record.ended_at or 0.0,
                 0.0)


def _channel(name: str, **kw: Any) -> ChannelSettings:
    return ChannelSettings(name=name, kind="webhook", url="http://127.0.0.1:1/x", **kw)


def test_channel_filters():
    router = Router(CallPolicy(), [
        _channel("all"), _channel("bounces", kinds=["bounced"]), _channel("sales", queues=["sales"]),
        _channel("other-pbx", pbx=["q"])], {})
    assert [r.channel for r in router.routes(_alert())] == ["all"]
    assert [r.channel for r in router.routes(_alert("sales", AlertKind.BOUNCED))] == ["all", "bounces", "sales"]
    assert [r.channel for r in router.routes(_alert(pbx="q"))] == ["all", "other-pbx"]


def test_a_muted_queue_records_its_alerts_but_sends_none():
    policy = CallPolicy(QueueRule(), {"support": QueueRule(mute=True)})
    routes = Router(policy, [_channel("a"), _channel("b")], {}).routes(_alert())
    assert [(r.channel, r.state, r.reason) for r in routes] == [
        ("a", DeliveryState.SUPPRESSED, "muted"), ("b", DeliveryState.SUPPRESSED, "muted")]


def _ts(text: str, zone: str = "Europe/Tallinn") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_business_hours_in_their_time_zone_with_holidays():
    hours = BusinessHours(HoursSettings(timezone="Europe/Tallinn", mon=["08:00-12:00", "13:00-17:00"],
                                        fri=["08:00-24:00"], holidays=["2026-12-24"]))
    assert hours.open_at(_ts("2026-11-23T08:00"))  # a Monday
    assert not hours.open_at(_ts("2026-11-23T07:59"))
    assert not hours.open_at(_ts("2026-11-23T12:30"))  # lunch
    assert not hours.open_at(_ts("2026-11-23T17:00"))
    assert hours.open_at(_ts("2026-11-27T23:59"))  # Friday to midnight
    assert not hours.open_at(_ts("2026-11-24T10:00"))  # Tuesday: closed all day
    assert not hours.open_at(_ts("2026-12-24T10:00"))  # a Thursday, but a holiday
    # the same instant, seen from UTC, is 06:00: the zone is the schedule's, not the machine's
    assert hours.open_at(_ts("2026-11-23T06:00", "UTC"))


def test_outside_hours_alerts_are_recorded_or_go_to_the_outside_channel():
    night = HoursSettings(mon=["08:00-17:00"], timezone="UTC")
    policy = CallPolicy(QueueRule(), {"support": QueueRule(hours="office")})
    sunday = _ts("2026-11-22T10:00", "UTC")
    routes = Router(policy, [_channel("day"), _channel("pager")], {"office": night}).routes(_alert(at=sunday))
    assert {(r.channel, r.state) for r in routes} == {("day", DeliveryState.SUPPRESSED),
                                                      ("pager", DeliveryState.SUPPRESSED)}
    paged = HoursSettings(mon=["08:00-17:00"], timezone="UTC", outside="pager")
    routes = Router(policy, [_channel("day"), _channel("pager", kinds=["bounced"])],
                    {"office": paged}).routes(_alert(at=sunday))
    assert {(r.channel, r.state) for r in routes} == {("day", DeliveryState.SUPPRESSED),
                                                      ("pager", DeliveryState.PENDING)}
    monday = _ts("2026-11-23T10:00", "UTC")
    routes = Router(policy, [_channel("day"), _channel("pager", kinds=["bounced"])],
                    {"office": paged}).routes(_alert(at=monday))
    assert [(r.channel, r.state) for r in routes] == [("day", DeliveryState.PENDING)]


def test_alert_settings_are_checked(tmp_path):
    from onechance.config import ConfigError

    conf = tmp_path / "c.toml"
    conf.write_text('[queues.support]\nhours = "office"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"queues\.support\.hours: no \[alerts\.hours\.office\]"):
        load_settings(conf)
    conf.write_text('[alerts.hours.office]\ntimezone = "Mars/Olympus"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_settings(conf)
    conf.write_text('[alerts.hours.office]\nmon = ["17:00-08:00"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="after the start"):
        load_settings(conf)
    conf.write_text('[[alerts.channels]]\nname = "a"\nkind = "webhook"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="exactly one of url and url_file"):
        load_settings(conf)


async def test_a_receivers_retry_after_is_honoured():
    """A webhook answering 503 with Retry-After: 2 is tried again no sooner than 2 s later (not after retry_min),
    then the alert goes through once."""
    import time

    from onechance.alerts.channels import build_channel
    from onechance.config import AlertsSettings

    from .alerthelp import Receiver, make_alert

    async with Receiver(script=[503], headers={"Retry-After": "2"}) as rx:
        settings = ChannelSettings(name="hook", kind="webhook", url=rx.url(), retry_min=0.05, retry_max=10)
        channel = build_channel(settings, AlertsSettings())
        outbox = Outbox(Router(CallPolicy(), [settings], {}), {"hook": channel}, [settings], Memory(),
                        CollectorRegistry())
        task = asyncio.create_task(outbox.run())
        try:
            outbox.raise_alert(make_alert(decided_at=time.time(), call_id="1.1"))
            first, second = await rx.wait_for(2, timeout=15)
            assert second.at - first.at >= 1.9
            assert first.key == second.key
        finally:
            await outbox.aclose()
            await task

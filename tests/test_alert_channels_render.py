"""The message text and the webhook payload (onechance/alerts/render.py): the default text of each kind,
unknown template fields, masking, phone number formatting, names in any script, time zones, digests."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from onechance.alerts.channels.webhook import encode
from onechance.alerts.model import PAYLOAD_VERSION
from onechance.alerts.render import DIGEST_LIMIT, Renderer, format_number
from onechance.config import DEFAULT_TEMPLATE, AlertsSettings, ChannelSettings, ConfigError

from .alerthelp import T0, make_alert

URL = "https://onechance.example.com"


def renderer(**kw: object) -> Renderer:
    channel = ChannelSettings(name="t", kind="webhook", url="http://127.0.0.1:1/x",
                              **{k: v for k, v in kw.items() if k in ("mask_caller", "template")})
    alerts = AlertsSettings(public_url=str(kw.get("public_url", URL + "/")), timezone=str(kw.get("tz", "UTC")))
    return Renderer.from_settings(channel, alerts, region=kw.get("region"))  # type: ignore[arg-type]


def leg(operator: str) -> dict[str, object]:
    return {"operator": operator, "kind": "queue", "queue": "support", "answered_at": T0 - 30, "talk_from": T0 - 30,
            "ended_at": T0 - 20, "talk_seconds": 10.0, "ended_by": "operator"}


# ---- the default text ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "what"), [
    ("abandoned", "abandoned"),
    ("timeout", "timed out"),
    ("rejected", "refused by the queue"),
])
def test_default_text_of_a_lost_caller(kind, what):
    text = renderer().text(make_alert(kind))
    assert text == (f"Lost caller +372 5123 4567 (Jaan Kivi): {what} after 42 s in support, 06:14. "
                    f"Call back: {URL}/callbacks")


def test_default_text_of_a_caller_who_left_for_voicemail_names_the_key():
    r = renderer()
    assert r.text(make_alert("exited", exit_key="1", outcome="exited")) == (
        "Lost caller +372 5123 4567 (Jaan Kivi): left the queue for voicemail (key 1) after 42 s in support, "
        f"06:14. Call back: {URL}/callbacks")
    assert "left the queue for voicemail after" in r.text(make_alert("exited"))  # no key known


def test_default_text_of_a_bounced_call_counts_the_operators():
    transfers = [{"kind": "blind", "from": "201", "to": "202", "at": T0 - 25, "to_queue": None},
                 {"kind": "blind", "from": "202", "to": "203", "at": T0 - 15, "to_queue": None}]
    alert = make_alert("bounced", legs=[leg("201"), leg("202"), leg("203"), leg("202")], transfers=transfers)
    assert renderer().text(alert) == (
        "Bounced call +372 5123 4567 (Jaan Kivi): bounced between 3 operators in support, 06:14. "
        f"Call: {URL}/api/calls/1714630401.1207?pbx=main")
    fields = renderer().fields(alert)
    assert fields["operators"] == "201, 202, 203" and fields["transfers"] == 2


def test_default_text_of_a_long_wait_counts_the_wait_up_to_the_alert():
    # the caller is still in the queue: the visit is open, its wait counts up to the decision
    queues = [{"queue": "support", "joined_at": T0 - 300, "left_at": None, "wait_seconds": 0.0, "result": "waiting",
               "callid": "x"}]
    alert = make_alert("long_wait", queues=queues, ended_at=None, outcome="in_progress", lost=False)
    assert renderer().text(alert) == (
        "Long wait: caller +372 5123 4567 (Jaan Kivi) still waiting after 300 s in support, 06:14. "
        f"Call: {URL}/api/calls/1714630401.1207?pbx=main")


def test_a_caller_without_a_name_reads_without_empty_parentheses():
    for name in ("", "<unknown>", "+37251234567", "5123 4567"):
        text = renderer().text(make_alert(caller_name=name))
        assert text.startswith("Lost caller +372 5123 4567: abandoned after 42 s"), (name, text)
        assert "()" not in text


def test_withheld_and_unknown_numbers_are_said_in_words():
    assert renderer().text(make_alert(caller="anonymous", caller_name="")).startswith(
        "Lost caller withheld number: abandoned")
    assert renderer().text(make_alert(caller="", caller_name="")).startswith("Lost caller unknown number: abandoned")


# ---- the template ------------------------------------------------------------------------------------------
def test_unknown_fields_render_as_themselves_and_never_raise():
    r = renderer(template="{caller} {nope} {nope.attr} {nope[0]} {nope:>5} {nope!r} {{literal}} {wait:>4}|{kind}")
    assert r.text(make_alert()) == ("+372 5123 4567 {nope} {nope.attr} {nope[0]} {nope:>5} {nope} {literal}   42"
                                    "|abandoned")


def test_every_field_is_offered():
    r = renderer(template="{caller}|{caller_name}|{what}|{title}|{kind}|{wait}|{queue}|{time}|{date}|{link}|"
                          "{call_link}|{pbx}|{call_id}|{id}|{operators}|{transfers}")
    alert = make_alert(legs=[leg("201")], call_id="1714630401.12/07")
    assert r.text(alert).split("|") == [
        "+372 5123 4567", "Jaan Kivi", "abandoned", "Lost caller in support", "abandoned", "42", "support",
        "06:14", "2024-05-02", f"{URL}/callbacks", f"{URL}/api/calls/1714630401.12%2F07?pbx=main", "main",
        "1714630401.12/07", alert.id, "201", "0"]


@pytest.mark.parametrize("template", ["Lost {caller", "Lost caller }", "{wait:%Y-%m}", "{caller:d}", "{0}"])
def test_a_template_that_cannot_be_rendered_is_refused_at_start(template):
    with pytest.raises(ConfigError) as exc:
        renderer(template=template)
    message = str(exc.value)
    assert message.startswith("alerts.channels[t].template: ") and "\n" not in message
    with pytest.raises(ConfigError, match=r"^alerts\.template: "):
        Renderer.from_settings(None, AlertsSettings(template=template))


def test_an_unknown_time_zone_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"^alerts\.timezone: unknown time zone 'Europe/Tallin'"):
        Renderer.from_settings(None, AlertsSettings(timezone="Europe/Tallin"))


def test_times_are_in_the_configured_zone():
    assert renderer(tz="Europe/Tallinn").fields(make_alert())["time"] == "09:14"  # EEST, UTC+3 in May
    assert renderer(tz="America/New_York").fields(make_alert())["date"] == "2024-05-02"
    assert renderer(tz="Asia/Tokyo").fields(make_alert(decided_at=T0 + 11 * 3600))["date"] == "2024-05-03"


def test_without_a_zone_times_are_in_the_machines_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+5:30, no DST
    time.tzset()
    try:
        r = Renderer.from_settings(None, AlertsSettings(timezone=None))
        assert r.fields(make_alert())["time"] == "11:44"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_links_follow_public_url():
    r = renderer(public_url="https://pbx.example.com/onechance/")
    f = r.fields(make_alert(pbx="tallinn office"))
    assert f["link"] == "https://pbx.example.com/onechance/callbacks"
    assert f["call_link"] == "https://pbx.example.com/onechance/api/calls/1714630401.1207?pbx=tallinn%20office"


# ---- numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("number", "region", "shown"), [
    ("+37251234567", None, "+372 5123 4567"),
    ("+3726123456", None, "+372 612 3456"),
    ("003725123456", None, "+372 512 3456"),
    ("+74951234567", None, "+7 495 123-45-67"),
    ("+79161234567", None, "+7 916 123-45-67"),
    ("0079161234567", None, "+7 916 123-45-67"),
    ("51234567", "EE", "+372 5123 4567"),  # a national number, read in the default region
    ("84951234567", "RU", "+7 495 123-45-67"),
    ("51234567", None, "51234567"),  # no region: left as given
    ("201", None, "201"),  # an extension
    ("201", "EE", "201"),
])
def test_numbers_are_formatted_with_phonenumbers(number, region, shown):
    assert format_number(number, region) == shown
    assert renderer(region=region).fields(make_alert(caller=number))["caller"] == shown


# ---- masking ---------------------------------------------------------------------------------------------
def test_masking_hides_the_number_in_the_text_and_in_every_payload_field():
    r = renderer(mask_caller=True)
    alert = make_alert()
    text = r.text(alert)
    assert text.startswith("Lost caller +372 512* **67 (Jaan Kivi): abandoned")
    payload = r.payload(alert)
    assert payload["caller"] == "+372512***67" and payload["caller_display"] == "+372 512* **67"
    assert payload["masked"] is True and payload["text"] == text
    body = encode(payload).decode()
    for shown in ("51234567", "5123 4567", "1234567", "123 4567"):
        assert shown not in body, shown


def test_a_name_that_is_the_number_cannot_carry_it_past_the_mask():
    r = renderer(mask_caller=True)
    for name in ("+37251234567", "51234567", "+372 5123 4567"):
        alert = make_alert(caller_name=name)
        body = encode(r.payload(alert)).decode() + r.digest_text([alert])
        assert "1234567" not in body and "123 4567" not in body, name


def test_without_masking_the_payload_carries_the_number_as_given():
    payload = renderer().payload(make_alert(caller="003725123456"))
    assert payload["caller"] == "003725123456" and payload["caller_display"] == "+372 512 3456"
    assert payload["masked"] is False


# ---- names in any script ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Иван Петров", "王小明", "محمد الأحمد", "Jüri Õunapuu", "Αλέξανδρος", "יעל כהן"])
def test_names_in_any_script_come_through_intact(name):
    r = renderer()
    alert = make_alert(caller_name=name)
    assert f"({name})" in r.text(alert)
    body = encode(r.payload(alert))
    assert name.encode("utf-8") in body  # UTF-8 as itself, not \\u-escaped
    assert json.loads(body)["caller_name"] == name
    assert name in r.digest_text([alert])


# ---- the payload -----------------------------------------------------------------------------------------
def test_the_payload_of_one_alert():
    r = renderer(tz="Europe/Tallinn")
    transfers = [{"kind": "attended", "from": "201", "to": "305", "at": T0 - 20, "to_queue": "sales"}]
    alert = make_alert(legs=[leg("201"), leg("305")], transfers=transfers)
    p = r.payload(alert)
    assert p["version"] == PAYLOAD_VERSION == 1
    assert {k: p[k] for k in ("kind", "id", "pbx", "call_id", "queue", "caller", "caller_name", "severity",
                              "what", "wait_seconds", "operators")} == {
        "kind": "abandoned", "id": alert.id, "pbx": "main", "call_id": "1714630401.1207", "queue": "support",
        "caller": "+37251234567", "caller_name": "Jaan Kivi", "severity": "critical", "what": "abandoned",
        "wait_seconds": 42.0, "operators": ["201", "305"]}
    assert p["transfers"] == transfers
    assert p["started_at"] == T0 - 42.5 and p["decided_at"] == T0
    assert datetime.fromisoformat(p["decided_at_iso"]).timestamp() == T0
    assert datetime.fromisoformat(p["started_at_iso"]).timestamp() == T0 - 42.5
    assert p["decided_at_iso"] == "2024-05-02T06:14:03.500Z"
    assert p["link"] == f"{URL}/callbacks"
    assert p["call_link"] == f"{URL}/api/calls/1714630401.1207?pbx=main"
    assert p["text"] == r.text(alert) and "09:14" in p["text"]
    assert p["title"] == "Lost caller in support"
    assert json.loads(encode(p)) == p


def test_warnings_have_their_severity():
    r = renderer()
    assert r.payload(make_alert("bounced"))["severity"] == "warning"
    assert r.payload(make_alert("long_wait"))["severity"] == "warning"


# ---- digests ---------------------------------------------------------------------------------------------
def lost_callers(n: int, spacing: float = 2.0) -> list:
    kinds = ["abandoned", "timeout", "rejected"]
    return [make_alert(kinds[i % 3], call_id=f"17146304{i:02d}.{i}", caller=f"+3725123{i:04d}",
                       caller_name=f"Caller {i}", decided_at=T0 + i * spacing) for i in range(n)]


def test_a_digest_of_lost_callers():
    alerts = lost_callers(3)
    text = renderer().digest_text(alerts)
    assert text.splitlines() == [
        "3 lost callers in the last minute:",
        "- +372 5123 0000 (Caller 0) abandoned after 42 s in support, 06:14",
        "- +372 5123 0001 (Caller 1) timed out after 42 s in support, 06:14",
        "- +372 5123 0002 (Caller 2) refused by the queue after 42 s in support, 06:14",
        f"Call back: {URL}/callbacks",
    ]


def test_a_long_digest_lists_the_first_and_counts_the_rest():
    alerts = lost_callers(DIGEST_LIMIT + 2, spacing=3.0)
    lines = renderer().digest_text(list(reversed(alerts))).splitlines()
    assert lines[0] == f"{DIGEST_LIMIT + 2} lost callers in the last minute:"
    assert lines[1].startswith("- +372 5123 0000 (Caller 0)")  # oldest first
    assert len([x for x in lines if x.startswith("- ")]) == DIGEST_LIMIT
    assert lines[-2] == "... and 2 more"


def test_a_digest_over_more_than_a_minute_or_of_mixed_kinds():
    alerts = [*lost_callers(2, spacing=120.0), make_alert("bounced", call_id="b", decided_at=T0 + 300)]
    text = renderer(tz="Europe/Tallinn").digest_text(alerts)
    assert text.startswith("3 alerts since 09:14:\n")
    assert "- +372 5123 4567 (Jaan Kivi) transferred 0 times in support, 09:19" in text


def test_the_digest_payload_holds_every_alert_payload():
    r = renderer(mask_caller=True)
    alerts = lost_callers(3)
    p = r.digest_payload(alerts)
    assert p["version"] == 1 and p["kind"] == "digest" and p["count"] == 3
    assert p["alerts"] == [r.payload(a) for a in alerts]
    assert p["text"] == r.digest_text(alerts) and p["title"] == "3 lost callers"
    assert "+3725123" not in encode(p).decode() and "5123 000" not in p["text"]


def test_the_default_template_is_the_promised_one():
    assert DEFAULT_TEMPLATE == ("Lost caller {caller} ({caller_name}): {what} after {wait} s in {queue}, {time}. "
                                "Call back: {link}")

"""The webhook channel and build_channel, against a real HTTP receiver on loopback: the payload and its
headers, the signature checked with the procedure docs/alerts.md gives receivers, masking, digests, the
mapping of answers to retryable/non-retryable failures, timeouts, refused connections, and secrets kept out
of messages and logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from onechance.alerts.channels import AlertmanagerChannel, AppriseChannel, WebhookChannel, build_channel
from onechance.alerts.channels.common import safe_origin
from onechance.alerts.model import Channel, DeliveryFailed
from onechance.config import AlertsSettings, ChannelSettings, ConfigError

from .alerthelp import HANG, T0, Receiver, closed_port, make_alert, notice

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "alerts.md"
SECRET = "whsec-7f3a9c1e-do-not-log"
PUBLIC = "https://onechance.example.com"


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


def documented_verify() -> Any:
    """The receiver's ``verify()`` exactly as docs/alerts.md gives it."""
    (snippet,) = [b for b in doc_blocks("python") if "def verify(" in b]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    return namespace["verify"]


def channel(url: str, *, secret: str | None = SECRET, timeout: float = 5.0, **kw: Any) -> Channel:
    settings = ChannelSettings(name="crm", kind="webhook", url=url, timeout=timeout,
                               **({"secret": secret} if secret else {}), **kw)
    return build_channel(settings, AlertsSettings(public_url=PUBLIC, timezone="Europe/Tallinn"))


# ---- what goes over the wire -----------------------------------------------------------------------------
async def test_an_alert_is_posted_as_the_versioned_payload_with_its_headers():
    async with Receiver() as rx:
        ch = channel(rx.url("/hooks/onechance"))
        assert isinstance(ch, WebhookChannel) and ch.resolves is False and ch.name == "crm"
        alert = make_alert()
        before = int(time.time())
        await ch.send(notice(alert, key="k-1"))
        await ch.aclose()
    (req,) = rx.requests
    assert req.method == "POST" and req.path == "/hooks/onechance"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "k-1"
    assert before <= int(req.headers["X-Onechance-Timestamp"]) <= int(time.time())
    assert req.headers["User-Agent"].startswith("onechance/")
    body = req.json()
    assert body["version"] == 1 and body["kind"] == "abandoned" and body["id"] == alert.id
    assert (body["pbx"], body["call_id"], body["queue"]) == ("main", "1714630401.1207", "support")
    assert (body["caller"], body["caller_name"], body["wait_seconds"]) == ("+37251234567", "Jaan Kivi", 42.0)
    assert body["started_at"] == T0 - 42.5 and body["decided_at"] == T0
    assert body["decided_at_iso"] == "2024-05-02T06:14:03.500Z"
    assert body["call_link"] == f"{PUBLIC}/api/calls/1714630401.1207?pbx=main"
    assert body["text"] == (f"Lost caller +372 5123 4567 (Jaan Kivi): abandoned after 42 s in support, 09:14. "
                            f"Call back: {PUBLIC}/callbacks")


async def test_the_signature_verifies_with_the_documented_procedure():
    verify = documented_verify()
    async with Receiver() as rx:
        ch = channel(rx.url())
        await ch.send(notice(make_alert(caller_name="Иван Петров")))
        await ch.aclose()
    (req,) = rx.requests
    assert req.headers["X-Onechance-Signature"].startswith("v1=")
    assert verify(SECRET, req.headers, req.body)
    ts = int(req.headers["X-Onechance-Timestamp"])
    assert not verify("another-secret", req.headers, req.body), "a wrong secret must fail"
    assert not verify(SECRET, req.headers, req.body.replace(b"Jaan", b"Juhan").replace(b"42.0", b"43.0"))
    assert not verify(SECRET, req.headers, req.body + b" ")
    assert verify(SECRET, req.headers, req.body, now=ts + 299)
    assert not verify(SECRET, req.headers, req.body, now=ts + 301), "a stale timestamp (replay) must fail"
    assert not verify(SECRET, req.headers, req.body, now=ts - 301), "a timestamp from the future must fail"
    forged = dict(req.headers)
    forged["X-Onechance-Timestamp"] = str(ts + 1)
    assert not verify(SECRET, forged, req.body, now=ts), "the timestamp is signed"


async def test_without_a_secret_requests_are_not_signed():
    async with Receiver() as rx:
        ch = channel(rx.url(), secret=None)
        await ch.send(notice(make_alert()))
        await ch.aclose()
    (req,) = rx.requests
    assert "X-Onechance-Signature" not in req.headers and req.headers["X-Onechance-Timestamp"].isdigit()


async def test_secret_file_signs_too(tmp_path):
    (tmp_path / "secret").write_text(SECRET + "\n", encoding="utf-8")
    async with Receiver() as rx:
        ch = build_channel(ChannelSettings(name="crm", kind="webhook", url=rx.url(), secret_file=tmp_path / "secret"),
                           AlertsSettings())
        await ch.send(notice(make_alert()))
        await ch.aclose()
    assert documented_verify()(SECRET, rx.requests[0].headers, rx.requests[0].body)


async def test_masking_reaches_every_field_on_the_wire():
    async with Receiver() as rx:
        ch = channel(rx.url(), mask_caller=True)
        await ch.send(notice(make_alert()))
        await ch.send(notice(make_alert(), make_alert("timeout", call_id="2"), kind="digest"))
        await ch.aclose()
    for req in rx.requests:
        raw = req.body.decode("utf-8")
        assert "1234567" not in raw and "123 4567" not in raw
    assert rx.requests[0].json()["caller"] == "+372512***67"


async def test_a_digest_is_one_payload_holding_the_alert_payloads():
    alerts = [make_alert("abandoned", call_id=f"c{i}", decided_at=T0 + i) for i in range(3)]
    async with Receiver() as rx:
        ch = channel(rx.url())
        await ch.send(notice(*alerts, kind="digest", key="digest-1"))
        await ch.aclose()
    (req,) = rx.requests
    body = req.json()
    assert req.headers["Idempotency-Key"] == "digest-1"
    assert (body["version"], body["kind"], body["count"]) == (1, "digest", 3)
    assert [a["call_id"] for a in body["alerts"]] == ["c0", "c1", "c2"]
    assert all(a["version"] == 1 and a["kind"] == "abandoned" for a in body["alerts"])
    assert body["text"].startswith("3 lost callers in the last minute:\n")
    assert documented_verify()(SECRET, req.headers, req.body)


async def test_resolved_and_empty_notices_are_not_sent_to_webhooks():
    async with Receiver() as rx:
        ch = channel(rx.url())
        await ch.send(notice(make_alert(), kind="resolved"))
        await ch.send(notice(kind="digest"))  # nothing in it: nothing to send
        await ch.send(notice(make_alert()))
        await ch.aclose()
    assert len(rx.requests) == 1 and rx.requests[0].json()["kind"] == "abandoned"


async def test_one_session_per_channel_keeps_its_connection_and_closes():
    async with Receiver() as rx:
        ch = channel(rx.url())
        for _ in range(3):
            await ch.send(notice(make_alert()))
        await ch.aclose()
        await ch.aclose()  # idempotent
        await ch.send(notice(make_alert()))  # usable again: a new session
        await ch.aclose()
    ports = [r.peer_port for r in rx.requests]
    assert len(set(ports[:3])) == 1, f"one keep-alive connection expected, got ports {ports}"
    assert ports[3] != ports[0]


# ---- retries: the same key, a new signature ----------------------------------------------------------------
async def test_a_retried_delivery_keeps_its_idempotency_key_and_is_signed_anew():
    verify = documented_verify()
    async with Receiver(script=[503, 503]) as rx:
        ch = channel(rx.url())
        n = notice(make_alert(), key="retry-me")
        for _ in range(2):
            with pytest.raises(DeliveryFailed) as exc:
                await ch.send(n)
            assert exc.value.retryable
        await ch.send(n)
        await ch.aclose()
    assert rx.per_key() == {"retry-me": 3}
    assert all(verify(SECRET, r.headers, r.body) for r in rx.requests)


# ---- failures ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "retryable"), [
    (500, True), (502, True), (503, True), (504, True), (429, True), (408, True),
    (400, False), (401, False), (403, False), (404, False), (410, False), (422, False),
])
async def test_answers_map_to_retryable_or_not(status, retryable):
    async with Receiver(script=[status], body=f"refused {status}") as rx:
        ch = channel(rx.url("/path/" + SECRET))
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        await ch.aclose()
    assert exc.value.retryable is retryable
    reason = str(exc.value)
    assert reason.startswith(f"HTTP {status} ") and f"from http://127.0.0.1:{rx.port}" in reason
    assert f"refused {status}" in reason
    assert SECRET not in reason and "/path" not in reason and "\n" not in reason


async def test_retry_after_is_passed_on():
    async with Receiver(script=[429, 503], headers={"Retry-After": "7"}) as rx:
        ch = channel(rx.url())
        for _ in range(2):
            with pytest.raises(DeliveryFailed) as exc:
                await ch.send(notice(make_alert()))
            assert exc.value.retryable and exc.value.retry_after == 7.0
        await ch.aclose()


async def test_redirects_are_not_followed():
    async with Receiver(script=[302], headers={"Location": "/elsewhere"}) as rx:
        ch = channel(rx.url())
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        await ch.aclose()
    assert not exc.value.retryable and "redirects are not followed" in str(exc.value)
    assert [r.path for r in rx.requests] == ["/hook"]


async def test_a_receiver_that_never_answers_times_out_within_the_timeout():
    async with Receiver(script=[HANG]) as rx:
        ch = channel(rx.url(), timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        took = time.monotonic() - started
        await ch.aclose()
    assert exc.value.retryable
    assert str(exc.value) == f"no answer from http://127.0.0.1:{rx.port} within 0.5 s"
    assert 0.4 <= took < 2.0, took
    assert len(rx.requests) == 1


async def test_a_closed_port_is_retryable():
    port = closed_port()
    ch = channel(f"http://127.0.0.1:{port}/hooks/{SECRET}", timeout=2.0)
    with pytest.raises(DeliveryFailed) as exc:
        await ch.send(notice(make_alert()))
    await ch.aclose()
    assert exc.value.retryable
    assert str(exc.value).startswith(f"cannot connect to http://127.0.0.1:{port}: ")
    assert SECRET not in str(exc.value)


async def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_messages():
    async with Receiver(script=[500]) as rx:
        ch = channel(f"http://onechance:{SECRET}@127.0.0.1:{rx.port}/hook")
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        await ch.aclose()
    assert rx.requests[0].headers["Authorization"].startswith("Basic ")
    assert SECRET not in str(exc.value) and "onechance:" not in str(exc.value)


async def test_nothing_secret_is_logged(caplog):
    caplog.set_level(1)
    async with Receiver(script=[500, HANG]) as rx:
        ch = channel(f"http://user:{SECRET}@127.0.0.1:{rx.port}/hooks/{SECRET}-path", timeout=0.5)
        for _ in range(2):
            with pytest.raises(DeliveryFailed):
                await ch.send(notice(make_alert()))
        await ch.send(notice(make_alert(), kind="resolved"))
        await ch.aclose()
    assert caplog.records, "expected some log records (at least the ignored resolved notice)"
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.getMessage()


# ---- build_channel ---------------------------------------------------------------------------------------
def build(kind: str, url: str, **kw: Any) -> Channel:
    return build_channel(ChannelSettings(name="ch", kind=kind, url=url, **kw), AlertsSettings())


def test_build_channel_makes_each_kind():
    assert isinstance(build("webhook", "https://example.com/x"), WebhookChannel)
    am = build("alertmanager", "http://127.0.0.1:9093")
    assert isinstance(am, AlertmanagerChannel) and am.resolves is True
    ap = build("apprise", "json://127.0.0.1:1/x")
    assert isinstance(ap, AppriseChannel) and ap.resolves is False
    asyncio.run(ap.aclose())


@pytest.mark.parametrize(("kind", "url", "shown"), [
    ("webhook", f"ftp://files.example.com/{SECRET}", "ftp://"),
    ("webhook", f"hooks.example.com/{SECRET}", "(a URL without scheme://)"),
    ("webhook", f"https:///{SECRET}", "https://?"),
    ("webhook", f"http://user:{SECRET}@/x", "http://?"),
    ("webhook", f"http://example.com:99999/{SECRET}", "http://example.com:99999"),
    ("alertmanager", f"slack://{SECRET}/x", "slack://"),
])
def test_a_url_the_channel_cannot_use_is_a_one_line_config_error_without_the_secret(kind, url, shown):
    with pytest.raises(ConfigError) as exc:
        build(kind, url)
    message = str(exc.value)
    assert message.startswith(f"alerts.channels[ch]: the {kind} URL must be http://") and "\n" not in message
    assert message.endswith(f"(got {shown})"), message
    assert SECRET not in message


def test_other_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^alerts\.channels\[ch\]: the URL is empty$"):
        build("webhook", "  ")
    with pytest.raises(ConfigError, match=r"^alerts\.channels\[ch\]: secret/secret_file only sign webhooks"):
        build("alertmanager", "http://127.0.0.1:9093", secret=SECRET)
    with pytest.raises(ConfigError, match=r"^alerts\.channels\[ch\]\.url_file .*missing"):
        build_channel(ChannelSettings(name="ch", kind="webhook", url_file=tmp_path / "missing"), AlertsSettings())
    with pytest.raises(ConfigError, match=r"^alerts\.channels\[ch\]\.template: "):
        build("webhook", "https://example.com/x", template="{caller")
    (tmp_path / "url").write_text("https://example.com/from-file\n", encoding="utf-8")
    ch = build_channel(ChannelSettings(name="ch", kind="webhook", url_file=tmp_path / "url"), AlertsSettings())
    assert isinstance(ch, WebhookChannel) and ch.origin == "https://example.com"


def test_safe_origin_never_shows_user_password_path_or_query():
    assert safe_origin(f"https://u:{SECRET}@hooks.example.com:8443/a/{SECRET}?t={SECRET}#x") == \
        "https://hooks.example.com:8443"
    assert safe_origin("HTTP://Example.com") == "http://Example.com"
    assert safe_origin(f"http://[::1]:80/{SECRET}") == "http://[::1]:80"


def test_the_logs_of_other_libraries_are_untouched_by_webhooks():
    # the webhook channel needs no log filter: aiohttp's client does not log URLs
    before = list(logging.getLogger("aiohttp.client").filters)
    build("webhook", "https://example.com/x")
    assert logging.getLogger("aiohttp.client").filters == before


# ---- docs/alerts.md stays true -------------------------------------------------------------------------------
def documented_alerts() -> tuple[Any, Any]:
    """The two alerts of the docs' examples."""
    lost = make_alert()
    timeout_queue = [{"queue": "support", "joined_at": T0 - 48.5, "left_at": T0 + 12.5, "wait_seconds": 61.0,
                      "result": "timeout", "callid": "1714630410.1215"}]
    timed_out = make_alert("timeout", call_id="1714630410.1215", caller="+79161234567", caller_name="Иван Петров",
                           started_at=T0 - 49.0, queues=timeout_queue, decided_at=T0 + 12.5)
    return lost, timed_out


def test_the_documented_payloads_are_what_the_code_sends():
    from onechance.alerts.render import Renderer

    blocks = [json.loads(b) for b in doc_blocks("json")]
    (single,) = [b for b in blocks if b["kind"] == "abandoned"]
    (digest,) = [b for b in blocks if b["kind"] == "digest"]
    r = Renderer.from_settings(None, AlertsSettings(public_url=PUBLIC, timezone="Europe/Tallinn"))
    lost, timed_out = documented_alerts()
    assert single == r.payload(lost)
    assert digest == r.digest_payload([lost, timed_out])


def test_the_docs_list_every_channel_setting_and_template_field():
    from onechance.alerts.render import Renderer

    text = DOCS.read_text(encoding="utf-8")

    def first_column(header: str) -> set[str]:
        table = text[text.index(header):]
        table = table[: table.index("\n\n")]
        return set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines()[2:])))

    assert first_column("| setting | default | meaning |") == set(ChannelSettings.model_fields)
    assert first_column("| field | example | meaning |") == set(Renderer().fields(make_alert()))

"""The Apprise channel through Apprise's generic JSON target (``json://127.0.0.1:PORT/path``) against a real
HTTP receiver on loopback: the text arrives, failures and timeouts are retryable, the event loop keeps running
while Apprise blocks, URLs Apprise cannot use are one-line config errors, and no part of a secret URL reaches
the logs (Apprise and urllib3 log URLs at DEBUG and TRACE)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from onechance.alerts.channels import AppriseChannel, build_channel
from onechance.alerts.channels.common import secret_fragments
from onechance.alerts.model import DeliveryFailed
from onechance.config import AlertsSettings, ChannelSettings, ConfigError

from .alerthelp import HANG, T0, Receiver, closed_port, make_alert, notice

PUBLIC = "https://onechance.example.com"
TOKEN = "Tok3nValue9x"
PATH_SECRET = "S3cretPath7q"


def channel(url: str, *, timeout: float = 5.0, **kw: Any) -> AppriseChannel:
    ch = build_channel(ChannelSettings(name="chat", kind="apprise", url=url, timeout=timeout, **kw),
                       AlertsSettings(public_url=PUBLIC, timezone="Europe/Tallinn"))
    assert isinstance(ch, AppriseChannel)
    return ch


async def test_the_text_arrives_through_apprise():
    async with Receiver() as rx:
        ch = channel(f"json://127.0.0.1:{rx.port}/notify", mask_caller=True)
        assert ch.resolves is False
        await ch.send(notice(make_alert(caller_name="Иван Петров")))
        await ch.aclose()
    (req,) = rx.requests
    assert req.method == "POST" and req.path == "/notify"
    body = req.json()
    assert body["title"] == "Lost caller in support"
    assert body["message"] == ("Lost caller +372 512* **67 (Иван Петров): abandoned after 42 s in support, 09:14. "
                               f"Call back: {PUBLIC}/callbacks")
    assert body["type"] == "failure"


async def test_warnings_go_as_warnings_and_a_channel_template_is_used():
    async with Receiver() as rx:
        ch = channel(f"json://127.0.0.1:{rx.port}/", template="{title}: {caller} {what}")
        await ch.send(notice(make_alert("long_wait")))
        await ch.aclose()
    body = rx.requests[0].json()
    assert body["type"] == "warning" and body["message"] == "Long wait in support: +372 5123 4567 still waiting"


async def test_a_digest_arrives_as_one_message():
    alerts = [make_alert("abandoned", call_id=f"c{i}", decided_at=T0 + i) for i in range(3)]
    async with Receiver() as rx:
        ch = channel(f"json://127.0.0.1:{rx.port}/")
        await ch.send(notice(*alerts, kind="digest"))
        await ch.send(notice(alerts[0], kind="resolved"))  # not for Apprise: ignored
        await ch.aclose()
    (req,) = rx.requests
    body = req.json()
    assert body["title"] == "3 lost callers"
    assert body["message"].startswith("3 lost callers in the last minute:\n- +372 5123 4567 (Jaan Kivi) abandoned")
    assert body["message"].endswith(f"Call back: {PUBLIC}/callbacks")


async def test_a_refusing_service_is_a_retryable_failure():
    async with Receiver(script=[500]) as rx:
        ch = channel(f"json://127.0.0.1:{rx.port}/")
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        await ch.aclose()
    assert exc.value.retryable and str(exc.value) == (
        "Apprise (json://) could not deliver the message (its log says why)")
    assert len(rx.requests) == 1


async def test_a_closed_port_is_a_retryable_failure():
    ch = channel(f"json://127.0.0.1:{closed_port()}/", timeout=3.0)
    with pytest.raises(DeliveryFailed) as exc:
        await ch.send(notice(make_alert()))
    await ch.aclose()
    assert exc.value.retryable


async def test_a_service_that_never_answers_times_out_and_the_loop_keeps_running():
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    async with Receiver(script=[HANG]) as rx:
        ch = channel(f"json://127.0.0.1:{rx.port}/", timeout=1.0)
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        took = time.monotonic() - started
        task.cancel()
        await ch.aclose()
    assert exc.value.retryable and str(exc.value) == "Apprise (json://) did not finish within 1 s"
    assert 0.9 <= took < 3.0, took
    assert ticks >= 10, f"the event loop was blocked while Apprise ran ({ticks} ticks in {took:.1f} s)"


# ---- URLs Apprise cannot use -----------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "scheme"), [
    (f"nosuch://user:{TOKEN}@host/{PATH_SECRET}", "nosuch://"),
    (f"tgram://{TOKEN}/", "tgram://"),  # a Telegram URL without a valid bot token
    (f"hooks.slack.com/services/T0/B0/{TOKEN}", "none"),  # no scheme
    (f"http://user:{TOKEN}@example.com/{PATH_SECRET}", "http://"),  # Apprise wants json:// for a plain POST
    (f"not a url {TOKEN}", "none"),
])
def test_a_url_apprise_cannot_use_is_a_one_line_config_error(url, scheme, caplog):
    caplog.set_level(1)
    apprise_filters = list(logging.getLogger("apprise").filters)
    with pytest.raises(ConfigError) as exc:
        channel(url)
    message = str(exc.value)
    assert message.startswith(f"alerts.channels[chat]: Apprise cannot use this URL (scheme {scheme})")
    assert "\n" not in message and TOKEN not in message and PATH_SECRET not in message
    for record in caplog.records:
        text = record.getMessage()
        assert TOKEN not in text and PATH_SECRET not in text, f"{record.name}: {text}"
    assert logging.getLogger("apprise").filters == apprise_filters, "a refused channel leaves no filter behind"


def test_an_empty_url_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^alerts\.channels\[chat\]: the URL is empty$"):
        channel("")


def test_service_urls_of_the_docs_are_accepted():
    for url in ["slack://T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX/#callbacks",
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
                "tgram://123456789:AAH-bot-token/-1001234567890",
                "mailtos://user:app-password@gmail.com?to=callbacks@example.com",
                "ntfys://ntfy.sh/my-callbacks-topic",
                "workflows://prod-00.westus.logic.azure.com/WORKFLOW/SIGNATURE",
                "matrixs://user:password@matrix.example.org/#callbacks:example.org",
                "pover://user_key@app_token",
                "json://127.0.0.1:1/a, ntfy://ntfy.example.com/topic"]:
        ch = channel(url)
        asyncio.run(ch.aclose())


# ---- secrets never reach the logs --------------------------------------------------------------------------
async def test_no_part_of_the_url_reaches_the_logs_even_at_trace_level(caplog):
    caplog.set_level(1)  # everything, Apprise's TRACE included
    async with Receiver(script=[500]) as rx:
        url = f"json://onechance:{TOKEN}@127.0.0.1:{rx.port}/{PATH_SECRET}?token={TOKEN}x"
        ch = channel(url)
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        await ch.send(notice(make_alert()))
        await ch.aclose()
    assert rx.requests[0].path == f"/{PATH_SECRET}", "the URL must still be used as given"
    assert TOKEN not in str(exc.value) and PATH_SECRET not in str(exc.value)
    logged = [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any(r.name == "apprise" for r in caplog.records), "expected Apprise to log something"
    for line in logged:
        assert TOKEN not in line and PATH_SECRET not in line, line
    assert any("***" in line for line in logged), "expected redacted lines"


async def test_the_log_filter_lives_as_long_as_the_channel():
    before = list(logging.getLogger("apprise").filters)
    ch = channel("json://127.0.0.1:1/x")
    assert len(logging.getLogger("apprise").filters) == len(before) + 1
    assert len(logging.getLogger("urllib3.connectionpool").filters) >= 1
    await ch.aclose()
    assert logging.getLogger("apprise").filters == before


def test_secret_fragments_cover_tokens_but_not_host_names_or_words():
    frags = secret_fragments(f"slack://{TOKEN}/B0123456/XyZ987654321/#callbacks?format=markdown&token={TOKEN}2")
    for secret in (TOKEN, "B0123456", "XyZ987654321", f"{TOKEN}2"):
        assert secret in frags
    for harmless in ("slack", "callbacks", "format", "markdown"):
        assert harmless not in frags
    frags = secret_fragments("mailtos://alerts:pw@smtp.example.com:587?to=team@example.com")
    assert "pw" in frags and "smtp.example.com" not in frags and "587" not in frags
    frags = secret_fragments(f"json://127.0.0.1:8080/{PATH_SECRET}")
    assert PATH_SECRET in frags and "127.0.0.1" not in frags

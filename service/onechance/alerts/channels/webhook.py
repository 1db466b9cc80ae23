"""The webhook channel: a signed JSON POST of the versioned payload (see docs/alerts.md).

Headers: ``Content-Type: application/json``, ``Idempotency-Key`` (the same on every attempt of one delivery),
``X-Onechance-Timestamp`` (UNIX seconds when the attempt was made) and, with a ``secret``,
``X-Onechance-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.  A receiver recomputes the
HMAC over the raw body, compares in constant time and refuses timestamps too far from its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from ..model import DeliveryFailed, Notice
from ..render import Renderer
from .common import HttpPoster

__all__ = ["MAX_SKEW_SECONDS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel", "encode", "sign"]

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Onechance-Timestamp"
SIGNATURE_HEADER = "X-Onechance-Signature"
#: what the docs advise receivers to accept between the timestamp and their clock
MAX_SKEW_SECONDS = 300


def encode(payload: Any) -> bytes:
    """The body: compact UTF-8 JSON (non-Latin names as themselves, not ``\\u`` escapes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Onechance-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``f"{timestamp}.".encode() + body``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class WebhookChannel:
    """POSTs each alert (or digest) as JSON; does not take ``resolved`` notices."""

    def __init__(self, name: str, url: str, secret: str, renderer: Renderer, timeout: float) -> None:
        self.name = name
        self.renderer = renderer
        self._secret = secret
        self._http = HttpPoster(url, timeout)

    @property
    def resolves(self) -> bool:
        return False

    @property
    def origin(self) -> str:
        return self._http.origin

    async def send(self, notice: Notice) -> None:
        if notice.kind == "resolved":
            log.debug("webhook channel %s: a resolved notice is not sent to webhooks (ignored)", self.name)
            return
        if not notice.alerts:
            return
        try:
            body = encode(self.renderer.notice_payload(notice))
        except Exception as exc:  # the contract: DeliveryFailed, never anything else
            raise DeliveryFailed(f"cannot render the notice ({type(exc).__name__})", retryable=False) from None
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": notice.idempotency_key,
            TIMESTAMP_HEADER: timestamp,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        await self._http.post(body, headers)

    async def aclose(self) -> None:
        await self._http.aclose()

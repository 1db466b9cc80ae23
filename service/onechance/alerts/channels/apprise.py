"""The Apprise channel: any Apprise URL (Slack, Telegram, Microsoft Teams, e-mail, ntfy, Matrix, Pushover...)
through the Apprise library, whose blocking ``notify`` runs in a worker thread, bounded by the channel's
timeout.  The URL is checked when the channel is built: one Apprise cannot use is a configuration error.

Apprise and urllib3 log request URLs at DEBUG (and parsed URLs at Apprise's TRACE level); while the channel
exists, a :class:`~onechance.alerts.channels.common.RedactingFilter` on their loggers replaces every part of
the channel's URL that may be secret by ``***``.
"""

from __future__ import annotations

import asyncio
import logging
import re

import apprise as apprise_lib

from ...config import ConfigError
from ..model import DeliveryFailed, Notice
from ..render import LOST_KINDS, Renderer
from .common import RedactingFilter, secret_fragments

__all__ = ["AppriseChannel", "apprise_scheme"]

#: the loggers that may print a channel's URL
_LOGGERS = ("apprise", "urllib3.connectionpool")
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.\-]*)://")


def apprise_scheme(url: str) -> str:
    """What may be shown of an Apprise URL: its scheme (the host part may be a token: ``tgram://TOKEN/``)."""
    m = _SCHEME.match(url)
    return f"{m.group(1).lower()}://" if m else "none"


class AppriseChannel:
    """Sends the text of each alert (or digest) through Apprise; does not take ``resolved`` notices."""

    def __init__(self, name: str, url: str, renderer: Renderer, timeout: float) -> None:
        self.name = name
        self.renderer = renderer
        self.timeout = timeout
        self.scheme = apprise_scheme(url)
        self._filter = RedactingFilter(secret_fragments(url))
        self._guarded = False
        self._guard_logs()
        try:
            asset = apprise_lib.AppriseAsset(storage_mode="memory")
            self._apprise = apprise_lib.Apprise(asset=asset)
            if not url.strip() or not self._apprise.add(url) or len(self._apprise) == 0:
                raise ConfigError(f"alerts.channels[{name}]: Apprise cannot use this URL (scheme {self.scheme}): "
                                  "an unknown service or a malformed URL; see the Apprise wiki for its form")
            for service in self._apprise:
                # no request may outlive the attempt by much: the worker thread cannot be cancelled
                for attr in ("socket_connect_timeout", "socket_read_timeout"):
                    if hasattr(service, attr):
                        setattr(service, attr, timeout)
        except BaseException:
            self._release_logs()
            raise

    @property
    def resolves(self) -> bool:
        return False

    def _guard_logs(self) -> None:
        if not self._guarded:
            for name in _LOGGERS:
                logging.getLogger(name).addFilter(self._filter)
            self._guarded = True

    def _release_logs(self) -> None:
        for name in _LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        self._guarded = False

    def _notify(self, title: str, body: str, notify_type: str) -> bool:
        return bool(self._apprise.notify(body=body, title=title, notify_type=notify_type, body_format="text"))

    async def send(self, notice: Notice) -> None:
        if notice.kind == "resolved" or not notice.alerts:
            return
        try:
            title = self.renderer.notice_title(notice)
            body = self.renderer.notice_text(notice)
        except Exception as exc:  # the contract: DeliveryFailed, never anything else
            raise DeliveryFailed(f"cannot render the notice ({type(exc).__name__})", retryable=False) from None
        lost = any(a.kind in LOST_KINDS for a in notice.alerts)
        self._guard_logs()  # again, should it be used after aclose()
        try:
            async with asyncio.timeout(self.timeout):
                ok = await asyncio.to_thread(self._notify, title, body, "failure" if lost else "warning")
        except TimeoutError:
            raise DeliveryFailed(f"Apprise ({self.scheme}) did not finish within {self.timeout:g} s",
                                 retryable=True) from None
        except Exception as exc:  # the contract: DeliveryFailed, never anything else
            raise DeliveryFailed(f"Apprise ({self.scheme}) failed: {type(exc).__name__}", retryable=True) from None
        if not ok:
            raise DeliveryFailed(f"Apprise ({self.scheme}) could not deliver the message (its log says why)",
                                 retryable=True)

    async def aclose(self) -> None:
        self._release_logs()

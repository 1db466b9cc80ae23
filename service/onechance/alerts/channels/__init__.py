"""Delivery channels: ``[[alerts.channels]]`` entries made into :class:`~onechance.alerts.model.Channel` objects.

* ``webhook``: a signed JSON POST of the versioned payload (:mod:`.webhook`);
* ``alertmanager``: Alertmanager's ``POST /api/v2/alerts``, resolved when the caller is reached
  (:mod:`.alertmanager`);
* ``apprise``: any Apprise URL, through the Apprise library (:mod:`.apprise`).

:func:`build_channel` checks everything it can at start (the URL, the template, the time zone) and raises
:class:`~onechance.config.ConfigError` with one line; the URL is a secret and is never shown whole.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import AlertsSettings, ChannelSettings, ConfigError
from ..model import Channel
from ..render import Renderer
from .alertmanager import AlertmanagerChannel
from .apprise import AppriseChannel
from .common import safe_origin
from .webhook import WebhookChannel

__all__ = ["AlertmanagerChannel", "AppriseChannel", "WebhookChannel", "build_channel"]


def _check_http_url(where: str, kind: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(f"{where}: the {kind} URL must be http://HOST... or https://HOST... "
                          f"(got {safe_origin(url)})")


def build_channel(settings: ChannelSettings, alerts: AlertsSettings, *, region: str | None = None) -> Channel:
    """The channel of one ``[[alerts.channels]]`` entry.  ``region`` (``journey.default_region``) reads caller
    numbers written without a country code.  Raises :class:`ConfigError` (one line) for a URL it cannot use,
    a secret where none is used, a template that cannot be rendered or an unknown ``alerts.timezone``."""
    where = f"alerts.channels[{settings.name}]"
    url = settings.resolved_url().strip()
    if not url:
        raise ConfigError(f"{where}: the URL is empty")
    renderer = Renderer.from_settings(settings, alerts, region)
    secret = settings.resolved_secret() if (settings.secret or settings.secret_file) else ""
    if secret and settings.kind != "webhook":
        raise ConfigError(f"{where}: secret/secret_file only sign webhooks; a {settings.kind} channel has no use "
                          "for it (put credentials in the URL)")
    if settings.kind == "webhook":
        _check_http_url(where, "webhook", url)
        return WebhookChannel(settings.name, url, secret, renderer, settings.timeout)
    if settings.kind == "alertmanager":
        _check_http_url(where, "alertmanager", url)
        return AlertmanagerChannel(settings.name, url, renderer, settings.timeout, settings.repeat_interval)
    if settings.kind == "apprise":
        return AppriseChannel(settings.name, url, renderer, settings.timeout)
    raise ConfigError(f"{where}: unknown channel kind {settings.kind!r}")  # pragma: no cover - pydantic refuses it

"""Secrets never shown: URLs masked for messages, and every configured secret replaced in every log line.

* :func:`mask_url` hides a URL's password and the value of every query parameter but a few known harmless
  ones (``sslmode``, ``timeout``...): ``postgresql://u:pw@h/db?password=x&sslmode=require`` is shown as
  ``postgresql://u:********@h/db?password=********&sslmode=require`` (the store's messages show ``***``, as
  SQLAlchemy does).
* :func:`secret_values` lists every secret the settings hold (AMI secrets, the API token, the database
  password, wherever in its URL it is, alert channel URLs and signing keys, those read from files included)
  and the pieces of them that may show up alone (a URL's password, its query values, its path's tokens).
* :class:`RedactingFormatter` formats a record as usual, traceback included, then replaces each of those by
  ``***``: whatever a library prints (an exception carrying a URL, a request line with a token), no secret
  reaches the log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["MASK", "REDACTED", "RedactingFormatter", "install", "mask_url", "redact", "secret_values"]

MASK = "********"  # what a masked URL shows (check-config's mask of every secret)
REDACTED = "***"  # what a secret becomes in a log line
#: query parameters of database and webhook URLs whose values are never secret (everything else is masked)
SAFE_QUERY_KEYS = frozenset({
    "ssl", "sslmode", "timeout", "connect_timeout", "command_timeout", "application_name",
    "target_session_attrs", "prepared_statement_cache_size", "prepared_statement_name_func", "charset",
    "mode", "cache", "uri", "check_same_thread", "isolation_level", "options", "host", "port", "dbname",
    "user", "username", "format", "channel",
})
#: a secret shorter than this is not replaced in logs (it would mangle every line); config validation says so
MIN_SECRET = 4


def mask_url(url: str, mask: str = MASK) -> str:
    """The URL with its password and every query value but the harmless ones hidden (``********``, or
    ``mask``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{mask}@{hostport}" if colon else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={v if k.lower() in SAFE_QUERY_KEYS else mask}" for k, v in pairs)
    out = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme or netloc else parts.path
    if query:
        out += f"?{query}"
    if parts.fragment:
        out += f"#{mask}"
    return out


def url_secrets(url: str, path_tokens: bool = False) -> list[str]:
    """The pieces of a URL that are secret on their own: its password, its query values (but the harmless
    ones) and, with ``path_tokens``, its path and the long segments of it (webhook URLs carry their token
    there: ``/services/T0/B0/XXXX``).  The whole URL first when any of them is there."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    out = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        _user, colon, password = userinfo.partition(":")
        if colon and password:
            out += [password, unquote(password)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() not in SAFE_QUERY_KEYS and value:
            out.append(value)
    if path_tokens and parts.path.strip("/"):
        out.append(parts.path)
        out += [seg for seg in parts.path.split("/") if len(seg) >= 8]
    return [url, *out] if out or path_tokens else []


def secret_values(settings: Settings) -> list[str]:
    """Every secret of ``settings``, longest first (files read; one that cannot be read is skipped here:
    starting reports it anyway)."""
    from .config import ConfigError

    found: list[str] = []

    def add(get: Callable[[], str | None]) -> None:
        try:
            value = get()
        except (ConfigError, OSError):
            return
        if value:
            found.append(value)

    for pbx in [settings.ami, *settings.pbx]:
        add(pbx.resolved_secret)
    add(lambda: settings.http.token.get_secret_value() if settings.http.token is not None else None)
    add(settings.database.resolved_password)
    with contextlib.suppress(ConfigError, OSError):
        found += url_secrets(settings.database_url())
    for channel in settings.alerts.channels:
        with contextlib.suppress(ConfigError, OSError):
            found += url_secrets(channel.resolved_url(), path_tokens=True)
        add(channel.resolved_secret)
    return sorted({s for s in found if len(s) >= MIN_SECRET}, key=len, reverse=True)


def _variants(secret: str) -> list[str]:
    return list(dict.fromkeys([secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]]))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and its URL-encoded forms) replaced by ``***``."""
    for secret in secrets:
        for form in _variants(secret):
            if form and form in text:
                text = text.replace(form, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces every secret in the whole formatted record (message, arguments, traceback,
    stack) by ``***``."""

    def __init__(self, fmt: str | None = None, secrets: Iterable[str] = (), **kw: object) -> None:
        super().__init__(fmt, **kw)  # type: ignore[arg-type]
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return redact(text, self.secrets) if self.secrets else text


def install(settings: Settings, fmt: str) -> None:
    """Every handler of the root logger formats through :class:`RedactingFormatter` with the settings'
    secrets (call once logging is configured)."""
    secrets = secret_values(settings)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(fmt, secrets))

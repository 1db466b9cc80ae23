"""What the channels share: showing a secret URL safely, one HTTP session per channel, the mapping of HTTP
outcomes to :class:`~onechance.alerts.model.DeliveryFailed`, and a log filter that keeps third-party
libraries from logging a channel's secrets.

A channel URL is a secret (a Slack webhook path, a bot token, a password): messages show at most
``scheme://host`` (:func:`safe_origin`), for Apprise URLs only the scheme.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp

from ... import __version__
from ..model import DeliveryFailed

__all__ = ["USER_AGENT", "HttpPoster", "RedactingFilter", "safe_origin", "secret_fragments"]

USER_AGENT = f"onechance/{__version__}"
_HOST_OK = re.compile(r"[A-Za-z0-9.\-_\[\]:%]+")
_DNS_NAME = re.compile(r"(?=.*\.)[A-Za-z0-9\-.]+")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_PLAIN_WORD = re.compile(r"[a-z\-_]{1,16}")
_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")


def safe_origin(url: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL: never its user, password, path or query (they may hold
    secrets); only ``scheme://`` for other schemes."""
    scheme, sep, _rest = url.partition("://")
    if not sep or not scheme:
        return "(a URL without scheme://)"
    if scheme.lower() not in ("http", "https"):
        return f"{scheme.lower()}://"  # another scheme's host part may be a token (slack://TOKEN/...)
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return f"{scheme.lower()}://?"
    host = netloc.rpartition("@")[2]
    if not host or not _HOST_OK.fullmatch(host):
        return f"{scheme.lower()}://?"
    return f"{scheme.lower()}://{host}"


def secret_fragments(url: str) -> list[str]:
    """The parts of a URL that may be secret (for :class:`RedactingFilter`): the URL itself, its password,
    every path segment, host and query value that looks like a token (anything but a DNS name, an IPv4
    address, a port or a plain lowercase word)."""
    out: set[str] = {url}
    _scheme, sep, rest = url.partition("://")
    if sep:
        out.add(rest)
    try:
        parts = urlsplit(url)
        if parts.password:
            out.update({parts.password, unquote(parts.password)})
        out.update(v for _k, v in parse_qsl(parts.query) if len(v) >= 3)
    except ValueError:
        pass
    for token in _SPLIT.split(rest if sep else url):
        for form in {token, unquote(token)}:
            if len(form) < 5 or (form.isdigit() and len(form) == 5):  # short, or a port
                continue
            if _DNS_NAME.fullmatch(form) and any(ch.isalpha() for ch in form.rpartition(".")[2]):
                continue  # a host name such as hooks.slack.com
            if _IPV4.fullmatch(form):
                continue  # an address
            if _PLAIN_WORD.fullmatch(form):
                continue  # a word such as services, webhook
            out.add(form)
    return sorted((f for f in out if f), key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Replaces the given fragments by ``***`` in every record it sees (message, arguments, traceback)."""

    def __init__(self, fragments: Iterable[str]) -> None:
        super().__init__()
        self.fragments = sorted({f for f in fragments if f}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for fragment in self.fragments:
            if fragment in text:
                text = text.replace(fragment, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix; drop its arguments
            message = str(record.msg)
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def retry_after_of(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class HttpPoster:
    """POSTs to one URL through one :class:`aiohttp.ClientSession` (created on first use inside the running
    loop, closed by :meth:`aclose`); every attempt is bounded by ``timeout`` seconds; every outcome but a 2xx
    becomes a :class:`DeliveryFailed`, nothing else escapes."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self.origin = safe_origin(url)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def post(self, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body``; returns the 2xx status, raises :class:`DeliveryFailed` for anything else."""
        origin = self.origin
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client().post(self._url, data=body, headers=dict(headers),
                                               allow_redirects=False) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        await resp.read()
                        return status
                    text = _snippet((await resp.content.read(4096)).decode("utf-8", errors="replace"))
                    retry_after = retry_after_of(resp.headers.get("Retry-After"))
                    reason = resp.reason or ""
        except TimeoutError:
            raise DeliveryFailed(f"no answer from {origin} within {self.timeout:g} s", retryable=True) from None
        except aiohttp.ClientConnectorCertificateError:
            raise DeliveryFailed(f"the TLS certificate of {origin} was not accepted", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            why = exc.os_error.strerror or type(exc.os_error).__name__
            raise DeliveryFailed(f"cannot connect to {origin}: {why}", retryable=True) from None
        except aiohttp.ServerDisconnectedError:
            raise DeliveryFailed(f"{origin} closed the connection without an answer", retryable=True) from None
        except aiohttp.InvalidURL:
            raise DeliveryFailed(f"the URL of {origin} is not valid", retryable=False) from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__} talking to {origin}", retryable=True) from None
        except OSError as exc:
            raise DeliveryFailed(f"cannot reach {origin}: {exc.strerror or type(exc).__name__}",
                                 retryable=True) from None
        except Exception as exc:  # the contract: DeliveryFailed, never anything else
            raise DeliveryFailed(f"unexpected {type(exc).__name__} talking to {origin}", retryable=True) from None
        detail = f"HTTP {status}{' ' + reason if reason else ''} from {origin}"
        if 300 <= status < 400:
            raise DeliveryFailed(f"{detail}: redirects are not followed (configure the final URL)",
                                 retryable=False)
        if text:
            detail = f"{detail}: {text}"
        raise DeliveryFailed(detail, retryable=_retryable_status(status), retry_after=retry_after)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

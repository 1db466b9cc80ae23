"""What an alert says: the human text (a template) and the versioned webhook payload.

Every channel renders through a :class:`Renderer` built once per channel from its settings
(:meth:`Renderer.from_settings`): the template (the channel's, else ``alerts.template``), ``alerts.public_url``
for the links, ``alerts.timezone`` for times, the channel's ``mask_caller``, and the phone number region.

The template is ``str.format_map`` over a safe mapping: an unknown field renders as itself (``{nope}`` stays
``{nope}``) and rendering never raises (a template that cannot be rendered is refused at start, see
:meth:`Renderer.check`).  Fields (all strings unless said otherwise):

``caller``        the caller's number, formatted with ``phonenumbers`` (``+372 5123 4567``), masked when the
                  channel says ``mask_caller``; ``withheld number`` / ``unknown number`` when there is none
``caller_name``   the caller's name ('' when Asterisk gave none or only a number)
``what``          what happened, in words: ``abandoned``, ``timed out``, ``refused by the queue``,
                  ``left the queue for voicemail (key 1)``, ``bounced between 3 operators``, ``still waiting``
``title``         a short headline: ``Lost caller in support``, ``Bounced call in support``, ``Long wait in support``
``kind``          the alert kind (``abandoned``, ``timeout``, ``rejected``, ``exited``, ``bounced``, ``long_wait``)
``wait``          whole seconds the caller waited in queues (an int: ``{wait:>4}`` works)
``queue``         the queue (``no queue`` when none)
``time``/``date`` when it was decided, ``HH:MM`` / ``YYYY-MM-DD`` in ``alerts.timezone`` (unset: the machine's)
``link``          the callback page, ``{public_url}/callbacks``
``call_link``     the call in the API, ``{public_url}/api/calls/{call_id}?pbx={pbx}``
``pbx``, ``call_id``, ``id`` (the alert id)
``operators``     the operators who had the call, comma-separated (``none``)
``transfers``     how many times the call was transferred (an int)

``({caller_name})`` with an empty name is left out with the space before it, so the default template reads
``Lost caller +372 5123 4567: abandoned ...`` for a caller without a name.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from ..config import DEFAULT_TEMPLATE, AlertsSettings, ChannelSettings, ConfigError
from ..journey import AlertKind, CallRecord
from ..journey.numbers import NO_CALLER_NUMBER
from .model import PAYLOAD_VERSION, Alert, Notice, caller_masked

__all__ = [
    "BOUNCED_TEMPLATE",
    "DIGEST_LIMIT",
    "LONG_WAIT_TEMPLATE",
    "LOST_KINDS",
    "Renderer",
    "caller_name_of",
    "format_number",
    "iso8601",
    "sample_record",
    "severity_of",
    "wait_of",
    "what_of",
]

#: the kinds that mean a caller was lost (critical); bounced and long_wait are warnings
LOST_KINDS = frozenset({AlertKind.ABANDONED, AlertKind.TIMEOUT, AlertKind.REJECTED, AlertKind.EXITED})
#: used instead of the default template (only when the default is in effect) for the kinds that are no loss
BOUNCED_TEMPLATE = "Bounced call {caller} ({caller_name}): {what} in {queue}, {time}. Call: {call_link}"
LONG_WAIT_TEMPLATE = ("Long wait: caller {caller} ({caller_name}) {what} after {wait} s in {queue}, {time}. "
                      "Call: {call_link}")
#: a digest's text lists this many alerts, then "... and N more"
DIGEST_LIMIT = 10

_WITHHELD = frozenset({"anonymous", "restricted", "private", "unavailable"})
_NUMBER_LIKE = re.compile(r"[\d\s+\-().*#/]*")
_EMPTY_NAME = re.compile(r"[ \t]*\(\{caller_name\}\)")


# ---- small pieces ---------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def format_number(number: str, region: str | None = None) -> str:
    """A caller number for people: ``+3725123456`` -> ``+372 512 3456``, ``0037...`` read as ``+37...``,
    a national number read in ``region``; anything that is no possible phone number (an extension such as
    ``201``) stays as given."""
    text = number.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        return text
    candidates = [text]
    if text.startswith("00"):
        candidates.append("+" + digits[2:])
    for candidate in candidates:
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    return text


def iso8601(ts: float) -> str:
    """A UNIX time as RFC 3339 / ISO 8601 in UTC with milliseconds: ``2024-05-02T06:14:03.120Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def caller_name_of(record: CallRecord) -> str:
    """The caller's name, '' when Asterisk gave none or only a number (a number is no name, and would
    escape masking)."""
    name = record.caller_name.strip()
    if name in NO_CALLER_NUMBER or name.lower() in _WITHHELD or _NUMBER_LIKE.fullmatch(name):
        return ""
    return name


def wait_of(alert: Alert) -> float:
    """Seconds the caller waited in queues up to the alert (a visit still open counts up to the decision)."""
    total = 0.0
    for v in alert.record.queues:
        if v.left_at is None:
            total += max(v.wait_seconds, alert.decided_at - v.joined_at)
        else:
            total += v.wait_seconds
    return round(max(total, 0.0), 3)


def what_of(alert: Alert) -> str:
    """What happened to the caller, in words."""
    kind = alert.kind
    record = alert.record
    if kind == AlertKind.ABANDONED:
        return "abandoned"
    if kind == AlertKind.TIMEOUT:
        return "timed out"
    if kind == AlertKind.REJECTED:
        return "refused by the queue"
    if kind == AlertKind.EXITED:
        key = record.exit_key or next((v.exit_key for v in reversed(record.queues)
                                       if v.exit_key and v.queue == alert.queue), None)
        return f"left the queue for voicemail (key {key})" if key else "left the queue for voicemail"
    if kind == AlertKind.BOUNCED:
        operators = len(dict.fromkeys(record.operators))
        if operators >= 2:
            return f"bounced between {operators} operators"
        count = len(record.transfers)
        return f"transferred {count} time{'s' if count != 1 else ''}"
    if kind == AlertKind.LONG_WAIT:
        return "still waiting"
    return str(kind)


def severity_of(kind: AlertKind) -> str:
    return "critical" if kind in LOST_KINDS else "warning"


class _Unknown:
    """What an unknown template field renders as: itself, with its format spec, attributes and indexes."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __format__(self, spec: str) -> str:
        return "{" + self.text + (":" + spec if spec else "") + "}"

    def __str__(self) -> str:
        return "{" + self.text + "}"

    __repr__ = __str__

    def __getattr__(self, name: str) -> _Unknown:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unknown(f"{self.text}.{name}")

    def __getitem__(self, key: object) -> _Unknown:
        return _Unknown(f"{self.text}[{key}]")


class _SafeFields(dict[str, Any]):
    def __missing__(self, key: str) -> _Unknown:
        return _Unknown(key)


def _render(template: str, fields: Mapping[str, Any]) -> str:
    return template.format_map(_SafeFields(fields))


# ---- the renderer ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Renderer:
    """Renders alerts for one channel.  Pure: same alert, same output (no clock reads)."""

    template: str = DEFAULT_TEMPLATE
    public_url: str = "http://127.0.0.1:9648"
    zone: tzinfo | None = None  # None: the machine's time zone
    mask_caller: bool = False
    region: str | None = None  # phone number region for numbers without a country code

    @classmethod
    def from_settings(cls, channel: ChannelSettings | None, alerts: AlertsSettings,
                      region: str | None = None) -> Renderer:
        """The renderer of a channel; :class:`ConfigError` for an unknown time zone or a template that cannot
        be rendered."""
        where = f"alerts.channels[{channel.name}]" if channel is not None else "alerts"
        zone: tzinfo | None = None
        if alerts.timezone:
            try:
                zone = ZoneInfo(alerts.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"alerts.timezone: unknown time zone {alerts.timezone!r} "
                                  "(an IANA name such as Europe/Tallinn)") from None
        template = channel.template if channel is not None and channel.template is not None else alerts.template
        renderer = cls(template=template, public_url=alerts.public_url.rstrip("/"), zone=zone,
                       mask_caller=channel.mask_caller if channel is not None else False, region=region)
        problem = renderer.check()
        if problem:
            own = channel is not None and channel.template is not None
            raise ConfigError(f"{where + '.template' if own else 'alerts.template'}: {problem}")
        return renderer

    # ---- checks ------------------------------------------------------------------------------------------
    def check(self) -> str | None:
        """Why the template cannot be rendered (None: it can).  Tried on every kind of a sample call."""
        try:
            list(string.Formatter().parse(self.template))
        except ValueError as exc:
            return f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        sample = _sample_alerts()
        for alert in sample:
            try:
                _render(self._template_for(alert, self._fields_for(alert)), self._fields_for(alert))
            except Exception as exc:  # any failure of a user's template is a config error
                return f"cannot be rendered ({type(exc).__name__}: {exc})"
        return None

    # ---- fields ------------------------------------------------------------------------------------------
    def caller(self, record: CallRecord) -> str:
        """The caller's number for people (formatted, masked when the channel says so)."""
        raw = record.caller.strip()
        if raw.lower() in _WITHHELD:
            return "withheld number"
        if raw in NO_CALLER_NUMBER or not any(ch.isdigit() for ch in raw):
            return "unknown number" if not raw or raw in NO_CALLER_NUMBER else raw
        shown = format_number(raw, self.region)
        return caller_masked(shown) if self.mask_caller else shown

    def caller_raw(self, record: CallRecord) -> str:
        """The number as Asterisk gave it (masked when the channel says so): the payload's ``caller``."""
        raw = record.caller.strip()
        if self.mask_caller and any(ch.isdigit() for ch in raw):
            return caller_masked(raw)
        return raw

    def queue_of(self, alert: Alert) -> str:
        return alert.queue or alert.record.last_queue or "no queue"

    def title(self, alert: Alert) -> str:
        queue = self.queue_of(alert)
        if alert.kind in LOST_KINDS:
            return f"Lost caller in {queue}"
        if alert.kind == AlertKind.BOUNCED:
            return f"Bounced call in {queue}"
        return f"Long wait in {queue}"

    def local(self, ts: float) -> datetime:
        if self.zone is None:
            return datetime.fromtimestamp(ts).astimezone()
        return datetime.fromtimestamp(ts, self.zone)

    def callbacks_link(self) -> str:
        return f"{self.public_url}/callbacks"

    def call_link(self, record: CallRecord) -> str:
        return f"{self.public_url}/api/calls/{quote(record.call_id, safe='')}?pbx={quote(record.pbx, safe='')}"

    def fields(self, alert: Alert) -> dict[str, Any]:
        """The template's fields for one alert."""
        return self._fields_for(alert)

    def _fields_for(self, alert: Alert) -> dict[str, Any]:
        r = alert.record
        when = self.local(alert.decided_at)
        operators = list(dict.fromkeys(r.operators))
        return {
            "caller": self.caller(r),
            "caller_name": caller_name_of(r),
            "what": what_of(alert),
            "title": self.title(alert),
            "kind": str(alert.kind),
            "wait": round(wait_of(alert)),
            "queue": self.queue_of(alert),
            "time": when.strftime("%H:%M"),
            "date": when.strftime("%Y-%m-%d"),
            "link": self.callbacks_link(),
            "call_link": self.call_link(r),
            "pbx": r.pbx,
            "call_id": r.call_id,
            "id": alert.id,
            "operators": ", ".join(operators) if operators else "none",
            "transfers": len(r.transfers),
        }

    def _template_for(self, alert: Alert, fields: Mapping[str, Any]) -> str:
        template = self.template
        if template == DEFAULT_TEMPLATE and alert.kind not in LOST_KINDS:
            template = BOUNCED_TEMPLATE if alert.kind == AlertKind.BOUNCED else LONG_WAIT_TEMPLATE
        if not fields.get("caller_name"):
            template = _EMPTY_NAME.sub("", template)
        return template

    # ---- text --------------------------------------------------------------------------------------------
    def text(self, alert: Alert) -> str:
        """The message of one alert.  Never raises: a failing template (checked at start, so only in odd
        cases) falls back to the default one."""
        fields = self._fields_for(alert)
        try:
            return _render(self._template_for(alert, fields), fields)
        except Exception:  # a message must always go out
            fallback = Renderer(DEFAULT_TEMPLATE, self.public_url, self.zone, self.mask_caller, self.region)
            return _render(fallback._template_for(alert, fields), fields)

    def line(self, alert: Alert) -> str:
        """One alert in a digest: ``+372 5123 4567 (Jaan Kivi) abandoned after 42 s in support, 09:14``."""
        f = self._fields_for(alert)
        who = f"{f['caller']} ({f['caller_name']})" if f["caller_name"] else f["caller"]
        if alert.kind == AlertKind.BOUNCED:
            return f"{who} {f['what']} in {f['queue']}, {f['time']}"
        return f"{who} {f['what']} after {f['wait']} s in {f['queue']}, {f['time']}"

    def digest_title(self, alerts: Sequence[Alert]) -> str:
        n = len(alerts)
        if alerts and all(a.kind in LOST_KINDS for a in alerts):
            return f"{n} lost caller{'s' if n != 1 else ''}"
        return f"{n} alert{'s' if n != 1 else ''}"

    def digest_text(self, alerts: Sequence[Alert]) -> str:
        """``12 lost callers in the last minute:`` then one line per alert (at most :data:`DIGEST_LIMIT`),
        ``... and N more``, and the callback link."""
        if not alerts:
            return f"No alerts. Call back: {self.callbacks_link()}"
        times = [a.decided_at for a in alerts]
        if max(times) - min(times) <= 60:
            span = "in the last minute"
        else:
            span = f"since {self.local(min(times)).strftime('%H:%M')}"
        ordered = sorted(alerts, key=lambda a: a.decided_at)
        lines = [f"{self.digest_title(alerts)} {span}:"]
        lines += [f"- {self.line(a)}" for a in ordered[:DIGEST_LIMIT]]
        if len(ordered) > DIGEST_LIMIT:
            lines.append(f"... and {len(ordered) - DIGEST_LIMIT} more")
        lines.append(f"Call back: {self.callbacks_link()}")
        return "\n".join(lines)

    def notice_title(self, notice: Notice) -> str:
        if notice.kind == "digest" or len(notice.alerts) != 1:
            return self.digest_title(notice.alerts)
        return self.title(notice.alerts[0])

    def notice_text(self, notice: Notice) -> str:
        if notice.kind == "digest" or len(notice.alerts) != 1:
            return self.digest_text(notice.alerts)
        return self.text(notice.alerts[0])

    # ---- the webhook payload -----------------------------------------------------------------------------
    def payload(self, alert: Alert) -> dict[str, Any]:
        """The webhook payload of one alert (version :data:`~onechance.alerts.model.PAYLOAD_VERSION`)."""
        r = alert.record
        return {
            "version": PAYLOAD_VERSION,
            "kind": str(alert.kind),
            "id": alert.id,
            "pbx": r.pbx,
            "call_id": r.call_id,
            "queue": alert.queue,
            "caller": self.caller_raw(r),
            "caller_display": self.caller(r),
            "caller_name": caller_name_of(r),
            "masked": self.mask_caller,
            "severity": severity_of(alert.kind),
            "what": what_of(alert),
            "wait_seconds": wait_of(alert),
            "operators": list(r.operators),
            "transfers": [dict(t.to_json()) for t in r.transfers],
            "started_at": r.started_at,
            "started_at_iso": iso8601(r.started_at),
            "decided_at": alert.decided_at,
            "decided_at_iso": iso8601(alert.decided_at),
            "link": self.callbacks_link(),
            "call_link": self.call_link(r),
            "title": self.title(alert),
            "text": self.text(alert),
        }

    def digest_payload(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        return {
            "version": PAYLOAD_VERSION,
            "kind": "digest",
            "count": len(alerts),
            "alerts": [self.payload(a) for a in alerts],
            "link": self.callbacks_link(),
            "title": self.digest_title(alerts),
            "text": self.digest_text(alerts),
        }

    def notice_payload(self, notice: Notice) -> dict[str, Any]:
        """A notice as the webhook sends it: one alert's payload, or a digest."""
        if notice.kind == "digest" or len(notice.alerts) != 1:
            return self.digest_payload(notice.alerts)
        return self.payload(notice.alerts[0])


# ---- a sample call, to try templates on ------------------------------------------------------------------
def sample_record(**overrides: Any) -> CallRecord:
    """A plausible lost call (for checking templates, and the docs' examples)."""
    data: dict[str, Any] = {
        "call_id": "1714630443.1207",
        "pbx": "main",
        "caller": "+37251234567",
        "caller_name": "Jaan Kivi",
        "started_at": 1714630401.0,
        "ended_at": 1714630443.5,
        "outcome": "abandoned",
        "lost": True,
        "queues": [{"queue": "support", "joined_at": 1714630401.5, "left_at": 1714630443.5,
                    "wait_seconds": 42.0, "result": "abandoned", "callid": "1714630401.1201"}],
        "updated_at": 1714630443.5,
    }
    data.update(overrides)
    return CallRecord.from_json(data)


def _sample_alerts() -> Iterable[Alert]:
    record = sample_record()
    for kind in AlertKind:
        yield Alert(id="0" * 32, kind=kind, record=record, queue="support", decided_at=1714630443.5,
                    raised_at=1714630443.6)

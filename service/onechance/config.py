"""Settings: a TOML file plus ``ONECHANCE_*`` environment variables (pydantic-settings).

Precedence, highest first: environment variables (``ONECHANCE_AMI__HOST``, nested with ``__``), the
TOML file (``--config FILE`` or ``ONECHANCE_CONFIG``), then the defaults below.  Settings grow by
sections: each concern (``ami``, ``http``, ``database``, ``journey``, ``alerts``...) owns one model.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .journey import TrackerSettings

AlertKindName = Literal["abandoned", "timeout", "rejected", "exited", "bounced", "long_wait"]

CONFIG_ENV = "ONECHANCE_CONFIG"
DEFAULT_DATA_DIR = "./data"



def _plain_name(v: str) -> str:
    """A PBX's or a channel's name: a label value and part of ids, so letters, digits, ``-``, ``_``, ``.``."""
    if not v or not all(c.isalnum() or c in "-_." for c in v):
        raise ValueError("must be letters, digits, '-', '_' or '.'")
    return v

class ConfigError(Exception):
    """Bad configuration; the message says what and where, in one or a few lines."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmiSettings(_Section):
    """How to reach one Asterisk manager interface."""

    name: str = Field("default", description=(
        "The PBX's name: the `pbx` label on metrics, journeys and alerts; letters, digits, `-`, `_`, `.`; unique "
        "among `[[pbx]]` tables (`onechance demo` calls its PBX `demo` unless this is set)"))
    host: str | None = Field(None, description=(
        "Asterisk's address (host name or IP); `onechance run` refuses to start (exit 2) without it or "
        "`[[pbx]]` tables"))
    port: int = Field(5038, ge=1, le=65535, description="Asterisk's manager (AMI) TCP port (manager.conf `port`)")
    username: str = Field("onechance", description=(
        "The manager user: a section of Asterisk's manager.conf (`[onechance]` in asterisk-conf/manager.conf)"))
    secret: SecretStr | None = Field(None, description=(
        "The manager user's `secret`; `onechance run` needs it or `secret_file` (not both); never logged"))
    secret_file: Path | None = Field(None, description=(
        "A file holding the secret (leading and trailing white space ignored); not with `secret`"))
    events: str = Field("call,agent,system,dialplan,dtmf", description=(
        "The Login `Events:` mask, the event classes asked for: keep it equal to the manager user's `read =` "
        "(`dialplan` tells refused callers and queue timeouts, `dtmf` the key of a key exit)"))
    ping_interval: float = Field(10.0, gt=0, description="Seconds between the watchdog's Pings")
    ping_timeout: float = Field(5.0, gt=0, description=(
        "Seconds after which a Ping unanswered, with nothing else from the PBX either, makes the link dead: "
        "it is dropped and made again"))
    connect_timeout: float = Field(10.0, gt=0, description="Seconds the TCP connection to Asterisk may take")
    reconnect_min: float = Field(1.0, gt=0, description=(
        "Seconds before the first reconnect after a lost or failed connection; the delay doubles up to "
        "`reconnect_max`, each drawn at random between half of it and all of it"))
    reconnect_max: float = Field(60.0, gt=0, description=(
        "Longest delay between reconnects, in seconds; at least `reconnect_min`"))
    login_retry: float = Field(60.0, gt=0, description=(
        "Seconds before a refused login is tried again (plus or minus 10 %)"))
    action_timeout: float = Field(15.0, gt=0, description=(
        "Seconds an AMI action (Login, CoreShowChannels, QueueStatus, Logoff, Originate) may wait for its "
        "answer; time during which onechance itself paused reading does not count"))
    queue_size: int = Field(20000, ge=100, description=(
        "Socket reads (of up to 256 KiB each) buffered between the socket and the tracker; reading pauses "
        "(TCP back-pressure) at 3/4 of this or of `queue_bytes`"))
    queue_bytes: int = Field(4 * 1024 * 1024, ge=65536, description=(
        "Bytes of AMI data buffered between the socket and the tracker; reading pauses at 3/4 of this or of "
        "`queue_size`"))

    _name_ok = field_validator("name")(classmethod(lambda cls, v: _plain_name(v)))

    @model_validator(mode="after")
    def _one_secret(self) -> AmiSettings:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set either secret or secret_file, not both")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self

    def resolved_secret(self) -> str:
        """The secret, read from ``secret_file`` when given.  Never log the result."""
        if self.secret_file is not None:
            try:
                return self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"ami.secret_file {self.secret_file}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"ami.secret_file {self.secret_file}: not UTF-8 text") from None
        return self.secret.get_secret_value() if self.secret is not None else ""

    def required_secret(self) -> str:
        """The secret, or a configuration error saying how to give one."""
        secret = self.resolved_secret()
        if not secret:
            raise ConfigError(f"PBX {self.name!r} ({self.host}): no AMI secret; set ami.secret or ami.secret_file "
                              "(ONECHANCE_AMI__SECRET or ONECHANCE_AMI__SECRET_FILE)")
        return secret


class HttpSettings(_Section):
    listen: str = Field("127.0.0.1:9648", description=(
        "HOST:PORT of the HTTP server (`/metrics`, `/healthz`, `/readyz`, `/api/*`, `/callbacks`); `0.0.0.0` "
        "listens on every address, port 0 on any free port (logged)"))
    token: SecretStr | None = Field(None, description=(
        "When set, `/api/*` needs `Authorization: Bearer <token>` and `/callbacks` a login; unset: no "
        "authentication; must not be empty; never logged"))
    token_file: Path | None = Field(None, description=(
        "A file holding the token (systemd `LoadCredential=`, container secrets), read when the settings load "
        "(leading and trailing white space ignored); not with `token`"))
    recent_calls: int = Field(10000, ge=1, description=(
        "Finished journeys kept in memory for `/api/calls` (merged with the database's, and answering alone "
        "while it is unreachable)"))
    store_timeout: float = Field(5.0, gt=0, description=(
        "Seconds the HTTP API waits for a database query; past it, the calls in memory answer alone "
        "(`\"partial\": true`)"))
    # the front's bounds (onechance.http_front; docs/reliability.md, a hostile HTTP client)
    max_connections: int = Field(256, ge=4, description=(
        "HTTP connections open at once; past it one that sent no complete request (idle, slow or silent) is "
        "closed to make room, or the newcomer gets 503 (a `GET /healthz` is still answered); kept below the "
        "open-files limit"))
    header_timeout: float = Field(10.0, gt=0, description=(
        "Seconds a whole request (line, headers and body) may take to arrive, from the connection or from its "
        "first byte after the previous answer; slower clients are cut (counted, not logged)"))
    keepalive_timeout: float = Field(30.0, gt=0, description="Seconds an idle keep-alive connection is kept open")
    max_header_size: int = Field(8190, ge=1024, description=(
        "Longest request line, and longest header, in bytes (431 past it; at most 100 headers)"))
    max_body_size: int = Field(65536, ge=1024, description="Largest request body, in bytes (413 past it)")
    api_concurrency: int = Field(4, ge=1, description=(
        "API requests handled at once; `/healthz`, `/readyz` and `/metrics` never wait behind them"))
    api_queue: int = Field(64, ge=0, description=(
        "API requests waiting for their turn (at most 10 s); more get 503 with `Retry-After`"))

    @field_validator("listen")
    @classmethod
    def _listen_ok(cls, v: str) -> str:
        _host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9648 (port 0: any free port)")
        return v

    @field_validator("token")
    @classmethod
    def _token_ok(cls, v: SecretStr | None) -> SecretStr | None:
        # an empty token (e.g. ONECHANCE_HTTP__TOKEN=${UNSET}) would silently leave /api/* open
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("must not be empty (leave http.token unset to serve /api/* without a token)")
        return v

    @model_validator(mode="after")
    def _token_from_file(self) -> HttpSettings:
        if self.token_file is None or self._token_read:
            return self
        if self.token is not None:
            raise ValueError("set either http.token or http.token_file, not both")
        try:
            token = _read_secret("http.token", None, self.token_file)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if not token:
            raise ValueError(f"http.token_file {self.token_file} is empty (it would leave /api/* open)")
        self.token = SecretStr(token)
        self._token_read = True
        return self

    _token_read: bool = PrivateAttr(default=False)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DatabaseSettings(_Section):
    url: str | None = Field(None, description=(
        "The journey store: `postgresql+asyncpg://USER:PASSWORD@HOST/DB` or `sqlite+aiosqlite:///PATH` "
        "(`postgresql://`, `sqlite://` get those drivers); unset: `sqlite+aiosqlite:///<data_dir>/onechance.db`; "
        "the password is masked by `check-config`"))
    auto_upgrade: bool = Field(True, description=(
        "Create or upgrade the schema at start; `false`: a schema at another revision keeps the database "
        "unavailable (journeys wait in the spool) until `onechance db upgrade` is run"))
    batch_size: int = Field(200, ge=1, description=(
        "Journeys written per transaction; a batch is written as soon as this many wait"))
    flush_interval: float = Field(0.5, gt=0, description=(
        "Longest time, in seconds, a journey waits in memory before it is written"))
    queue_size: int = Field(10000, ge=1, description=(
        "Journeys waiting in memory for the database; more overflow to the spool on disk"))
    retry_interval: float = Field(5.0, gt=0, description=(
        "Seconds before an unavailable database is tried again, doubling up to 60 s (or this, if longer)"))
    spool_dir: Path | None = Field(None, description=(
        "Where journeys and alerts wait on disk while the database is unavailable; unset: `<data_dir>/spool`"))
    spool_max_bytes: int = Field(1 << 30, ge=0, description=(
        "The spool's bound on disk, in bytes (an outage must not fill the disk Asterisk needs); reached, journeys "
        "wait in memory up to 4 x `queue_size` calls, then new calls are dropped, counted and logged; 0: no bound"))
    password_file: Path | None = Field(None, description=(
        "A file holding the PostgreSQL password (systemd `LoadCredential=`, container secrets), put into `url` "
        "(which then names the user but no password); never logged"))

    @model_validator(mode="after")
    def _password_file_fits(self) -> DatabaseSettings:
        if self.password_file is None:
            return self
        if not self.url or self.url.startswith("sqlite"):
            raise ValueError("database.password_file needs a PostgreSQL database.url (SQLite has no password)")
        from urllib.parse import urlsplit

        userinfo = urlsplit(self.url).netloc.rpartition("@")[0]
        if not userinfo:
            raise ValueError("database.password_file needs a user in database.url (postgresql://USER@HOST/DB)")
        if ":" in userinfo:
            raise ValueError("set the password either in database.url or in database.password_file, not both")
        return self

    def resolved_password(self) -> str | None:
        """The password read from ``password_file`` (None without one).  Never log the result."""
        if self.password_file is None:
            return None
        password = _read_secret("database.password", None, self.password_file)
        if not password:
            raise ConfigError(f"database.password_file {self.password_file} is empty")
        return password


class QueueSettings(_Section):
    """``[queues.<name>]``: one queue's rules (unset: the ``[journey]`` default)."""

    short_abandon_seconds: float | None = Field(None, ge=0, description=(
        "This queue's short-abandon threshold, in seconds (unset: `journey.short_abandon_seconds`)"))
    service_level_seconds: float | None = Field(None, ge=0, description=(
        "This queue's service level, in seconds (unset: `journey.service_level_seconds`)"))
    bounce_transfers: int | None = Field(None, ge=1, description=(
        "Transfers that make a call whose first queue is this one bounced (unset: `journey.bounce_transfers`)"))
    alert_kinds: list[AlertKindName] | None = Field(None, description=(
        "The alert kinds this queue raises (unset: `journey.alert_kinds`)"))
    long_wait_seconds: float | None = Field(None, gt=0, description=(
        "Seconds of waiting in this queue that raise `long_wait` (unset: `journey.long_wait_seconds`)"))
    mute: bool | None = Field(None, description=(
        "Alerts of this queue are recorded, never sent (unset: `journey.mute`)"))
    hours: str | None = Field(None, description=(
        "The name of an `[alerts.hours.<name>]` schedule: outside it this queue's alerts are held back "
        "(unset: `journey.hours`)"))


class JourneySettings(_Section):
    """``[journey]``: how calls are judged (defaults for every queue) and followed."""

    short_abandon_seconds: float = Field(5.0, ge=0, description=(
        "A caller who hangs up after waiting less than this many seconds is a short abandon: counted apart, "
        "not a lost caller, no alert"))
    service_level_seconds: float = Field(20.0, ge=0, description=(
        "Callers answered (or abandoning, or timing out) within this many seconds are within service level; "
        "keep it equal to queues.conf `servicelevel`"))
    bounce_transfers: int = Field(2, ge=1, description=(
        "A call is bounced at this many transfers (the rule of the call's first queue)"))
    alert_kinds: list[AlertKindName] | None = Field(None, description=(
        "The alert kinds raised; unset: every kind but `long_wait` (which also needs `long_wait_seconds`)"))
    long_wait_seconds: float | None = Field(None, gt=0, description=(
        "A caller still waiting in a queue this many seconds raises `long_wait` (when `alert_kinds` has it); "
        "unset: never"))
    mute: bool = Field(False, description=(
        "Alerts are recorded (deliveries `suppressed`), never sent; per queue: `[queues.<name>] mute`"))
    hours: str | None = Field(None, description=(
        "The name of an `[alerts.hours.<name>]` schedule for every queue: outside it alerts are held back "
        "(or go only to its `outside` channel); unset: always open"))
    max_call_age: float = Field(6 * 3600.0, gt=0, description=(
        "Seconds after which a call still open is closed as `uncertain` (`closed_reason: max_age`)"))
    recovery_window: float = Field(7 * 86400.0, gt=0, description=(
        "Seconds during which a lost caller reached again (calling in, or called back, and answered) makes "
        "the lost call `recovered`; also how far back lost callers are reloaded at start"))
    max_clock_jump: float = Field(300.0, gt=0, description=(
        "An event `Timestamp` further than this many seconds from the recent events' (live: from its arrival "
        "time) is not trusted: held until later events show whether the PBX's clock really moved (then kept) "
        "or it was an outlier (then the event is applied at the last trusted time, logged and counted in "
        "`onechance_ami_clock_jumps_total`)"))
    default_region: str | None = Field(None, description=(
        "Region for caller numbers written without a country code (ISO 3166 code, e.g. EE), so 5550107, "
        "+3725550107 and 003725550107 are one caller; unset: national numbers are compared as written"))

    @field_validator("default_region")
    @classmethod
    def _region_ok(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import phonenumbers

        code = v.strip().upper()
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {v!r}: a two-letter country code such as EE, FI, DE")
        return code


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _time_range(text: str) -> tuple[int, int]:
    """``08:00-17:30`` -> minutes of the day ``(480, 1050)``; ``00:00-24:00`` is the whole day."""
    start, sep, end = text.strip().partition("-")
    if not sep:
        raise ValueError(f"{text!r}: expected HH:MM-HH:MM")
    out = []
    for part in (start, end):
        h, colon, m = part.strip().partition(":")
        if not colon or not h.isdigit() or not m.isdigit() or not (0 <= int(h) <= 24 and 0 <= int(m) < 60):
            raise ValueError(f"{text!r}: expected HH:MM-HH:MM")
        out.append(int(h) * 60 + int(m))
    if out[1] > 24 * 60 or out[0] >= out[1]:
        raise ValueError(f"{text!r}: the end must come after the start, within the day")
    return out[0], out[1]


class HoursSettings(_Section):
    """``[alerts.hours.<name>]``: business hours in a named time zone, a weekly schedule plus holidays."""

    timezone: str = Field("UTC", description="The schedule's IANA time zone, e.g. Europe/Tallinn")
    mon: list[str] = Field(default_factory=list, description=(
        'Open hours on Mondays as `HH:MM-HH:MM` ranges, e.g. `["08:00-12:00", "13:00-17:00"]` '
        '(`00:00-24:00`: all day); empty: closed'))
    tue: list[str] = Field(default_factory=list, description="Open hours on Tuesdays (as `mon`)")
    wed: list[str] = Field(default_factory=list, description="Open hours on Wednesdays (as `mon`)")
    thu: list[str] = Field(default_factory=list, description="Open hours on Thursdays (as `mon`)")
    fri: list[str] = Field(default_factory=list, description="Open hours on Fridays (as `mon`)")
    sat: list[str] = Field(default_factory=list, description="Open hours on Saturdays (as `mon`)")
    sun: list[str] = Field(default_factory=list, description="Open hours on Sundays (as `mon`)")
    holidays: list[date] = Field(default_factory=list, description=(
        "Days closed all day, as `YYYY-MM-DD` dates"))
    outside: str | None = Field(None, description=(
        "The channel that alone gets the alerts raised outside these hours (whatever its filters); unset: "
        "they are recorded, not sent"))

    @field_validator("timezone")
    @classmethod
    def _zone_ok(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Europe/Tallinn, UTC)") from None
        return v

    @field_validator(*_DAYS)
    @classmethod
    def _ranges_ok(cls, v: list[str]) -> list[str]:
        for text in v:
            _time_range(text)
        return v

    def weekly(self) -> dict[int, list[tuple[int, int]]]:
        """Weekday (0 = Monday) -> open ranges in minutes of the day."""
        return {i: [_time_range(t) for t in getattr(self, day)] for i, day in enumerate(_DAYS)}


ChannelKind = Literal["webhook", "alertmanager", "apprise"]


class ChannelSettings(_Section):
    """``[[alerts.channels]]``: where alerts go.  ``url`` (or ``url_file``) and ``secret`` (or ``secret_file``)
    are secrets: never logged, masked by ``check-config``."""

    name: str = Field(description=(
        "Names the channel in logs, metrics (`channel` label), `/api/alerts` and the store; letters, digits, "
        "`-`, `_`, `.`; unique"))
    kind: ChannelKind = Field(description=(
        "`webhook` (a signed JSON POST), `alertmanager` (Alertmanager's API) or `apprise` (Slack, Telegram, "
        "e-mail... through an Apprise URL)"))
    url: SecretStr | None = Field(None, description=(
        "Where to send; a secret: never logged, masked by `check-config`; exactly one of `url` and `url_file`"))
    url_file: Path | None = Field(None, description="A file holding the URL (instead of `url`)")
    secret: SecretStr | None = Field(None, description=(
        "`webhook` only: the HMAC-SHA256 key that signs each request; not with `secret_file`"))
    secret_file: Path | None = Field(None, description="A file holding the signing key (instead of `secret`)")
    kinds: list[AlertKindName] | None = Field(None, description="Only alerts of these kinds (unset: all)")
    queues: list[str] | None = Field(None, description="Only alerts about these queues (unset: all)")
    pbx: list[str] | None = Field(None, description="Only alerts of these PBXs, by name (unset: all)")
    mask_caller: bool = Field(False, description=(
        "Show the caller's number masked (`+372 512* **67`) in everything this channel sends"))
    template: str | None = Field(None, description="This channel's message text (unset: `alerts.template`)")
    timeout: float = Field(5.0, gt=0, description="Seconds one delivery attempt may take, all included")
    retry_min: float = Field(1.0, gt=0, description=(
        "Seconds before the first retry of a failed delivery; the delay doubles up to `retry_max`, jittered"))
    retry_max: float = Field(300.0, gt=0, description=(
        "Longest delay between retries, in seconds; at least `retry_min`"))
    max_age: float = Field(6 * 3600.0, gt=0, description=(
        "Seconds after which an alert not delivered is given up (`expired`)"))
    storm_limit: int = Field(20, ge=1, description=(
        "Past this many alerts in a minute, the rest of the minute's go out as one digest"))
    repeat_interval: float = Field(300.0, gt=0, description=(
        "`alertmanager` only: seconds between posts of an alert still open (its `endsAt` is three of these "
        "ahead)"))

    _name_ok = field_validator("name")(classmethod(lambda cls, v: _plain_name(v)))

    @model_validator(mode="after")
    def _complete(self) -> ChannelSettings:
        if (self.url is None) == (self.url_file is None):
            raise ValueError(f"channel {self.name!r}: set exactly one of url and url_file")
        if self.secret is not None and self.secret_file is not None:
            raise ValueError(f"channel {self.name!r}: set either secret or secret_file, not both")
        if self.retry_max < self.retry_min:
            raise ValueError(f"channel {self.name!r}: retry_max must be >= retry_min")
        return self

    def resolved_url(self) -> str:
        """The URL, read from ``url_file`` when given.  Never log the result."""
        return _read_secret(f"alerts.channels[{self.name}].url", self.url, self.url_file)

    def resolved_secret(self) -> str:
        return _read_secret(f"alerts.channels[{self.name}].secret", self.secret, self.secret_file)


def _read_secret(what: str, value: SecretStr | None, path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}_file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{what}_file {path}: not UTF-8 text") from None
    return value.get_secret_value() if value is not None else ""


DEFAULT_TEMPLATE = ("Lost caller {caller} ({caller_name}): {what} after {wait} s in {queue}, {time}. "
                    "Call back: {link}")


class AlertsSettings(_Section):
    """``[alerts]``: one-chance alerts and where they go."""

    public_url: str = Field("", description=(
        "onechance's address as people reach it, for the links in messages (e.g. "
        "`https://onechance.example.com`); empty: `http://<http.listen>` (127.0.0.1 for 0.0.0.0)"))
    template: str = Field(DEFAULT_TEMPLATE, description=(
        "The message text of every channel; its fields: caller, caller_name, what, title, kind, wait, queue, "
        "time, date, link, call_link, pbx, call_id, id, operators, transfers"))
    timezone: str | None = Field(None, description=(
        "IANA time zone of the times in messages and of the API's days (`/api/queues`); unset: the machine's"))
    hours: dict[str, HoursSettings] = Field(default_factory=dict, description=(
        "Named business-hours schedules, `[alerts.hours.<name>]`, for `journey.hours` and `[queues.<name>] "
        "hours`"))
    channels: list[ChannelSettings] = Field(default_factory=list, description=(
        "Where alerts go, one `[[alerts.channels]]` table each; none: alerts are only recorded "
        "(`GET /api/alerts`)"))

    @model_validator(mode="after")
    def _consistent(self) -> AlertsSettings:
        names = [c.name for c in self.channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"alert channel names must be unique; repeated: {', '.join(dup)}")
        for name, hours in self.hours.items():
            if hours.outside is not None and hours.outside not in names:
                raise ValueError(f"alerts.hours.{name}.outside: no channel named {hours.outside!r}")
        return self


class CallbacksSettings(_Section):
    """``[callbacks]``: the callback worklist and its page."""

    expire_after: float = Field(7 * 86400.0, gt=0, description=(
        "Seconds after a caller's first lost call an entry nobody closed is closed as `expired`"))
    page_refresh: int = Field(30, ge=5, description="Seconds between refreshes of the `/callbacks` page")
    originate: bool = Field(False, description=(
        'A "call back now" button on `/callbacks`: Asterisk rings the operator\'s phone, then dials the caller '
        "(the manager user needs the `originate` write class)"))
    originate_channel: str = Field("PJSIP/{extension}", description=(
        "The operator's phone as an Asterisk channel, `{extension}` (its only placeholder) being the extension "
        "typed on the page"))
    originate_context: str = Field("from-internal", description=(
        "The dialplan context in which the caller's number is dialled once the operator answers"))
    session_hours: float = Field(12.0, gt=0, description="Hours a `/callbacks` login lasts (with `http.token`)")


class DemoSettings(_Section):
    """``onechance demo``: the embedded PBX, a simulated call centre (or a capture played in a loop)."""

    capture: Path | None = Field(None, description=(
        "An AMI capture file for the demo PBX to play in a loop instead of the simulated call centre; unset: the "
        "simulated call centre"))
    speed: float = Field(1.0, ge=0, description=(
        "1: real time, 10: ten times faster, 0: as fast as the daemon reads (`onechance demo --speed`)"))
    loop: bool = Field(True, description=(
        "A capture: play it again, with fresh call ids and times, when it ends"))
    seed: int = Field(1, description=(
        "The seed of the simulated call centre: the same seed gives the same calls (`onechance demo --seed`)"))
    calls_per_hour: float = Field(300.0, gt=0, description=(
        "Callers an hour in the simulated call centre (seven operators in three queues: 300 is a busy morning)"))
    warmup: float = Field(900.0, ge=0, description=(
        "Seconds the simulated call centre has run when the daemon connects (calls in progress, callers waiting)"))


class DaemonSettings(_Section):
    shutdown_timeout: float = Field(10.0, gt=0, description=(
        "Longest graceful drain after SIGTERM or SIGINT, in seconds; past it onechance exits anyway (exit 1)"))
    tick_interval: float = Field(1.0, gt=0, description=(
        "Seconds between the times each tracker is given the time, busy or idle: long waits are raised, "
        "over-age calls closed"))
    gc_interval: float = Field(60.0, gt=0, description=(
        "Seconds between the garbage collector's full collections, run on this timer rather than whenever "
        "Python's allocation count says (each holds the daemon some 60-140 ms at 10,000 calls in progress); "
        "only garbage with reference cycles waits for one"))


class ReportSettings(_Section):
    """``[report]``: how ``onechance report`` counts periods."""

    timezone: str | None = Field(None, description=(
        "IANA time zone of `onechance report`'s hours, days, weeks and months (`--tz` overrides it); unset: "
        "the machine's"))

    @field_validator("timezone")
    @classmethod
    def _zone_ok(cls, v: str | None) -> str | None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Europe/Tallinn, UTC)") from None
        return v


class Settings(BaseSettings):
    """Everything onechance reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="ONECHANCE_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    data_dir: Path = Field(Path(DEFAULT_DATA_DIR), description=(
        "Where onechance keeps its files: the SQLite database (unless `database.url` is set) and the spool; "
        "`onechance demo` uses `<data_dir>/demo`"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description=(
        "The least important log lines written (to standard error)"))
    ami: AmiSettings = Field(AmiSettings(), description=(
        "The Asterisk PBX to follow over AMI (ignored when `[[pbx]]` tables are given)"))
    pbx: list[AmiSettings] = Field(default_factory=list, description=(
        "Several PBXs: one `[[pbx]]` table each, with the keys of `[ami]`; each needs a `host` and a unique "
        "`name`"))
    http: HttpSettings = Field(HttpSettings(), description=(
        "The HTTP server: metrics, health, the API, the callback page"))
    database: DatabaseSettings = Field(DatabaseSettings(), description=(
        "The journey store and its spool (docs/database.md)"))
    journey: JourneySettings = Field(JourneySettings(), description=(
        "How calls are judged (the default of every queue) and followed (docs/journey.md)"))
    queues: dict[str, QueueSettings] = Field(default_factory=dict, description=(
        "Per-queue rules, `[queues.<name>]` (the queue's name in Asterisk); each unset key takes the "
        "`[journey]` one"))
    demo: DemoSettings = Field(DemoSettings(), description="`onechance demo`: the embedded demo PBX")
    daemon: DaemonSettings = Field(DaemonSettings(), description="The process: its shutdown and its clock tick")
    alerts: AlertsSettings = Field(AlertsSettings(), description=(
        "One-chance alerts, their channels and business hours (docs/alerts.md)"))
    callbacks: CallbacksSettings = Field(CallbacksSettings(), description=(
        "The callback worklist and its page, `/callbacks` (docs/callbacks.md)"))
    report: ReportSettings = Field(ReportSettings(), description="`onechance report` (docs/reports.md)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment over the TOML file (passed as init kwargs by load_settings)
        return env_settings, init_settings

    @model_validator(mode="after")
    def _unique_pbx_names(self) -> Settings:
        names = [p.name for p in self.pbxs()]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"PBX names must be unique; repeated: {', '.join(sorted(dup))}")
        missing = [p.name for p in self.pbx if not p.host]
        if missing:
            raise ValueError(f"every [[pbx]] table needs a host; missing for: {', '.join(missing)}")
        schedules = {"journey.hours": self.journey.hours} | {
            f"queues.{q}.hours": s.hours for q, s in self.queues.items()}
        for where, name in schedules.items():
            if name is not None and name not in self.alerts.hours:
                raise ValueError(f"{where}: no [alerts.hours.{name}] schedule")
        if not self.alerts.public_url:
            host = self.http.host if self.http.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            self.alerts = self.alerts.model_copy(update={"public_url": f"http://{host}:{self.http.port}"})
        return self

    def followed_pbxs(self) -> list[AmiSettings]:
        """The PBXs ``onechance run`` follows, each with its secret checked; a configuration error when none."""
        if not self.pbx and not self.ami.host:
            raise ConfigError("no Asterisk to follow: set ami.host (ONECHANCE_AMI__HOST) or [[pbx]] tables; to try "
                              "onechance without an Asterisk, run `onechance demo`")
        for pbx in self.pbxs():
            pbx.required_secret()
        return self.pbxs()

    def pbxs(self) -> list[AmiSettings]:
        """The PBXs to follow: the [[pbx]] tables, or the single [ami] section."""
        return list(self.pbx) if self.pbx else [self.ami]

    def database_url(self) -> str:
        """The database URL, with the password of ``database.password_file`` in it (never log it: see
        :func:`onechance.redact.mask_url`); :class:`ConfigError` when that file cannot be read."""
        if self.database.url:
            password = self.database.resolved_password()
            if password is None:
                return self.database.url
            from urllib.parse import quote, urlsplit, urlunsplit

            parts = urlsplit(self.database.url)
            userinfo, _, hostport = parts.netloc.rpartition("@")
            netloc = f"{userinfo}:{quote(password, safe='')}@{hostport}"
            return urlunsplit(parts._replace(netloc=netloc))
        return f"sqlite+aiosqlite:///{(self.data_dir / 'onechance.db').as_posix()}"

    def spool_dir(self) -> Path:
        return self.database.spool_dir or self.data_dir / "spool"

    def tracker_settings(self) -> TrackerSettings:
        j = self.journey
        return TrackerSettings(max_call_age=j.max_call_age, recovery_window=j.recovery_window,
                               default_region=j.default_region, max_clock_jump=j.max_clock_jump)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked (for ``check-config``)."""
        data = self.model_dump(mode="json")

        def mask(d: Any) -> Any:
            if isinstance(d, dict):
                return {k: ("********" if k in ("secret", "token") and v else mask(v)) for k, v in d.items()}
            if isinstance(d, list):
                return [mask(x) for x in d]
            return d

        out: dict[str, Any] = mask(data)
        from .redact import mask_url

        out["database"]["url"] = mask_url(self.database_url())
        return out


#: settings whose value in a config file is a secret (dotted paths; ``[]``: each item of a list)
SECRET_KEYS = ("ami.secret", "pbx[].secret", "http.token", "alerts.channels[].url", "alerts.channels[].secret")


def config_file_warnings(path: str | os.PathLike[str] | None) -> list[str]:
    """A warning when the config file is readable by other users (group or others) and holds secrets."""
    if not path:
        return []
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return []
    if not mode & 0o044:
        return []
    held = []
    for key in SECRET_KEYS:
        section, _, name = key.rpartition(".")
        parts = section.split(".")
        nodes: list[Any] = [data]
        for part in parts:
            many = part.endswith("[]")
            part = part.removesuffix("[]")
            nxt: list[Any] = []
            for node in nodes:
                value = node.get(part) if isinstance(node, dict) else None
                if many and isinstance(value, list):
                    nxt += value
                elif value is not None:
                    nxt.append(value)
            nodes = nxt
        if any(isinstance(n, dict) and n.get(name) for n in nodes):
            held.append(key.replace("[]", ""))
    url = (data.get("database") or {}).get("url") if isinstance(data.get("database"), dict) else None
    if isinstance(url, str):
        from .redact import mask_url

        if mask_url(url) != url:
            held.append("database.url (a password)")
    if not held:
        return []
    return [f"config file {path} is readable by other users (mode {mode & 0o777:04o}) and holds secrets "
            f"({', '.join(held)}): `chmod 600` it (or 640 with a group of its own), or move them to files "
            "(ami.secret_file, http.token_file, database.password_file, alerts.channels url_file and secret_file)"]


def _env_names(model: type[BaseModel], prefix: str) -> set[str]:
    """Every ``ONECHANCE_*`` name the settings read (sections nested with ``__``)."""
    out = set()
    for name, fld in model.model_fields.items():
        env = f"{prefix}{name}".upper()
        out.add(env)
        ann = fld.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _env_names(ann, env + "__")
    return out


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for ``ONECHANCE_*`` variables no setting reads (a typo such as ``ONECHANCE_AMI_HOST`` would
    otherwise be silently ignored)."""
    import difflib

    environ = os.environ if environ is None else environ
    known = _env_names(Settings, "ONECHANCE_") | {CONFIG_ENV} | {
        k for k in environ if k.startswith(("ONECHANCE_TEST_", "ONECHANCE_BENCH_"))}
    out = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("ONECHANCE_") or upper in known:
            continue
        # dict sections (queues, alerts.hours) take any key below them
        if upper.startswith(("ONECHANCE_QUEUES__", "ONECHANCE_ALERTS__HOURS__")):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"unknown environment variable {name}{hint}: no setting reads it")
    return out


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``config_file`` or ``$ONECHANCE_CONFIG``) and the environment.

    Raises :class:`ConfigError` with a readable message on any problem.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    path = config_file or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{loc}: {err['msg']}")
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n  " + "\n  ".join(lines)) from None
    except SettingsError as exc:  # e.g. ONECHANCE_PBX='[{...' (its value is never shown: it may hold secrets)
        raise ConfigError(f"invalid configuration: {exc} (an ONECHANCE_<SECTION> variable that holds a whole "
                          f"section or list must be valid JSON)") from None

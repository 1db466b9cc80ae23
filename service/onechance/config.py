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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .journey import TrackerSettings

AlertKindName = Literal["abandoned", "timeout", "rejected", "exited", "bounced", "long_wait"]

CONFIG_ENV = "ONECHANCE_CONFIG"
DEFAULT_DATA_DIR = "./data"


class ConfigError(Exception):
    """Bad configuration; the message says what and where, in one or a few lines."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmiSettings(_Section):
    """How to reach one Asterisk manager interface."""

    name: str = "default"  # the `pbx` label on metrics and journeys
    host: str | None = None  # None: no Asterisk configured (the demo PBX plays a capture instead)
    port: int = Field(5038, ge=1, le=65535)
    username: str = "onechance"
    secret: SecretStr | None = None
    secret_file: Path | None = None
    events: str = "call,agent,system,dialplan,dtmf"
    ping_interval: float = Field(10.0, gt=0)
    ping_timeout: float = Field(5.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    reconnect_min: float = Field(1.0, gt=0)
    reconnect_max: float = Field(60.0, gt=0)
    login_retry: float = Field(60.0, gt=0)  # a refused login is retried this slowly
    action_timeout: float = Field(15.0, gt=0)
    queue_size: int = Field(20000, ge=100)  # AMI messages buffered between the socket and the tracker

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("must be letters, digits, '-', '_' or '.'")
        return v

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
    listen: str = "127.0.0.1:9648"
    token: SecretStr | None = None
    recent_calls: int = Field(10000, ge=1)  # journeys kept in memory for the API
    store_timeout: float = Field(5.0, gt=0)  # a store query not answered within this: the memory answers alone
    # the front's bounds (onechance.http_front; docs/daemon.md): open connections, the time a request may take
    # to arrive, idle keep-alive, request sizes, API requests at once and waiting for their turn
    max_connections: int = Field(256, ge=4)
    header_timeout: float = Field(10.0, gt=0)
    keepalive_timeout: float = Field(30.0, gt=0)
    max_header_size: int = Field(8190, ge=1024)
    max_body_size: int = Field(65536, ge=1024)
    api_concurrency: int = Field(4, ge=1)
    api_queue: int = Field(64, ge=0)

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

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DatabaseSettings(_Section):
    url: str | None = None  # None: sqlite+aiosqlite:///<data_dir>/onechance.db
    auto_upgrade: bool = True
    batch_size: int = Field(200, ge=1)
    flush_interval: float = Field(0.5, gt=0)
    queue_size: int = Field(10000, ge=1)
    retry_interval: float = Field(5.0, gt=0)
    spool_dir: Path | None = None  # None: <data_dir>/spool


class QueueSettings(_Section):
    """``[queues.<name>]``: one queue's rules (unset: the ``[journey]`` default)."""

    short_abandon_seconds: float | None = Field(None, ge=0)
    service_level_seconds: float | None = Field(None, ge=0)
    bounce_transfers: int | None = Field(None, ge=1)
    alert_kinds: list[AlertKindName] | None = None
    long_wait_seconds: float | None = Field(None, gt=0)
    mute: bool | None = None  # alerts of this queue are recorded, never sent
    hours: str | None = None  # the name of an [alerts.hours.<name>] schedule: outside it, alerts are held back


class JourneySettings(_Section):
    """``[journey]``: how calls are judged (defaults for every queue) and followed."""

    short_abandon_seconds: float = Field(5.0, ge=0)
    service_level_seconds: float = Field(20.0, ge=0)
    bounce_transfers: int = Field(2, ge=1)
    #: the alert kinds raised (unset: every kind but long_wait; long_wait also needs long_wait_seconds)
    alert_kinds: list[AlertKindName] | None = None
    long_wait_seconds: float | None = Field(None, gt=0)  # a caller still waiting this long raises long_wait
    mute: bool = False  # alerts are recorded, never sent (per queue: [queues.<name>] mute)
    hours: str | None = None  # default business-hours schedule of every queue ([alerts.hours.<name>])
    max_call_age: float = Field(6 * 3600.0, gt=0)
    recovery_window: float = Field(7 * 86400.0, gt=0)
    #: region for caller numbers written without a country code (ISO 3166 code, e.g. EE), so 5550107,
    #: +3725550107 and 003725550107 are one caller
    default_region: str | None = None

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

    timezone: str = "UTC"
    mon: list[str] = Field(default_factory=list)  # e.g. ["08:00-12:00", "13:00-17:00"]; empty: closed
    tue: list[str] = Field(default_factory=list)
    wed: list[str] = Field(default_factory=list)
    thu: list[str] = Field(default_factory=list)
    fri: list[str] = Field(default_factory=list)
    sat: list[str] = Field(default_factory=list)
    sun: list[str] = Field(default_factory=list)
    holidays: list[date] = Field(default_factory=list)  # closed all day
    outside: str | None = None  # channel to send to outside hours (unset: recorded, not sent)

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

    name: str
    kind: ChannelKind
    url: SecretStr | None = None
    url_file: Path | None = None
    secret: SecretStr | None = None  # webhook: the HMAC-SHA256 signing key
    secret_file: Path | None = None
    kinds: list[AlertKindName] | None = None  # only these alert kinds (unset: all)
    queues: list[str] | None = None  # only alerts of these queues (unset: all)
    pbx: list[str] | None = None  # only alerts of these PBXs (unset: all)
    mask_caller: bool = False  # show the caller's number as +372 555 ***7
    template: str | None = None  # the message text (unset: alerts.template)
    timeout: float = Field(5.0, gt=0)  # seconds one delivery attempt may take
    retry_min: float = Field(1.0, gt=0)  # first retry after this, doubling, jittered
    retry_max: float = Field(300.0, gt=0)
    max_age: float = Field(6 * 3600.0, gt=0)  # an alert not delivered within this is given up (expired)
    storm_limit: int = Field(20, ge=1)  # past this many alerts a minute, one digest lists the rest
    repeat_interval: float = Field(300.0, gt=0)  # alertmanager: re-post an open alert this often

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("must be letters, digits, '-', '_' or '.'")
        return v

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

    # the daemon's address as people reach it (links in messages); empty: http://<http.listen>
    public_url: str = ""
    template: str = DEFAULT_TEMPLATE  # fields: caller, caller_name, what, kind, wait, queue, time, link, pbx...
    timezone: str | None = None  # for times in messages (unset: the machine's)
    hours: dict[str, HoursSettings] = Field(default_factory=dict)
    channels: list[ChannelSettings] = Field(default_factory=list)

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

    expire_after: float = Field(7 * 86400.0, gt=0)  # an entry nobody closed is closed as expired after this
    page_refresh: int = Field(30, ge=5)  # seconds between refreshes of /callbacks
    originate: bool = False  # a "call back now" button: Asterisk rings the operator, then dials the caller
    originate_channel: str = "PJSIP/{extension}"  # the operator's phone
    originate_context: str = "from-internal"  # where the caller's number is dialled
    session_hours: float = Field(12.0, gt=0)  # how long a page login lasts


class DemoSettings(_Section):
    """``onechance demo``: the embedded simulated PBX."""

    capture: Path | None = None  # None: the bundled capture (service/onechance/data/demo.ami)
    speed: float = Field(1.0, ge=0)  # 1 = real time, 10 = ten times faster, 0 = as fast as possible
    loop: bool = True  # play the capture again (with fresh ids and times) when it ends
    seed: int = 1  # the simulation's seed: the same seed, the same calls


class DaemonSettings(_Section):
    shutdown_timeout: float = Field(10.0, gt=0)  # SIGTERM: longest drain before exiting anyway
    tick_interval: float = Field(1.0, gt=0)  # how often each tracker is given the time (long waits, over-age calls)


class ReportSettings(_Section):
    """``[report]``: how ``onechance report`` counts periods."""

    timezone: str | None = None  # IANA zone of the report's periods; unset: the machine's own zone

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

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ami: AmiSettings = AmiSettings()
    pbx: list[AmiSettings] = Field(default_factory=list)  # several PBXs: [[pbx]] tables
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    journey: JourneySettings = JourneySettings()
    queues: dict[str, QueueSettings] = Field(default_factory=dict)
    demo: DemoSettings = DemoSettings()
    daemon: DaemonSettings = DaemonSettings()
    alerts: AlertsSettings = AlertsSettings()
    callbacks: CallbacksSettings = CallbacksSettings()
    report: ReportSettings = ReportSettings()

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
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'onechance.db').as_posix()}"

    def spool_dir(self) -> Path:
        return self.database.spool_dir or self.data_dir / "spool"

    def tracker_settings(self) -> TrackerSettings:
        j = self.journey
        return TrackerSettings(max_call_age=j.max_call_age, recovery_window=j.recovery_window,
                               default_region=j.default_region)

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
        out["database"]["url"] = _mask_url(self.database_url())
        return out


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in creds else url


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

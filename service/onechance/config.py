"""Settings: a TOML file plus ``ONECHANCE_*`` environment variables (pydantic-settings).

Precedence, highest first: environment variables (``ONECHANCE_AMI__HOST``, nested with ``__``), the
TOML file (``--config FILE`` or ``ONECHANCE_CONFIG``), then the defaults below.  Settings grow by
sections: each concern (``ami``, ``http``, ``database``, ``journey``, ``alerts``...) owns one model.
"""

from __future__ import annotations

import os
import tomllib
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


class HttpSettings(_Section):
    listen: str = "127.0.0.1:9648"
    token: SecretStr | None = None
    recent_calls: int = Field(10000, ge=1)  # journeys kept in memory for the API
    store_timeout: float = Field(5.0, gt=0)  # a store query not answered within this: the memory answers alone

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


class JourneySettings(_Section):
    """``[journey]``: how calls are judged (defaults for every queue) and followed."""

    short_abandon_seconds: float = Field(5.0, ge=0)
    service_level_seconds: float = Field(20.0, ge=0)
    bounce_transfers: int = Field(2, ge=1)
    #: the alert kinds raised (unset: every kind but long_wait; long_wait also needs long_wait_seconds)
    alert_kinds: list[AlertKindName] | None = None
    long_wait_seconds: float | None = Field(None, gt=0)  # a caller still waiting this long raises long_wait
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


class DemoSettings(_Section):
    """The embedded demo PBX, started when no Asterisk is configured (``ami.host`` unset)."""

    capture: Path | None = None  # None: the bundled capture (service/onechance/data/demo.ami)
    speed: float = Field(1.0, ge=0)  # 1 = real time, 10 = ten times faster, 0 = as fast as possible
    loop: bool = True  # play the capture again (with fresh ids and times) when it ends


class DaemonSettings(_Section):
    shutdown_timeout: float = Field(10.0, gt=0)  # SIGTERM: longest drain before exiting anyway
    tick_interval: float = Field(30.0, gt=0)  # how often idle trackers close over-age calls


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
        return self

    def demo_mode(self) -> bool:
        """No Asterisk configured: the daemon follows the embedded demo PBX."""
        return not self.pbx and not self.ami.host

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

"""Settings: one frozen tree from a TOML file plus `MOGLI_BRIDGE_<SECTION>__<KEY>` environment overrides.

This is the only module that reads the environment. Every value is validated here, and every error names
the key it is about. (Over 400 lines on purpose: every key, its default and its check stand in one place, so
the README's configuration table can be checked against one file.)
"""

from __future__ import annotations

import os
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from bridge.errors import ConfigurationError
from bridge.records.source import BackfillMode, BackfillPolicy

ENV_PREFIX = "MOGLI_BRIDGE_"
CONFIG_ENV = "MOGLI_BRIDGE_CONFIG"  # the configuration file when --config is not given
DEFAULT_CONFIG = Path("config/bridge.toml")
SECRET_KEYS = frozenset({"password", "client_secret", "refresh_token", "token", "private_key"})


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """The scheduling database and its replication stream."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/scheduler"
    schema: str = "scheduler"
    slot: str = "mogli_bridge"
    publication: str = "mogli_bridge"
    backfill: str = "upcoming"  # none | upcoming | since:<ISO date>
    status_interval_seconds: float = 1.0
    heartbeat_seconds: float = 30.0
    # Decoded transactions (or 1,000-row snapshot chunks) held by the reader; the ingestor reads ahead by up
    # to 10,000 changes on its own (65,536 with tenancy, past the snapshot), so a few are enough and a large
    # backfill does not sit in memory.
    queue_size: int = 8
    reconnect_max_seconds: float = 30.0

    def backfill_policy(self) -> BackfillPolicy:
        """The parsed backfill setting."""
        return parse_backfill(self.backfill)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """Where the ledger lives (SQLAlchemy URL)."""

    url: str = "sqlite:///var/ledger.sqlite3"


@dataclass(frozen=True, slots=True)
class SalesforceObjectNames:
    """API names of the objects and fields the bridge writes (configurable per org)."""

    mogli_event_object: str = "Mogli_Event__c"
    link_external_id_field: str = "Scheduling_Link_Id__c"
    link_type_field: str = "Link_Type__c"
    mogli_description_field: str = "Description__c"
    booking_external_id_field: str = "Scheduling_Booking_Id__c"
    event_mogli_event_field: str = "Mogli_Event_Id__c"


@dataclass(frozen=True, slots=True)
class SalesforceSettings:
    """How to reach and authenticate against the Salesforce org."""

    login_url: str = "https://login.salesforce.com"
    api_version: str = "60.0"
    auth: Literal["jwt", "password", "refresh_token", "client_credentials"] = "jwt"
    client_id: str = ""
    client_secret: str = ""
    username: str = ""
    password: str = ""
    private_key_file: str = ""
    refresh_token: str = ""
    ca_bundle: str = ""
    client_name: str = "mogli-bridge"
    audience: str = ""  # JWT `aud`; defaults to login.salesforce.com / test.salesforce.com by login_url
    request_timeout_seconds: float = 60.0
    max_attempts: int = 6
    max_in_flight: int = 4
    api_reserve_fraction: float = 0.1  # stop pushing when less than this share of the allocation is left
    api_budget_recheck_seconds: float = 300.0  # a reading below the reserve is trusted this long
    objects: SalesforceObjectNames = field(default_factory=SalesforceObjectNames)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Rules and pacing of the outbound pipeline."""

    on_cancel: Literal["delete", "keep"] = "delete"
    multiday_events: bool = False  # the org allows Events longer than 24 hours (up to 14 days)
    batch_size: int = 200
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 20
    idle_poll_seconds: float = 1.0
    api_limit_wait_seconds: float = 300.0  # pause after REQUEST_LIMIT_EXCEEDED before trying again
    # Inbound: Salesforce change events (Change Data Capture) and the policy for changes made there.
    streaming: bool = True  # subscribe to Event, Mogli Event and Lead change events
    on_activity_deleted: Literal["keep_deleted", "recreate"] = "keep_deleted"
    on_time_changed: Literal["restore", "write_back"] = "restore"  # restore: the scheduler's time wins
    on_owner_changed: Literal["accept", "write_back"] = "accept"  # write_back: round robin assignee follows
    on_mogli_event_deleted: Literal["recreate", "keep_deleted"] = "recreate"  # on the link's next booking
    streaming_stall_seconds: float = 60.0  # transport not connected this long: the client is rebuilt
    # auto: the custom filtered channel when `setup` created it, else the standard channels (with a warning)
    channel: Literal["auto", "custom", "standard"] = "auto"
    channel_name: str = "MogliBridge__chn"  # the custom channel `setup` creates (Tooling API)
    delivered_events_warn_fraction: float = 0.2  # warn when less than this share of the allocation is left
    delivered_events_check_seconds: float = 300.0  # how often /limits is read (DailyDeliveredPlatformEvents)
    # The change-event transport: CometD or the Pub/Sub API (gRPC, recommended by Salesforce).
    transport: Literal["cometd", "pubsub"] = "cometd"
    pubsub_endpoint: str = "api.pubsub.salesforce.com:7443"  # HOST:PORT of the Pub/Sub API
    pubsub_plaintext: bool = False  # no TLS: only for the emulator's plaintext gRPC port


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin HTTP API inside the daemon."""

    listen: str = "127.0.0.1:8787"
    token: str = ""
    allow_remote: bool = False  # listen on a non-loopback address (the token then crosses the network)


@dataclass(frozen=True, slots=True)
class TenancySettings:
    """Many orgs from one change stream (CONTRACT §9)."""

    enabled: bool = False  # off: every booking goes to the org of [salesforce]
    org_max_in_flight: int = 2  # Salesforce calls in flight per org (each org has its own budget)
    resume_check_seconds: float = 30.0  # how often a paused org tries again whether its cause is gone
    # Several workers on a PostgreSQL ledger (issue 14): an org lease lasts this long past its last renewal,
    # and each worker renews its row and leases (and takes its share) every round.
    worker_lease_seconds: float = 10.0
    worker_round_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Log output."""

    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration."""

    source: SourceSettings = field(default_factory=SourceSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    salesforce: SalesforceSettings = field(default_factory=SalesforceSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)
    tenancy: TenancySettings = field(default_factory=TenancySettings)
    path: str | None = None
    warnings: tuple[str, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        """Every configured secret value, for log scrubbing and tests."""
        sf = self.salesforce
        values = (sf.client_secret, sf.password, sf.refresh_token, self.admin.token)
        return tuple(v for v in values if v)


def parse_backfill(text: str) -> BackfillPolicy:
    """Parse `none`, `upcoming` or `since:<ISO date or datetime>`."""
    text = text.strip()
    if text in ("none", "upcoming"):
        return BackfillPolicy(mode=BackfillMode(text))
    if text.startswith("since:"):
        try:
            since = datetime.fromisoformat(text.removeprefix("since:").strip())
        except ValueError as exc:
            raise ConfigurationError(
                f"source.backfill: {text!r} is not since:<ISO date>", "source.backfill"
            ) from exc
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return BackfillPolicy(mode=BackfillMode.SINCE, since=since)
    raise ConfigurationError(
        f"source.backfill must be none, upcoming or since:<date>, not {text!r}", "source.backfill"
    )


_T = TypeVar("_T")


def _coerce(key: str, value: Any, target: Any) -> Any:
    """Convert a TOML or environment value to the type of the default, naming the key on failure."""
    if isinstance(target, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigurationError(f"{key} must be true or false, not {value!r}", key)
    if isinstance(target, int):
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{key} must be an integer, not {value!r}", key) from exc
    if isinstance(target, float):
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{key} must be a number, not {value!r}", key) from exc
    if isinstance(target, str):
        if not isinstance(value, str | int | float):
            raise ConfigurationError(f"{key} must be a string, not {value!r}", key)
        return str(value)
    raise ConfigurationError(f"{key}: unsupported value {value!r}", key)


def _build(cls: type[_T], data: Mapping[str, Any], prefix: str) -> _T:
    """Build one settings dataclass from a mapping, refusing unknown keys."""
    defaults = cls()
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigurationError(f"unknown configuration key {prefix}{key}", f"{prefix}{key}")
        default = getattr(defaults, key)
        if hasattr(default, "__dataclass_fields__"):
            if not isinstance(value, Mapping):
                raise ConfigurationError(f"{prefix}{key} must be a table", f"{prefix}{key}")
            kwargs[key] = _build(type(default), value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, default)
    return replace(defaults, **kwargs)  # type: ignore[type-var]


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Collect `MOGLI_BRIDGE_<SECTION>__<KEY>[__<SUBKEY>]` variables into a nested mapping."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name.removeprefix(ENV_PREFIX).lower().split("__")
        node: dict[str, Any] = out.setdefault(parts[0], {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _permission_warning(path: Path, data: Mapping[str, Any]) -> str | None:
    """A warning when a file holding secrets is readable by other users."""

    def has_secret(node: Mapping[str, Any]) -> bool:
        return any(
            (k in SECRET_KEYS and v) or (isinstance(v, Mapping) and has_secret(v)) for k, v in node.items()
        )

    mode = path.stat().st_mode
    if has_secret(data) and mode & (stat.S_IRGRP | stat.S_IROTH):
        return (
            f"{path} holds secrets and is readable by other users (mode {stat.S_IMODE(mode):o}); "
            "run chmod 600 on it or move the secrets to MOGLI_BRIDGE_* environment variables"
        )
    return None


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any) and the environment into validated Settings."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    warnings: list[str] = []
    config_path: Path | None = Path(path) if path is not None else None
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = Path(environ[CONFIG_ENV])  # the file every command of one shell uses (e.g. the demo's)
    if config_path is None and DEFAULT_CONFIG.exists():
        config_path = DEFAULT_CONFIG
    if config_path is not None:
        try:
            with config_path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigurationError(f"configuration file {config_path} does not exist", "--config") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_path} is not valid TOML: {exc}", "--config") from exc
        warning = _permission_warning(config_path, data)
        if warning:
            warnings.append(warning)
    data = _merge(data, _env_overrides(environ))
    settings = _build(Settings, {k: v for k, v in data.items() if k not in ("path", "warnings")}, "")
    settings = replace(settings, path=str(config_path) if config_path else None, warnings=tuple(warnings))
    validate(settings)
    return settings


_POLICY_CHOICES = {
    "on_activity_deleted": ("keep_deleted", "recreate"),
    "on_time_changed": ("restore", "write_back"),
    "on_owner_changed": ("accept", "write_back"),
    "on_mogli_event_deleted": ("recreate", "keep_deleted"),
    "channel": ("auto", "custom", "standard"),
    "transport": ("cometd", "pubsub"),
}


def validate(settings: Settings) -> None:
    """Check values that a type alone cannot; raise ConfigurationError naming the key."""
    sf = settings.salesforce
    if sf.auth not in ("jwt", "password", "refresh_token", "client_credentials"):
        raise ConfigurationError(
            f"salesforce.auth must be jwt, password, refresh_token or client_credentials, not {sf.auth!r}",
            "salesforce.auth",
        )
    if settings.sync.on_cancel not in ("delete", "keep"):
        raise ConfigurationError(
            f"sync.on_cancel must be delete or keep, not {settings.sync.on_cancel!r}", "sync.on_cancel"
        )
    for key, allowed in _POLICY_CHOICES.items():
        value = getattr(settings.sync, key)
        if value not in allowed:
            raise ConfigurationError(
                f"sync.{key} must be one of {', '.join(allowed)}, not {value!r}", f"sync.{key}"
            )
    if settings.tenancy.org_max_in_flight < 1:
        raise ConfigurationError("tenancy.org_max_in_flight must be at least 1", "tenancy.org_max_in_flight")
    if settings.tenancy.resume_check_seconds <= 0:
        raise ConfigurationError(
            "tenancy.resume_check_seconds must be above 0", "tenancy.resume_check_seconds"
        )
    _check_worker_timing(settings.tenancy)
    if settings.salesforce.api_budget_recheck_seconds <= 0:
        raise ConfigurationError(
            "salesforce.api_budget_recheck_seconds must be above 0", "salesforce.api_budget_recheck_seconds"
        )
    if not 0 <= settings.sync.delivered_events_warn_fraction < 1:
        raise ConfigurationError(
            "sync.delivered_events_warn_fraction must be at least 0 and below 1",
            "sync.delivered_events_warn_fraction",
        )
    name = settings.sync.channel_name
    if not (name.endswith("__chn") and name[:-5].replace("_", "").isalnum() and name[0].isalpha()):
        raise ConfigurationError(
            f"sync.channel_name must be a channel API name like MogliBridge__chn, not {name!r}",
            "sync.channel_name",
        )
    _check_endpoint(settings.sync.pubsub_endpoint, "sync.pubsub_endpoint")
    if not 1 <= settings.sync.batch_size <= 200:
        raise ConfigurationError("sync.batch_size must be between 1 and 200", "sync.batch_size")
    if settings.log.format not in ("auto", "json", "console"):
        raise ConfigurationError("log.format must be auto, json or console", "log.format")
    parse_backfill(settings.source.backfill)
    for name in ("schema", "slot", "publication"):
        value = getattr(settings.source, name)
        if not value.replace("_", "").isalnum() or not value[0].isalpha():
            raise ConfigurationError(
                f"source.{name} must be a plain SQL identifier (letters, digits, _), not {value!r}",
                f"source.{name}",
            )


def require_salesforce_credentials(sf: SalesforceSettings) -> None:
    """Check that the keys the chosen auth flow needs are set."""
    needed = {
        "jwt": ("client_id", "username", "private_key_file"),
        "password": ("client_id", "username", "password"),
        "refresh_token": ("client_id", "refresh_token"),
        "client_credentials": ("client_id", "client_secret"),
    }[sf.auth]
    for key in needed:
        if not getattr(sf, key):
            raise ConfigurationError(
                f"salesforce.{key} is required when salesforce.auth = {sf.auth!r} "
                f"(set it in the config file or MOGLI_BRIDGE_SALESFORCE__{key.upper()})",
                f"salesforce.{key}",
            )


def validate_for_run(settings: Settings) -> None:
    """Everything `run` needs, checked before it waits for the ledger lock: connection strings and URLs
    parse, the files it reads exist, the auth flow's keys are set. Raises ConfigurationError naming the key.
    """
    check_source_dsn(settings.source.dsn)
    check_ledger_url(settings.ledger.url)
    sf = settings.salesforce
    require_salesforce_credentials(sf)
    _check_http_url(sf.login_url, "salesforce.login_url")
    if sf.auth == "jwt":
        _check_file(sf.private_key_file, "salesforce.private_key_file")
    if sf.ca_bundle:
        _check_file(sf.ca_bundle, "salesforce.ca_bundle")
    _check_listen(settings.admin.listen, "admin.listen")
    if settings.tenancy.enabled:
        # Every customer org is reached with the one connected app's JWT bearer flow.
        if not sf.client_id:
            raise ConfigurationError(
                "tenancy.enabled needs salesforce.client_id: the connected app every org pre-authorises",
                "salesforce.client_id",
            )
        _check_file(sf.private_key_file, "salesforce.private_key_file")


def _check_worker_timing(tenancy: TenancySettings) -> None:
    """A round renews leases, so rounds must come well within a lease; a permit ends 2 s before it."""
    if tenancy.worker_round_seconds <= 0:
        raise ConfigurationError(
            "tenancy.worker_round_seconds must be above 0", "tenancy.worker_round_seconds"
        )
    if tenancy.worker_lease_seconds < 2 * tenancy.worker_round_seconds + 2:
        raise ConfigurationError(
            "tenancy.worker_lease_seconds must be at least twice tenancy.worker_round_seconds plus 2 s "
            "(a lease outlives a missed round; a worker stops its calls 2 s before its lease ends)",
            "tenancy.worker_lease_seconds",
        )


def check_source_dsn(dsn: str) -> None:
    """The scheduling database's DSN parses as libpq does (URI or key=value), with numeric ports."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    key = "source.dsn"
    if not dsn.strip():
        raise ConfigurationError(f"{key} is empty: set a PostgreSQL connection string", key)
    try:
        parts = parse_dsn(dsn)
    except ProgrammingError as exc:
        # libpq's message may quote the string, password included: keep only its reason.
        reason = str(exc).strip().splitlines()[0].split(' in URI: "')[0].split(" in connection info")[0]
        raise ConfigurationError(f"{key} is not a PostgreSQL connection string ({reason})", key) from None
    for port in (parts.get("port") or "").split(","):
        if port and not port.isdigit():
            raise ConfigurationError(f"{key}: port {port!r} is not a number", key)


def check_ledger_url(url: str) -> None:
    """The ledger URL is a SQLAlchemy sqlite or postgresql URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            "ledger.url is not a sqlite:/// or postgresql:// URL", "ledger.url"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "postgres"):
        raise ConfigurationError("ledger.url must be a sqlite:/// or postgresql:// URL", "ledger.url")


def _check_http_url(url: str, key: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"{key} must be an https:// (or http://) URL, not {url!r}", key)
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigurationError(f"{key}: the port of {url!r} is not a number", key) from None


def _check_file(path: str, key: str) -> None:
    if not path or not Path(path).expanduser().is_file():
        raise ConfigurationError(f"{key}: file {path!r} does not exist", key)


def _check_endpoint(endpoint: str, key: str) -> None:
    """A gRPC target HOST:PORT (no scheme: the transport's TLS is `sync.pubsub_plaintext`'s business)."""
    host, _, port = endpoint.rpartition(":")
    if "/" in endpoint or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigurationError(
            f"{key} must be HOST:PORT like api.pubsub.salesforce.com:7443, not {endpoint!r}", key
        )


def _check_listen(listen: str, key: str) -> None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"{key} must be HOST:PORT, not {listen!r}", key)


def redacted_url(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable url)"

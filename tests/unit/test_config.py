"""Settings: TOML plus environment overrides, validated with errors that name the key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config import load_settings, parse_backfill, require_salesforce_credentials, validate_for_run
from bridge.errors import ConfigurationError
from bridge.records.source import BackfillMode

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_matches_the_defaults() -> None:
    """config/bridge.example.toml documents every key with its default: loading it changes nothing."""
    example = load_settings(ROOT / "config" / "bridge.example.toml", environ={})
    defaults = load_settings(None, environ={})
    assert example.source == defaults.source
    assert example.salesforce == defaults.salesforce
    assert example.sync == defaults.sync
    assert example.ledger == defaults.ledger


def test_environment_overrides_every_level_of_the_tree(tmp_path: Path) -> None:
    """MOGLI_BRIDGE_<SECTION>__<KEY>[__<SUBKEY>] overrides file values, converted to the key's type."""
    cfg = tmp_path / "b.toml"
    cfg.write_text('[sync]\nbatch_size = 50\n[salesforce]\nclient_name = "x"\n')
    env = {
        "MOGLI_BRIDGE_SYNC__BATCH_SIZE": "120",
        "MOGLI_BRIDGE_SALESFORCE__CLIENT_SECRET": "s3cret",
        "MOGLI_BRIDGE_SALESFORCE__OBJECTS__MOGLI_EVENT_OBJECT": "Ns__Mogli_Event__c",
        "UNRELATED": "1",
    }
    s = load_settings(cfg, environ=env)
    assert s.sync.batch_size == 120
    assert s.salesforce.client_secret == "s3cret"
    assert s.salesforce.client_name == "x"
    assert s.salesforce.objects.mogli_event_object == "Ns__Mogli_Event__c"
    assert s.secrets() == ("s3cret",)


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[sync]\nbatch_sise = 3\n", {}, "sync.batch_sise"),
        ("[sync]\nbatch_size = 500\n", {}, "sync.batch_size"),
        ("", {"MOGLI_BRIDGE_SYNC__BATCH_SIZE": "many"}, "sync.batch_size"),
        ('[sync]\non_cancel = "archive"\n', {}, "sync.on_cancel"),
        ('[salesforce]\nauth = "magic"\n', {}, "salesforce.auth"),
        ('[source]\nbackfill = "yesterday"\n', {}, "source.backfill"),
        ('[source]\nslot = "bad-name;drop"\n', {}, "source.slot"),
        ("[nonsense]\nx = 1\n", {}, "nonsense"),
    ],
    ids=[
        "unknown-key",
        "batch-over-200",
        "not-an-int",
        "on-cancel",
        "auth",
        "backfill",
        "slot-ident",
        "section",
    ],
)
def test_bad_settings_raise_an_error_naming_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str
) -> None:
    """Every validation error carries the dotted key so the operator knows what to fix."""
    cfg = tmp_path / "b.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigurationError) as err:
        load_settings(cfg, environ=env)
    assert err.value.key == key
    assert key in str(err.value)


def test_missing_file_and_bad_toml_are_configuration_errors(tmp_path: Path) -> None:
    """A missing or unparsable file is a configuration error, not a traceback."""
    with pytest.raises(ConfigurationError):
        load_settings(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[sync\n")
    with pytest.raises(ConfigurationError):
        load_settings(bad, environ={})


def test_world_readable_file_with_secrets_produces_a_warning(tmp_path: Path) -> None:
    """A config file holding a secret that other users can read is reported."""
    cfg = tmp_path / "b.toml"
    cfg.write_text('[salesforce]\npassword = "hunter22"\n')
    cfg.chmod(0o644)
    assert any("chmod 600" in w for w in load_settings(cfg, environ={}).warnings)
    cfg.chmod(0o600)
    assert load_settings(cfg, environ={}).warnings == ()


def test_backfill_values() -> None:
    """none, upcoming and since:<date> parse; a date without zone is UTC."""
    assert parse_backfill("none").mode is BackfillMode.NONE
    assert parse_backfill("upcoming").mode is BackfillMode.UPCOMING
    since = parse_backfill("since:2026-01-02")
    assert since.mode is BackfillMode.SINCE and since.since == datetime(2026, 1, 2, tzinfo=UTC)


def test_each_auth_flow_requires_its_keys() -> None:
    """The credentials check names the first missing key of the chosen flow."""
    s = load_settings(
        None,
        environ={"MOGLI_BRIDGE_SALESFORCE__AUTH": "password", "MOGLI_BRIDGE_SALESFORCE__CLIENT_ID": "id"},
    )
    with pytest.raises(ConfigurationError) as err:
        require_salesforce_credentials(s.salesforce)
    assert err.value.key == "salesforce.username"


_RUN_READY = {
    "MOGLI_BRIDGE_SALESFORCE__AUTH": "password",
    "MOGLI_BRIDGE_SALESFORCE__CLIENT_ID": "cid",
    "MOGLI_BRIDGE_SALESFORCE__USERNAME": "bridge",
    "MOGLI_BRIDGE_SALESFORCE__PASSWORD": "pw",
}


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("SOURCE__DSN", "not a dsn", "source.dsn"),
        ("SOURCE__DSN", "", "source.dsn"),
        ("SOURCE__DSN", "postgresql://u@h:port/db", "source.dsn"),
        ("SOURCE__DSN", "host=h port=54x", "source.dsn"),
        ("SOURCE__DSN", "hostname=h", "source.dsn"),
        ("LEDGER__URL", "not a url", "ledger.url"),
        ("LEDGER__URL", "mysql://h/db", "ledger.url"),
        ("SALESFORCE__LOGIN_URL", "login.salesforce.com", "salesforce.login_url"),
        ("SALESFORCE__LOGIN_URL", "https://h:port", "salesforce.login_url"),
        ("SALESFORCE__PASSWORD", "", "salesforce.password"),
        ("ADMIN__LISTEN", "8787", "admin.listen"),
        ("ADMIN__LISTEN", "127.0.0.1:http", "admin.listen"),
    ],
)
def test_run_refuses_a_malformed_setting_naming_its_key(variable: str, value: str, key: str) -> None:
    """validate_for_run (what `run` checks before the ledger lock) names the key of each malformed value."""
    settings = load_settings(None, environ={**_RUN_READY, f"MOGLI_BRIDGE_{variable}": value})
    with pytest.raises(ConfigurationError) as err:
        validate_for_run(settings)
    assert err.value.key == key and key in str(err.value)


@pytest.mark.parametrize(
    "dsn", ["postgresql://u:p@h:5432,h2:5433/db?sslmode=require", "host=h port=5432 dbname=db", "dbname=x"]
)
def test_run_accepts_every_libpq_form_of_the_dsn(dsn: str) -> None:
    """URIs (several hosts included) and key=value strings pass the DSN check."""
    settings = load_settings(None, environ={**_RUN_READY, "MOGLI_BRIDGE_SOURCE__DSN": dsn})
    validate_for_run(settings)


def test_the_config_file_comes_from_mogli_bridge_config_unless_given(tmp_path: Path) -> None:
    """MOGLI_BRIDGE_CONFIG names the file when --config is not given; --config wins; a missing file is an
    error."""
    named, given = tmp_path / "named.toml", tmp_path / "given.toml"
    named.write_text('[admin]\nlisten = "127.0.0.1:9001"\n')
    given.write_text('[admin]\nlisten = "127.0.0.1:9002"\n')
    environ = {"MOGLI_BRIDGE_CONFIG": str(named)}
    assert load_settings(None, environ).admin.listen == "127.0.0.1:9001"
    assert load_settings(None, environ).path == str(named)
    assert load_settings(given, environ).admin.listen == "127.0.0.1:9002"
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(None, {"MOGLI_BRIDGE_CONFIG": str(tmp_path / "absent.toml")})

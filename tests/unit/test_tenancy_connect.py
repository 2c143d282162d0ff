"""How the bridge reaches one org: its settings from the connection, and the reasons it shows when paused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config import ConfigurationError, Settings, load_settings, validate_for_run
from bridge.errors import ApiLimitExhausted, SalesforceUnavailable
from bridge.records.ledger import DEFAULT_ORG, OrgRecord
from bridge.tenancy.connect import OrgUnusable, org_settings, pause_reason

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _org(org_id: str = "6f1c0000-0000-0000-0000-000000000001", **kw: object) -> OrgRecord:
    fields: dict[str, object] = {
        "org_id": org_id,
        "name": "Acme",
        "login_url": "https://acme.my.salesforce.com",
        "username": "integration@acme.example",
        "connection": "connected",
        "salesforce_org_id": None,
        "instance_url": None,
        "state": "active",
        "reason": None,
        "api_used": None,
        "api_limit": None,
        "state_since": NOW,
        "updated_at": NOW,
    }
    fields.update(kw)
    return OrgRecord(**fields)  # type: ignore[arg-type]


def _settings(**salesforce: object) -> Settings:
    env = {"MOGLI_BRIDGE_SALESFORCE__" + k.upper(): str(v) for k, v in salesforce.items()}
    return load_settings(None, env)


def test_a_customer_org_is_reached_with_the_connected_apps_jwt_as_its_integration_user() -> None:
    """The connection's login URL and username with JWT; none of the default org's secrets carried over."""
    base = _settings(
        auth="password",
        client_id="app",
        client_secret="s3cret",
        password="pw",
        refresh_token="rt",
        private_key_file="/keys/app.pem",
        audience="https://login.salesforce.com",
        max_in_flight=8,
    )
    sf = org_settings(base, _org()).salesforce
    assert (sf.auth, sf.login_url, sf.username) == (
        "jwt",
        "https://acme.my.salesforce.com",
        "integration@acme.example",
    )
    assert (sf.client_id, sf.private_key_file) == ("app", "/keys/app.pem")
    assert (sf.password, sf.client_secret, sf.refresh_token, sf.audience) == ("", "", "", "")
    assert sf.max_in_flight == base.tenancy.org_max_in_flight


def test_the_default_org_keeps_the_salesforce_section_unchanged() -> None:
    """The org of [salesforce] is reached exactly as configured."""
    base = _settings(auth="password", username="bridge@example.com", password="pw")
    assert org_settings(base, _org(DEFAULT_ORG, login_url=None, username=None)) is base


def test_a_connection_without_user_or_login_url_is_unusable() -> None:
    """A connection row that names no integration user cannot be served (and says why)."""
    with pytest.raises(OrgUnusable, match="no login URL or no integration user"):
        org_settings(_settings(), _org(username=None))


def test_pause_reasons_say_why_without_secrets() -> None:
    """Refused tokens, spent allocations and outages each read as a reason; a token-like value is masked."""
    refused = ConfigurationError(
        "Salesforce login failed with salesforce.auth = 'jwt' (invalid_grant: user hasn't approved this "
        "consumer); check salesforce.username",
        "salesforce.username",
    )
    assert pause_reason(refused) == (
        "Salesforce refused the integration user's token (invalid_grant: user hasn't approved this consumer)"
    )
    assert pause_reason(ApiLimitExhausted("REQUEST_LIMIT_EXCEEDED")).startswith("the org's API allocation")
    outage = pause_reason(ExceptionGroup("parts", [SalesforceUnavailable("GET https://x?access_token=abc")]))
    assert outage.startswith("Salesforce is unreachable") and "abc" not in outage


def test_tenancy_needs_the_connected_apps_client_id_and_key(tmp_path: Path) -> None:
    """`run` with tenancy on refuses to start without salesforce.client_id or the private key file."""
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    env = {
        "MOGLI_BRIDGE_TENANCY__ENABLED": "true",
        "MOGLI_BRIDGE_SALESFORCE__AUTH": "password",
        "MOGLI_BRIDGE_SALESFORCE__USERNAME": "bridge@example.com",
        "MOGLI_BRIDGE_SALESFORCE__PASSWORD": "pw",
        "MOGLI_BRIDGE_SALESFORCE__CLIENT_ID": "",
    }
    with pytest.raises(ConfigurationError) as missing_id:
        validate_for_run(load_settings(None, env))
    assert missing_id.value.key == "salesforce.client_id"
    env["MOGLI_BRIDGE_SALESFORCE__CLIENT_ID"] = "app"
    with pytest.raises(ConfigurationError) as missing_key:
        validate_for_run(load_settings(None, env))
    assert missing_key.value.key == "salesforce.private_key_file"
    env["MOGLI_BRIDGE_SALESFORCE__PRIVATE_KEY_FILE"] = str(key)
    validate_for_run(load_settings(None, env))

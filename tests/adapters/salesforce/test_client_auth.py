"""OAuth against the emulator: the four grants, refresh on 401, the shared token, TLS and bad settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import structlog.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sfclient_support import USERNAME, Control, FakeTime, password_settings

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator, start_emulator
from bridge.errors import ConfigurationError
from bridge.salesforce.auth import TokenManager, grant_from_settings, make_ssl_context
from bridge.salesforce.rest import SalesforceClient

DEFAULT_ORG = Path(__file__).resolve().parents[3] / "bridge" / "emulator" / "default_org.toml"


async def test_password_grant_logs_in_and_calls_rest(
    client: SalesforceClient, tokens: TokenManager, control: Control
) -> None:
    """The password grant yields a token the REST API accepts; one token request, one API call."""
    usage = await client.limits()
    assert usage.limit == 15000
    assert tokens.token_requests == 1
    stats = await control.stats()
    assert stats["token_requests"] == 1
    assert client.calls == 1


async def test_refresh_token_grant(
    http: aiohttp.ClientSession, emulator: RunningEmulator, control: Control
) -> None:
    """A refresh token issued by the org logs the bridge in without a password."""
    issued = await control.post("oauth/refresh-tokens", {"username": USERNAME})
    settings = password_settings(
        emulator.url, auth="refresh_token", password="", refresh_token=issued["refresh_token"]
    )
    client = SalesforceClient(http, TokenManager(http, settings), settings)
    assert (await client.limits()).limit == 15000


async def test_client_credentials_grant(
    http: aiohttp.ClientSession, emulator: RunningEmulator, control: Control
) -> None:
    """The client-credentials grant runs as the org's integration user."""
    settings = password_settings(emulator.url, auth="client_credentials", username="", password="")
    client = SalesforceClient(http, TokenManager(http, settings), settings)
    rows = await client.query("SELECT Id FROM User")
    assert rows
    assert (await control.stats())["token_requests"] == 1


def write_rsa_pair(directory: Path) -> tuple[Path, Path]:
    """A fresh RSA key pair as PEM files (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "bridge.key"
    public = directory / "bridge.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def org_file_with_public_key(directory: Path, public_key: Path) -> Path:
    """The default org, plus the connected app's public key so the emulator verifies JWT signatures."""
    text = DEFAULT_ORG.read_text().replace(
        "[org]\n", f'[org]\njwt_public_key_file = "{public_key.name}"\n', 1
    )
    org = directory / "org.toml"
    org.write_text(text)
    return org


async def test_jwt_bearer_grant_with_verified_signature(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """An RS256 assertion signed with the configured key is accepted by an org holding the public key."""
    private, public = write_rsa_pair(tmp_path)
    emulator = await start_emulator(
        host="127.0.0.1", port=0, org_file=org_file_with_public_key(tmp_path, public)
    )
    try:
        settings = password_settings(emulator.url, auth="jwt", password="", private_key_file=str(private))
        client = SalesforceClient(http, TokenManager(http, settings), settings)
        assert (await client.limits()).limit == 15000
    finally:
        await emulator.stop()


async def test_jwt_signed_with_another_key_names_the_keys(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A JWT the org cannot verify is a configuration error pointing at the key file and user."""
    _, public = write_rsa_pair(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    wrong_private, _ = write_rsa_pair(other)
    emulator = await start_emulator(
        host="127.0.0.1", port=0, org_file=org_file_with_public_key(tmp_path, public)
    )
    try:
        settings = password_settings(
            emulator.url, auth="jwt", password="", private_key_file=str(wrong_private)
        )
        client = SalesforceClient(http, TokenManager(http, settings), settings)
        with pytest.raises(ConfigurationError) as info:
            await client.limits()
        assert "salesforce.private_key_file" in str(info.value)
        assert client.calls == 0
    finally:
        await emulator.stop()


def test_missing_private_key_file_names_the_key(tmp_path: Path) -> None:
    """An unreadable private key file is reported before any request, naming the key."""
    settings = SalesforceSettings(
        auth="jwt", client_id="x", username=USERNAME, private_key_file=str(tmp_path / "no")
    )
    with pytest.raises(ConfigurationError) as info:
        grant_from_settings(settings)
    assert info.value.key == "salesforce.private_key_file"


async def test_wrong_password_is_a_configuration_error(
    http: aiohttp.ClientSession, emulator: RunningEmulator
) -> None:
    """invalid_grant on the password flow names salesforce.username/password and is not retried."""
    settings = password_settings(emulator.url, password="wrong")
    tokens = TokenManager(http, settings)
    with pytest.raises(ConfigurationError) as info:
        await tokens.get()
    assert info.value.key == "salesforce.username"
    assert "salesforce.password" in str(info.value)
    assert "wrong" not in str(info.value)
    assert tokens.token_requests == 1


async def test_expired_session_refreshes_once(
    client: SalesforceClient, tokens: TokenManager, control: Control
) -> None:
    """After the org expires every session, the next call refreshes once and succeeds."""
    await client.limits()
    before = await control.stats()
    await control.post("sessions/expire")
    calls = client.calls
    await client.limits()
    after = await control.stats()
    assert after["token_requests"] - before["token_requests"] == 1
    assert client.calls - calls == 2  # the refused request and its resend
    assert tokens.token_requests == 2


async def test_concurrent_401s_share_one_refresh(
    client: SalesforceClient, tokens: TokenManager, control: Control
) -> None:
    """Ten calls that all meet an expired session cause exactly one new login."""
    await client.limits()
    await control.post("sessions/expire")
    await asyncio.gather(*(client.query("SELECT Id FROM User") for _ in range(10)))
    assert tokens.token_requests == 2
    assert (await control.stats())["token_requests"] == 2


async def test_refresh_with_stale_token_is_a_no_op_once_replaced(tokens: TokenManager) -> None:
    """refresh(stale) after someone else refreshed returns the new token without logging in again."""
    first = await tokens.get()
    second = await tokens.refresh(first)
    third = await tokens.refresh(first)
    assert second is third
    assert second is not first
    assert tokens.token_requests == 2


async def test_session_not_valid_for_rest_is_not_refreshed(
    client: SalesforceClient, tokens: TokenManager, control: Control
) -> None:
    """The 'not valid for use with the REST API' 401 stops at once: re-authenticating cannot fix it."""
    await client.limits()
    await control.fault(
        path="/limits",
        status=401,
        error_code="INVALID_SESSION_ID",
        message="This session is not valid for use with the REST API",
        times=1,
    )
    with pytest.raises(ConfigurationError):
        await client.limits()
    assert tokens.token_requests == 1


async def test_token_endpoint_outage_is_retried(
    http: aiohttp.ClientSession, settings: SalesforceSettings, control: Control, fake_time: FakeTime
) -> None:
    """A 503 from the token endpoint is transient: retried with backoff, then the login succeeds."""
    await control.fault(path="/services/oauth2/token", status=503, times=2)
    tokens = TokenManager(http, settings, sleep=fake_time.sleep, clock=fake_time.clock)
    await tokens.get()
    assert tokens.token_requests == 3
    assert len(fake_time.sleeps) == 2


async def test_tls_with_ca_bundle(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """With salesforce.ca_bundle naming the emulator's CA, login and REST run over verified HTTPS."""
    emulator = await start_emulator(host="127.0.0.1", port=0, tls=True, ca_out=tmp_path / "ca.pem")
    try:
        assert emulator.ca_file is not None
        settings = password_settings(emulator.url, ca_bundle=str(emulator.ca_file))
        connector = aiohttp.TCPConnector(ssl=make_ssl_context(settings.ca_bundle))
        async with aiohttp.ClientSession(connector=connector) as tls_http:
            client = SalesforceClient(tls_http, TokenManager(tls_http, settings), settings)
            assert (await client.limits()).limit == 15000
    finally:
        await emulator.stop()


def test_unreadable_ca_bundle_names_the_key(tmp_path: Path) -> None:
    """A CA bundle that is missing or not PEM is a configuration error naming salesforce.ca_bundle."""
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    for path in (str(tmp_path / "missing.pem"), str(garbage)):
        with pytest.raises(ConfigurationError) as info:
            make_ssl_context(path)
        assert info.value.key == "salesforce.ca_bundle"


async def test_rotated_refresh_token_is_used_for_the_next_refresh(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With rotation the org kills the old refresh token; the manager keeps the new one for the next login."""
    org = tmp_path / "org.toml"
    org.write_text(
        DEFAULT_ORG.read_text().replace("refresh_token_rotation = false", "refresh_token_rotation = true")
    )
    emulator = await start_emulator(host="127.0.0.1", port=0, org_file=org)
    try:
        control = Control(http, emulator.url)
        issued = await control.post("oauth/refresh-tokens", {"username": USERNAME})
        settings = password_settings(
            emulator.url, auth="refresh_token", password="", refresh_token=issued["refresh_token"]
        )
        tokens = TokenManager(http, settings)
        client = SalesforceClient(http, tokens, settings)
        await client.limits()
        await control.post("sessions/expire")
        await client.limits()
        assert tokens.token_requests == 2
    finally:
        await emulator.stop()


async def test_no_secret_reaches_the_logs(
    client: SalesforceClient, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """Login, session expiry, refresh and retries log neither the access token nor the password or secret."""
    with structlog.testing.capture_logs() as logs:
        await client.limits()
        await control.post("sessions/expire")
        await control.fault(path="/limits", status=503, times=1)
        await client.limits()
    token = tokens.token
    assert token is not None
    text = repr(logs) + repr(token) + repr(tokens)
    assert logs
    for secret in (token.access_token, settings.client_secret):
        assert secret not in text
    # The emulator's password is a common word (it also names the emulator's own log events).
    assert all(settings.password not in map(str, entry.values()) for entry in logs)

"""The emulated OAuth 2.0 token endpoint (reference §1): grants, response shape, errors, expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.adapters.emulator.conftest import EmulatorClient, running_emulator

TOKEN = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


ORG_TOML = """
[org]
id = "00DEm0000000002"
accept_any_client = false
refresh_token_rotation = {rotation}
jwt_public_key_file = "jwt_public.pem"

[[clients]]
client_id = "bridge-app"
client_secret = "app-secret"

[[users]]
username = "bridge@example.com"
email = "bridge@example.com"
last_name = "Integration"
password = "emulator"

[[users]]
username = "other@example.com"
email = "other@example.com"
last_name = "Other"
password = "other-pass"
"""


@pytest.fixture(scope="module")
def key_pair() -> tuple[bytes, bytes]:
    """One RSA key pair for the module (key generation is slow)."""
    return _key_pair()


def _org_file(tmp_path: Path, public_pem: bytes, *, rotation: bool = False) -> Path:
    (tmp_path / "jwt_public.pem").write_bytes(public_pem)
    path = tmp_path / "org.toml"
    path.write_text(ORG_TOML.replace("{rotation}", "true" if rotation else "false"))
    return path


def _assertion(private_pem: bytes, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": "bridge-app",
        "sub": "bridge@example.com",
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 120,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, private_pem, algorithm="RS256")


async def test_password_grant_answers_the_documented_success_shape(emulator: EmulatorClient) -> None:
    """Password grant: 200 JSON with access_token, instance_url on localhost without a trailing slash,
    id, token_type Bearer, issued_at as a string of epoch milliseconds, and the HMAC-SHA256 signature."""
    form = {
        "grant_type": "password",
        "client_id": "any-id",
        "client_secret": "any-secret",
        "username": "bridge@example.com",
        "password": "emulator",
    }
    reply = await emulator.request("POST", TOKEN, data=form)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.body
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == emulator.url
    assert body["instance_url"].startswith("http://localhost:") and not body["instance_url"].endswith("/")
    assert isinstance(body["issued_at"], str) and len(body["issued_at"]) == 13
    assert body["id"] == f"{emulator.url}/id/{emulator.state.org.org_id}/{emulator.store.integration_user_id}"
    expected = hmac.new(b"any-secret", (body["id"] + body["issued_at"]).encode(), hashlib.sha256).digest()
    assert body["signature"] == base64.b64encode(expected).decode()
    assert "refresh_token" not in body
    assert body["access_token"].startswith(emulator.state.org.org_id[:15] + "!")


@pytest.mark.parametrize(
    ("form", "error", "description"),
    [
        (
            {
                "grant_type": "password",
                "client_id": "c",
                "client_secret": "s",
                "username": "bridge@example.com",
                "password": "wrong",
            },
            "invalid_grant",
            "authentication failure",
        ),
        (
            {
                "grant_type": "password",
                "client_id": "c",
                "client_secret": "s",
                "username": "inactive@example.com",
                "password": "emulator",
            },
            "invalid_grant",
            "authentication failure",
        ),
        (
            {"grant_type": "authorization_code", "client_id": "c"},
            "unsupported_grant_type",
            "grant type not supported",
        ),
        ({"client_id": "c"}, "invalid_request", "grant type is missing"),
        (
            {"grant_type": "refresh_token", "refresh_token": "nope"},
            "invalid_grant",
            "expired access/refresh token",
        ),
    ],
)
async def test_token_errors_are_400_json_pairs(
    emulator: EmulatorClient, form: dict[str, str], error: str, description: str
) -> None:
    """Failed grants answer 400 `{"error","error_description"}` with Salesforce's pairs, as JSON."""
    reply = await emulator.request("POST", TOKEN, data=form)
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == {"error": error, "error_description": description}


async def test_client_credentials_run_as_the_integration_user(emulator: EmulatorClient) -> None:
    """client_credentials issues a token for the org's integration (Run As) user, usable on REST."""
    form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    reply = await emulator.request("POST", TOKEN, data=form)
    assert reply.status == 200
    assert reply.body["id"].endswith("/" + emulator.store.integration_user_id)
    limits = await emulator.rest("GET", "/limits", token=reply.body["access_token"])
    assert limits.status == 200


async def test_client_credentials_refused_on_a_login_host(emulator: EmulatorClient) -> None:
    """client_credentials sent to login.salesforce.com answers invalid_grant `request not supported on this
    domain` (it must go to the org's My Domain)."""
    form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    reply = await emulator.request("POST", TOKEN, data=form, headers={"Host": "login.salesforce.com"})
    assert reply.status == 400
    assert reply.body == {
        "error": "invalid_grant",
        "error_description": "request not supported on this domain",
    }


async def test_refresh_token_grant_issues_access_without_rotation(emulator: EmulatorClient) -> None:
    """A refresh token (issued through the control API) buys new access tokens and is not rotated."""
    issued = await emulator.control("POST", "/oauth/refresh-tokens", {"username": "owner1@example.com"})
    form = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], "client_id": "c"}
    first = await emulator.request("POST", TOKEN, data=form)
    second = await emulator.request("POST", TOKEN, data=form)
    assert first.status == second.status == 200
    assert "refresh_token" not in first.body
    assert first.body["id"].endswith("/" + issued["user_id"])
    assert first.body["access_token"] != second.body["access_token"]


async def test_refresh_token_rotation_kills_the_old_token(
    tmp_path: Path, key_pair: tuple[bytes, bytes]
) -> None:
    """With rotation on, the refresh grant answers a new refresh token and the old one stops working."""
    org = _org_file(tmp_path, key_pair[1], rotation=True)
    async with running_emulator(org_file=org) as emu:
        issued = await emu.control("POST", "/oauth/refresh-tokens", {"username": "bridge@example.com"})
        form = {
            "grant_type": "refresh_token",
            "refresh_token": issued["refresh_token"],
            "client_id": "bridge-app",
            "client_secret": "app-secret",
        }
        first = await emu.request("POST", TOKEN, data=form)
        assert first.status == 200
        assert first.body["refresh_token"] != issued["refresh_token"]
        again = await emu.request("POST", TOKEN, data=form)
        assert again.status == 400
        assert again.body["error"] == "invalid_grant"


async def test_configured_clients_reject_unknown_ids_and_wrong_secrets(
    tmp_path: Path, key_pair: tuple[bytes, bytes]
) -> None:
    """An org that lists its connected apps refuses an unknown consumer key and a wrong secret."""
    org = _org_file(tmp_path, key_pair[1])
    base = {"grant_type": "password", "username": "bridge@example.com", "password": "emulator"}
    async with running_emulator(org_file=org) as emu:
        unknown = await emu.request(
            "POST", TOKEN, data={**base, "client_id": "x", "client_secret": "app-secret"}
        )
        wrong = await emu.request(
            "POST", TOKEN, data={**base, "client_id": "bridge-app", "client_secret": "nope"}
        )
        right = await emu.request(
            "POST", TOKEN, data={**base, "client_id": "bridge-app", "client_secret": "app-secret"}
        )
    assert (unknown.status, unknown.body["error"]) == (400, "invalid_client_id")
    assert (wrong.status, wrong.body["error"]) == (400, "invalid_client")
    assert right.status == 200


async def test_jwt_bearer_grant_verifies_the_signature(tmp_path: Path, key_pair: tuple[bytes, bytes]) -> None:
    """JWT bearer: an RS256 assertion signed with the org's key pair logs in `sub`; one signed with
    another key is refused with invalid_grant."""
    private, public = key_pair
    other_private, _ = _key_pair()
    org = _org_file(tmp_path, public)
    async with running_emulator(org_file=org) as emu:
        good = await emu.request(
            "POST", TOKEN, data={"grant_type": JWT_GRANT, "assertion": _assertion(private)}
        )
        forged = await emu.request(
            "POST", TOKEN, data={"grant_type": JWT_GRANT, "assertion": _assertion(other_private)}
        )
        user_id = emu.store.integration_user_id
    assert good.status == 200
    assert good.body["id"].endswith("/" + user_id)
    assert "refresh_token" not in good.body
    assert forged.status == 400
    assert forged.body == {"error": "invalid_grant", "error_description": "invalid assertion"}


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"exp": int(time.time()) - 600}, "invalid_grant"),
        ({"exp": int(time.time()) + 3600}, "invalid_grant"),
        ({"aud": "https://evil.example.com"}, "invalid_grant"),
        ({"sub": "nobody@example.com"}, "invalid_grant"),
        ({"iss": "unknown-app"}, "invalid_client_id"),
        ({"exp": None}, "invalid_grant"),
    ],
)
async def test_jwt_bearer_grant_checks_the_claims(
    tmp_path: Path, key_pair: tuple[bytes, bytes], overrides: dict[str, Any], error: str
) -> None:
    """JWT bearer refuses an expired assertion, exp more than 3 minutes ahead, a foreign audience,
    an unknown user and an unknown consumer key."""
    org = _org_file(tmp_path, key_pair[1])
    async with running_emulator(org_file=org) as emu:
        assertion = _assertion(key_pair[0], **overrides)
        reply = await emu.request("POST", TOKEN, data={"grant_type": JWT_GRANT, "assertion": assertion})
    assert reply.status == 400
    assert reply.body["error"] == error


async def test_jwt_audience_may_be_the_emulator_itself(tmp_path: Path, key_pair: tuple[bytes, bytes]) -> None:
    """JWT bearer accepts the emulator's own URL as `aud` (it stands in for the login host)."""
    org = _org_file(tmp_path, key_pair[1])
    async with running_emulator(org_file=org) as emu:
        assertion = _assertion(key_pair[0], aud=emu.url)
        reply = await emu.request("POST", TOKEN, data={"grant_type": JWT_GRANT, "assertion": assertion})
    assert reply.status == 200


async def test_expired_sessions_get_401_invalid_session_id(emulator: EmulatorClient) -> None:
    """After sessions/expire every token answers 401 INVALID_SESSION_ID with `WWW-Authenticate: Token`;
    a new login works again."""
    token = await emulator.token()
    assert (await emulator.rest("GET", "/limits", token=token)).status == 200
    expired = await emulator.control("POST", "/sessions/expire")
    assert expired["expired"] >= 1
    reply = await emulator.rest("GET", "/limits", token=token)
    assert reply.status == 401
    assert reply.body == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert reply.headers["WWW-Authenticate"] == "Token"
    fresh = await emulator.token()
    assert (await emulator.rest("GET", "/limits", token=fresh)).status == 200


async def test_session_lifetime_ends_tokens(emulator: EmulatorClient) -> None:
    """A token issued under a zero session lifetime is already expired (the session timeout)."""
    await emulator.control("POST", "/sessions/expire", {"lifetime_seconds": 0})
    token = await emulator.token()
    assert (await emulator.rest("GET", "/limits", token=token)).status == 401


async def test_missing_authorization_is_401(emulator: EmulatorClient) -> None:
    """A REST call without a Bearer token is refused with 401 INVALID_SESSION_ID."""
    reply = await emulator.request("GET", "/services/data/v60.0/limits")
    assert reply.status == 401
    assert reply.body[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_token_requests_are_counted(emulator: EmulatorClient) -> None:
    """Every token request, good or bad, shows in `token_requests` and none in `api_requests`."""
    await emulator.token()
    await emulator.request("POST", TOKEN, data={"grant_type": "bogus"})
    stats = await emulator.control("GET", "/stats")
    assert stats["token_requests"] == 2
    assert stats["api_requests"]["total"] == 0


async def test_default_org_accepts_any_well_formed_jwt(
    emulator: EmulatorClient, key_pair: tuple[bytes, bytes]
) -> None:
    """The default org names no public key and accepts any client, so any well-formed RS256 assertion
    for a known user works; an HS256 one does not."""
    good = _assertion(key_pair[0], iss="whatever-app")
    reply = await emulator.request("POST", TOKEN, data={"grant_type": JWT_GRANT, "assertion": good})
    assert reply.status == 200
    hs256 = jwt.encode(
        {
            "iss": "x",
            "sub": "bridge@example.com",
            "aud": "https://login.salesforce.com",
            "exp": int(time.time()) + 60,
        },
        "a-shared-secret-of-sufficient-length",
        algorithm="HS256",
    )
    refused = await emulator.request("POST", TOKEN, data={"grant_type": JWT_GRANT, "assertion": hs256})
    assert refused.body == {"error": "invalid_grant", "error_description": "invalid assertion"}


async def test_client_credentials_may_come_as_basic_auth(emulator: EmulatorClient) -> None:
    """The consumer key and secret may be sent as `Authorization: Basic` instead of form fields."""
    basic = base64.b64encode(b"app-id:app-secret").decode()
    reply = await emulator.request(
        "POST", TOKEN, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert reply.status == 200
    expected = hmac.new(b"app-secret", (reply.body["id"] + reply.body["issued_at"]).encode(), hashlib.sha256)
    assert reply.body["signature"] == base64.b64encode(expected.digest()).decode()

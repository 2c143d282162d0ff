"""OAuth grant forms, JWT assertions, audiences and token decoding (no network)."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.config import SalesforceSettings
from bridge.errors import ConfigurationError, SalesforceUnavailable
from bridge.salesforce.auth import (
    JWT_GRANT_TYPE,
    AccessToken,
    ClientCredentialsGrant,
    JwtBearerGrant,
    PasswordGrant,
    RefreshTokenGrant,
    _signing_key,
    decode_token_response,
    grant_from_settings,
    jwt_audience,
    make_ssl_context,
)

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    """A throwaway RSA key pair as PEM text (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_password_grant_form() -> None:
    """The password grant sends client id and secret, username and password."""
    form = PasswordGrant("cid", "csecret", "user@example.com", "pw").form(NOW)
    assert form == {
        "grant_type": "password",
        "client_id": "cid",
        "client_secret": "csecret",
        "username": "user@example.com",
        "password": "pw",
    }


def test_refresh_grant_sends_secret_only_when_configured() -> None:
    """Connected apps may not require the secret on refresh; an empty one is not sent."""
    without = RefreshTokenGrant("cid", "", "rt").form(NOW)
    assert without == {"grant_type": "refresh_token", "client_id": "cid", "refresh_token": "rt"}
    assert RefreshTokenGrant("cid", "s", "rt").form(NOW)["client_secret"] == "s"


def test_client_credentials_form() -> None:
    """The client-credentials grant sends only the app's id and secret."""
    form = ClientCredentialsGrant("cid", "s").form(NOW)
    assert form == {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "s"}


def test_jwt_assertion_claims_and_signature(key_pair: tuple[str, str]) -> None:
    """The assertion is RS256-signed with iss=client id, sub=username, aud, and a three-minute expiry."""
    private, public = key_pair
    form = JwtBearerGrant("cid", "user@example.com", "https://login.salesforce.com", private).form(NOW)
    assert form["grant_type"] == JWT_GRANT_TYPE
    assert jwt.get_unverified_header(form["assertion"])["alg"] == "RS256"
    claims = jwt.decode(
        form["assertion"],
        public,
        algorithms=["RS256"],
        audience="https://login.salesforce.com",
        options={"verify_exp": False},
    )
    assert claims == {
        "iss": "cid",
        "sub": "user@example.com",
        "aud": "https://login.salesforce.com",
        "exp": int(NOW) + 180,
    }


def test_jwt_with_unusable_key_names_the_key_file() -> None:
    """A key that is not an RSA private key is a configuration error naming salesforce.private_key_file."""
    grant = JwtBearerGrant("cid", "user@example.com", "https://login.salesforce.com", "not a key")
    with pytest.raises(ConfigurationError) as info:
        grant.form(NOW)
    assert info.value.key == "salesforce.private_key_file"


@pytest.mark.parametrize(
    ("login_url", "audience", "expected"),
    [
        ("https://login.salesforce.com", "", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "", "https://test.salesforce.com"),
        ("https://acme--dev.sandbox.my.salesforce.com", "", "https://test.salesforce.com"),
        ("https://acme.my.salesforce.com", "", "https://login.salesforce.com"),
        ("http://localhost:8000", "http://localhost:8000", "http://localhost:8000"),
    ],
)
def test_jwt_audience(login_url: str, audience: str, expected: str) -> None:
    """aud is the login or test host even behind My Domain, unless salesforce.audience says otherwise."""
    assert jwt_audience(SalesforceSettings(login_url=login_url, audience=audience)) == expected


@pytest.mark.parametrize(
    ("auth", "kind"),
    [
        ("password", PasswordGrant),
        ("refresh_token", RefreshTokenGrant),
        ("client_credentials", ClientCredentialsGrant),
    ],
)
def test_grant_from_settings_picks_the_flow(auth: str, kind: type) -> None:
    """salesforce.auth chooses the grant."""
    settings = SalesforceSettings(auth=auth, client_id="cid")  # type: ignore[arg-type]
    assert isinstance(grant_from_settings(settings), kind)


def test_secrets_stay_out_of_reprs(key_pair: tuple[str, str]) -> None:
    """Grants and tokens can be logged or printed without leaking credentials."""
    shown = repr(
        [
            PasswordGrant("cid", "SECRET-1", "u", "SECRET-2"),
            RefreshTokenGrant("cid", "SECRET-3", "SECRET-4"),
            ClientCredentialsGrant("cid", "SECRET-5"),
            JwtBearerGrant("cid", "u", "aud", key_pair[0]),
            AccessToken("SECRET-6", "https://x", 0.0),
        ]
    )
    assert "SECRET" not in shown
    assert "PRIVATE KEY" not in shown


def test_decode_token_response() -> None:
    """access_token and instance_url are taken, the trailing slash removed."""
    token = decode_token_response(
        {"access_token": "t", "instance_url": "https://acme.my.salesforce.com/"}, 5.0
    )
    assert (token.access_token, token.instance_url, token.obtained_at) == (
        "t",
        "https://acme.my.salesforce.com",
        5.0,
    )
    assert token.authorization() == "Bearer t"


@pytest.mark.parametrize(
    "body", [{}, {"access_token": "t"}, {"instance_url": "https://x"}, {"access_token": 1}]
)
def test_incomplete_token_response_is_transient(body: dict[str, object]) -> None:
    """A 200 without a token or instance URL is a broken answer, retried like an outage."""
    with pytest.raises(SalesforceUnavailable):
        decode_token_response(body, 0.0)


def test_the_key_is_parsed_once_for_every_orgs_assertions(key_pair: tuple[str, str]) -> None:
    """Many orgs sign with the one connected app's key: it is parsed once, every later assertion (any org's
    subject) reuses it, and each still verifies with the public key."""
    private, public = key_pair
    _signing_key.cache_clear()
    forms = [
        JwtBearerGrant("cid", f"integration@org{n}.example", "https://login.salesforce.com", private).form(
            NOW
        )
        for n in range(5)
    ]
    assert _signing_key.cache_info().misses == 1 and _signing_key.cache_info().hits == 4
    subjects = [
        jwt.decode(
            f["assertion"], public, algorithms=["RS256"], options={"verify_aud": False, "verify_exp": False}
        )["sub"]
        for f in forms
    ]
    assert subjects == [f"integration@org{n}.example" for n in range(5)]


def test_one_tls_context_per_bundle() -> None:
    """Every org's stream and REST session share the process's one verifying TLS context."""
    assert make_ssl_context("") is make_ssl_context("")

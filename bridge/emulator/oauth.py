"""The OAuth 2.0 token endpoint and the access/refresh token store (`POST /services/oauth2/token`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
import structlog

from bridge.emulator.contracts import TokenCheck

log = structlog.get_logger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_JWT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
_JWT_MAX_LIFETIME_SECONDS = 180
_JWT_LEEWAY_SECONDS = 5


class OAuthError(Exception):
    """A token-endpoint failure: answered 400 `{"error", "error_description"}`."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.error, "error_description": self.description}


class UserDirectory(Protocol):
    """What the token endpoint needs from the org store."""

    @property
    def integration_user_id(self) -> str:
        """The user client_credentials runs as."""

    def authenticate(self, username: str, password: str) -> Any:
        """The user with these credentials, or None."""

    def user_by_username(self, username: str) -> Any:
        """The user with this username, or None."""


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """Which connected-app credentials the org accepts."""

    accept_any_client: bool
    clients: Mapping[str, str]
    jwt_public_key_pem: str | None
    refresh_token_rotation: bool


@dataclass(frozen=True, slots=True)
class Session:
    """One issued access token."""

    user_id: str
    client_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Grant:
    """A successful grant: who, for which client, and whether a refresh token goes along."""

    user_id: str
    client_id: str
    client_secret: str | None
    refresh_token: str | None = None


class TokenStore:
    """Issues, validates, expires and revokes access tokens and refresh tokens."""

    def __init__(
        self,
        org_id: str,
        *,
        session_seconds: float = 2 * 3600.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._org_prefix = org_id[:15]
        self.session_seconds = session_seconds
        self._wall_clock = wall_clock
        self._sessions: dict[str, Session] = {}
        self._refresh: dict[str, tuple[str, str]] = {}  # token -> (user_id, client_id)

    def issue_access(self, user_id: str, client_id: str) -> str:
        """A new access token for this user, valid for the session lifetime."""
        token = f"{self._org_prefix}!{secrets.token_urlsafe(72)}"
        expires = self._wall_clock() + self.session_seconds
        self._sessions[token] = Session(user_id, client_id, expires)
        return token

    def issue_refresh(self, user_id: str, client_id: str = "") -> str:
        """A new refresh token for this user."""
        token = "5Aep" + secrets.token_urlsafe(60)
        self._refresh[token] = (user_id, client_id)
        return token

    def redeem_refresh(self, token: str) -> tuple[str, str] | None:
        """(user_id, client_id) of a live refresh token, or None."""
        return self._refresh.get(token)

    def revoke_refresh(self, token: str) -> None:
        """Make one refresh token unusable."""
        self._refresh.pop(token, None)

    def session(self, token: str) -> Session | None:
        """The live session behind an access token, or None when unknown, revoked or expired."""
        found = self._sessions.get(token)
        if found is None:
            return None
        if found.expires_at <= self._wall_clock():
            del self._sessions[token]
            return None
        return found

    def session_for_header(self, authorization: str | None) -> Session | None:
        """The live session named by an `Authorization: Bearer|OAuth <token>` header, or None."""
        token = bearer_token(authorization)
        return self.session(token) if token else None

    def check(self, authorization: str | None) -> TokenCheck:
        """The TokenValidator used by the streaming service."""
        token = bearer_token(authorization)
        if not token:
            return TokenCheck.MISSING
        return TokenCheck.VALID if self.session(token) else TokenCheck.INVALID

    def revoke_user(self, user_id: str) -> int:
        """End every access and refresh token of one user (a deactivated user); returns how many died."""
        access = [t for t, s in self._sessions.items() if s.user_id == user_id]
        refresh = [t for t, (owner, _) in self._refresh.items() if owner == user_id]
        for token in access:
            del self._sessions[token]
        for token in refresh:
            del self._refresh[token]
        return len(access) + len(refresh)

    def expire(self, token: str | None = None) -> int:
        """Revoke one access token, or every one when `token` is None; returns how many died."""
        if token is None:
            count = len(self._sessions)
            self._sessions.clear()
            return count
        return 1 if self._sessions.pop(token, None) else 0

    def reset(self) -> None:
        """Forget every access and refresh token."""
        self._sessions.clear()
        self._refresh.clear()


def bearer_token(authorization: str | None) -> str:
    """The token of a `Bearer` (or legacy `OAuth`) Authorization header, '' when absent."""
    if not authorization:
        return ""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "oauth"):
        return ""
    return value.strip()


def client_credentials(form: Mapping[str, str], authorization: str | None) -> tuple[str, str | None]:
    """(client_id, client_secret) from the form, or from an `Authorization: Basic` header."""
    client_id, secret = form.get("client_id", ""), form.get("client_secret")
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip()).decode()
        except ValueError as exc:
            raise OAuthError("invalid_client", "invalid client credentials") from exc
        basic_id, _, basic_secret = decoded.partition(":")
        client_id, secret = client_id or basic_id, secret or basic_secret
    return client_id, secret


def check_client(policy: ClientPolicy, client_id: str, secret: str | None, *, need_secret: bool) -> None:
    """Raise OAuthError unless the org accepts this consumer key (and secret, when one is needed)."""
    if not client_id:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if policy.accept_any_client:
        if need_secret and not secret:
            raise OAuthError("invalid_client", "invalid client credentials")
        return
    expected = policy.clients.get(client_id)
    if expected is None:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if (need_secret or secret) and not hmac.compare_digest(expected, secret or ""):
        raise OAuthError("invalid_client", "invalid client credentials")


def grant(
    form: Mapping[str, str],
    authorization: str | None,
    *,
    policy: ClientPolicy,
    users: UserDirectory,
    tokens: TokenStore,
    audiences: tuple[str, ...],
    now: float,
    host: str = "",
) -> Grant:
    """Run one token request's grant; raises OAuthError with Salesforce's error pair."""
    grant_type = form.get("grant_type", "")
    if not grant_type:
        raise OAuthError("invalid_request", "grant type is missing")
    client_id, secret = client_credentials(form, authorization)
    if grant_type == "password":
        check_client(policy, client_id, secret, need_secret=True)
        user = users.authenticate(form.get("username", ""), form.get("password", ""))
        if user is None:
            raise OAuthError("invalid_grant", "authentication failure")
        return Grant(user.id, client_id, secret)
    if grant_type == "client_credentials":
        if host.partition(":")[0].lower() in _LOGIN_HOSTS:
            raise OAuthError("invalid_grant", "request not supported on this domain")
        check_client(policy, client_id, secret, need_secret=True)
        return Grant(users.integration_user_id, client_id, secret)
    if grant_type == "refresh_token":
        return _refresh_grant(form, client_id, secret, policy=policy, tokens=tokens)
    if grant_type == JWT_GRANT:
        return _jwt_grant(form.get("assertion", ""), policy=policy, users=users, audiences=audiences, now=now)
    raise OAuthError("unsupported_grant_type", "grant type not supported")


def _refresh_grant(
    form: Mapping[str, str], client_id: str, secret: str | None, *, policy: ClientPolicy, tokens: TokenStore
) -> Grant:
    token = form.get("refresh_token", "")
    owner = tokens.redeem_refresh(token) if token else None
    if owner is None:
        raise OAuthError("invalid_grant", "expired access/refresh token")
    user_id, issued_client = owner
    client_id = client_id or issued_client
    check_client(policy, client_id, secret, need_secret=False)
    rotated = None
    if policy.refresh_token_rotation:
        tokens.revoke_refresh(token)
        rotated = tokens.issue_refresh(user_id, client_id)
    return Grant(user_id, client_id, secret or policy.clients.get(client_id), rotated)


def _jwt_grant(
    assertion: str, *, policy: ClientPolicy, users: UserDirectory, audiences: tuple[str, ...], now: float
) -> Grant:
    if not assertion:
        raise OAuthError("invalid_request", "assertion is missing")
    claims = _verified_claims(assertion, policy=policy, audiences=audiences, now=now)
    issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
    check_client(policy, issuer, None, need_secret=False)
    user = users.user_by_username(subject)
    if user is None or not getattr(user, "is_active", True):
        raise OAuthError("invalid_grant", "user hasn't approved this consumer")
    return Grant(user.id, issuer, policy.clients.get(issuer))


def _verified_claims(
    assertion: str, *, policy: ClientPolicy, audiences: tuple[str, ...], now: float
) -> dict[str, Any]:
    """Decode the RS256 assertion; the signature is checked whenever the org names a public key."""
    verify = policy.jwt_public_key_pem is not None
    if not verify and not policy.accept_any_client:
        raise OAuthError("invalid_grant", "invalid assertion")
    try:
        header = jwt.get_unverified_header(assertion)
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "invalid assertion")
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key=policy.jwt_public_key_pem or "",
            algorithms=["RS256"],
            options={"verify_signature": verify, "verify_exp": False, "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", "invalid assertion") from exc
    _check_claims(claims, audiences=audiences, now=now)
    return claims


def _check_claims(claims: Mapping[str, Any], *, audiences: tuple[str, ...], now: float) -> None:
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else list(aud or [])
    if not any(str(a).rstrip("/") in audiences for a in aud_list):
        raise OAuthError("invalid_grant", "audience is invalid")
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise OAuthError("invalid_grant", "invalid assertion")
    if exp <= now - _JWT_LEEWAY_SECONDS:
        raise OAuthError("invalid_grant", "expired authorization code")
    if exp > now + _JWT_MAX_LIFETIME_SECONDS + _JWT_LEEWAY_SECONDS:
        raise OAuthError("invalid_grant", "invalid assertion")
    if not claims.get("iss"):
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if not claims.get("sub"):
        raise OAuthError("invalid_grant", "invalid assertion")


def jwt_audiences(instance_url: str, request_base: str) -> tuple[str, ...]:
    """The `aud` values a JWT may carry: the login hosts and this emulator's own URLs."""
    own = {instance_url.rstrip("/"), request_base.rstrip("/")}
    own |= {u.replace("://localhost", "://127.0.0.1") for u in own}
    return _JWT_AUDIENCES + tuple(sorted(own))


def token_response(
    access_token: str, *, instance_url: str, org_id: str, granted: Grant, issued_at_ms: int
) -> dict[str, Any]:
    """The 200 body Salesforce returns for a successful grant."""
    identity = f"{instance_url}/id/{org_id}/{granted.user_id}"
    issued_at = str(issued_at_ms)
    body: dict[str, Any] = {
        "access_token": access_token,
        "instance_url": instance_url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "scope": "api refresh_token" if granted.refresh_token else "api",
    }
    if granted.client_secret:
        digest = hmac.new(granted.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256)
        body["signature"] = base64.b64encode(digest.digest()).decode()
    if granted.refresh_token:
        body["refresh_token"] = granted.refresh_token
    return body

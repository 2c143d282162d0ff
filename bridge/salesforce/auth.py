"""OAuth 2.0 against Salesforce: the four grants, the shared current token, and the TLS context.

A grant only knows how to build the token request's form. `TokenManager` posts it to
`<login_url>/services/oauth2/token`, keeps ONE current token (shared by the REST client and, later, the
streaming client) and refreshes it under a lock: whoever holds a stale token asks `refresh(stale)`, and
only the first of several concurrent callers re-authenticates; the others get the token it obtained.
No token, secret or key ever reaches a log line or a repr.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import jwt
import structlog

from bridge import sfid
from bridge.config import SalesforceSettings
from bridge.errors import ConfigurationError, SalesforceUnavailable
from bridge.redact import describe
from bridge.salesforce.errors import classify_oauth_error
from bridge.salesforce.retry import RetryPolicy, Sleep, call_with_retries

log = structlog.get_logger(__name__)

JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME_SECONDS = 180  # Salesforce accepts at most three minutes


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and the org instance it is valid for; compared by identity when refreshing."""

    access_token: str = field(repr=False)
    instance_url: str
    obtained_at: float  # monotonic clock reading when it was issued to us
    user_id: str | None = None  # the token's identity: the user every change the bridge makes runs as
    org_id: str | None = None  # the org of that identity (the Pub/Sub API's `tenantid`)

    def authorization(self) -> str:
        """The `Authorization` header value."""
        return f"Bearer {self.access_token}"


class Grant(Protocol):
    """Builds the form of one OAuth token request."""

    @property
    def auth(self) -> str:
        """The `salesforce.auth` value this grant implements."""

    def form(self, now: float) -> dict[str, str]:
        """The form fields; `now` is wall-clock epoch seconds (for JWT expiry)."""


@dataclass(frozen=True, slots=True)
class PasswordGrant:
    """Username-password flow (development orgs and the emulator)."""

    client_id: str
    client_secret: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    auth: str = "password"

    def form(self, now: float) -> dict[str, str]:
        """The password grant's form."""
        return {
            "grant_type": "password",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "username": self.username,
            "password": self.password,
        }


@dataclass(frozen=True, slots=True)
class RefreshTokenGrant:
    """Refresh-token flow; the refresh token is replaced in memory when the org rotates it."""

    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    auth: str = "refresh_token"

    def form(self, now: float) -> dict[str, str]:
        """The refresh grant's form (the client secret only when one is configured)."""
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "refresh_token": self.refresh_token,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        return form


@dataclass(frozen=True, slots=True)
class JwtBearerGrant:
    """JWT bearer flow (production): an RS256 assertion signed with the connected app's private key."""

    client_id: str
    username: str
    audience: str
    private_key: str = field(repr=False)
    auth: str = "jwt"

    def form(self, now: float) -> dict[str, str]:
        """The JWT grant's form with a freshly signed assertion."""
        claims = {
            "iss": self.client_id,
            "sub": self.username,
            "aud": self.audience,
            "exp": int(now) + JWT_LIFETIME_SECONDS,
        }
        try:
            assertion = jwt.encode(claims, _signing_key(self.private_key), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigurationError(
                "salesforce.private_key_file does not hold a usable RSA private key (PEM)",
                "salesforce.private_key_file",
            ) from exc
        return {"grant_type": JWT_GRANT_TYPE, "assertion": assertion}


@functools.lru_cache(maxsize=8)
def _signing_key(pem: str) -> Any:
    """The private key parsed once per process (parsing and checking an RSA key costs 50-140 ms of CPU:
    with many orgs, every token request would block the event loop that long)."""
    return jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(pem)


@dataclass(frozen=True, slots=True)
class ClientCredentialsGrant:
    """Client-credentials flow; Salesforce only accepts it on the org's My Domain host."""

    client_id: str
    client_secret: str = field(repr=False)
    auth: str = "client_credentials"

    def form(self, now: float) -> dict[str, str]:
        """The client-credentials grant's form."""
        return {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }


def jwt_audience(settings: SalesforceSettings) -> str:
    """`salesforce.audience`, else the login or test host Salesforce expects (even behind My Domain)."""
    if settings.audience:
        return settings.audience
    if "test.salesforce.com" in settings.login_url or ".sandbox." in settings.login_url:
        return "https://test.salesforce.com"
    return "https://login.salesforce.com"


def grant_from_settings(settings: SalesforceSettings) -> Grant:
    """The grant for `salesforce.auth`; reads the private key file for JWT (error names the key)."""
    if settings.auth == "password":
        return PasswordGrant(settings.client_id, settings.client_secret, settings.username, settings.password)
    if settings.auth == "refresh_token":
        return RefreshTokenGrant(settings.client_id, settings.client_secret, settings.refresh_token)
    if settings.auth == "client_credentials":
        return ClientCredentialsGrant(settings.client_id, settings.client_secret)
    try:
        key = Path(settings.private_key_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"salesforce.private_key_file {settings.private_key_file!r} cannot be read "
            f"({exc.__class__.__name__})",
            "salesforce.private_key_file",
        ) from exc
    return JwtBearerGrant(settings.client_id, settings.username, jwt_audience(settings), key)


@functools.lru_cache(maxsize=8)
def make_ssl_context(ca_bundle: str) -> ssl.SSLContext:
    """A verifying TLS context: the system's trust store, or only `salesforce.ca_bundle` when set. One per
    bundle and process (each costs about 0.8 MB and a few hundred ms: one per org's stream would not do)."""
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"salesforce.ca_bundle {ca_bundle!r} is not a readable PEM certificate file ({exc})",
            "salesforce.ca_bundle",
        ) from exc


def _identity_part(identity_url: Any, index: int) -> str | None:
    """Part `index` (-2: org, -1: user) of an identity URL `.../id/<orgId>/<userId>`, as 18 characters;
    None unless both ids are well-formed."""
    if not isinstance(identity_url, str):
        return None
    parts = identity_url.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id" or not all(sfid.is_valid(p) for p in parts[-2:]):
        return None
    return sfid.to18(parts[index])


def identity_user_id(identity_url: Any) -> str | None:
    """The user id (18 characters) of a token identity URL `.../id/<orgId>/<userId>`; None if unreadable."""
    return _identity_part(identity_url, -1)


def identity_org_id(identity_url: Any) -> str | None:
    """The org id (18 characters) of a token identity URL `.../id/<orgId>/<userId>`; None if unreadable."""
    return _identity_part(identity_url, -2)


def decode_token_response(body: Mapping[str, Any], obtained_at: float) -> AccessToken:
    """An AccessToken from a 200 token response; SalesforceUnavailable when fields are missing."""
    token = body.get("access_token")
    instance_url = body.get("instance_url")
    if not isinstance(token, str) or not isinstance(instance_url, str) or not token or not instance_url:
        raise SalesforceUnavailable("token response lacks access_token or instance_url")
    identity = body.get("id")
    return AccessToken(
        token, instance_url.rstrip("/"), obtained_at, identity_user_id(identity), identity_org_id(identity)
    )


class TokenManager:
    """Holds the one current Salesforce token and re-authenticates on demand, once per stale token."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: SalesforceSettings,
        *,
        grant: Grant | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._settings = settings
        self._grant = grant if grant is not None else grant_from_settings(settings)
        self._policy = RetryPolicy(max_attempts=max(settings.max_attempts, 1))
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        self._token: AccessToken | None = None
        self._requests = 0

    @property
    def token(self) -> AccessToken | None:
        """The current token, None before the first login."""
        return self._token

    @property
    def token_requests(self) -> int:
        """How many token requests this manager sent (failed ones included)."""
        return self._requests

    async def user_id(self) -> str | None:
        """The integration user's id (the current token's identity), logging in first if need be."""
        return (await self.get()).user_id

    async def org_id(self) -> str | None:
        """The org's id (the current token's identity), logging in first if need be."""
        return (await self.get()).org_id

    async def get(self) -> AccessToken:
        """The current token, logging in first if there is none yet."""
        token = self._token
        return token if token is not None else await self.refresh(None)

    async def refresh(self, stale: AccessToken | None) -> AccessToken:
        """Replace `stale` with a new token; a no-op when someone else already replaced it."""
        async with self._lock:
            if self._token is not None and self._token is not stale:
                return self._token
            self._token = await call_with_retries(
                self._request_token,
                self._policy,
                name="oauth.token",
                sleep=self._sleep,
                clock=self._clock,
                host=urlsplit(self._settings.login_url).netloc,
            )
            log.info("salesforce.authenticated", auth=self._grant.auth, instance_url=self._token.instance_url)
            return self._token

    async def _request_token(self) -> AccessToken:
        """One POST to the token endpoint, translated into a token or a classified error."""
        url = self._settings.login_url.rstrip("/") + "/services/oauth2/token"
        timeout = aiohttp.ClientTimeout(total=self._settings.request_timeout_seconds)
        self._requests += 1
        try:
            async with self._session.post(
                url, data=self._grant.form(self._wall_clock()), timeout=timeout
            ) as response:
                status = response.status
                try:
                    body: Any = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SalesforceUnavailable(f"token endpoint unreachable: {describe(exc)}") from exc
        if status == 200 and isinstance(body, dict):
            self._remember_rotated_refresh_token(body)
            return decode_token_response(body, self._clock())
        if body is None and status < 500:
            raise ConfigurationError(
                f"{url} answered HTTP {status} without JSON: "
                "is salesforce.login_url a Salesforce login host?",
                "salesforce.login_url",
            )
        raise classify_oauth_error(status, body, auth=self._grant.auth)

    def _remember_rotated_refresh_token(self, body: Mapping[str, Any]) -> None:
        """With refresh-token rotation the old token dies: keep the new one for the next refresh."""
        rotated = body.get("refresh_token")
        grant = self._grant
        if (
            isinstance(grant, RefreshTokenGrant)
            and isinstance(rotated, str)
            and rotated != grant.refresh_token
        ):
            self._grant = replace(grant, refresh_token=rotated)
            log.warning("salesforce.refresh_token_rotated", hint="update salesforce.refresh_token")

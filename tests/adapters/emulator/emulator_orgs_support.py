"""Helpers for tests of the orgs one emulator hosts: create an org, reach it, sign JWT assertions for it.

`HostedOrg` talks to one org at its own URL through the main emulator's HTTP session; `new_org(client,...)`
creates one with `POST /__emulator/orgs`. `RsaKey` is a throwaway key pair for the JWT bearer grant.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.adapters.emulator.conftest import API, EmulatorClient, Reply

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ID = "bridge-connected-app"


class RsaKey:
    """A throwaway RSA key pair: its public PEM for the org, its private key to sign assertions."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @cached_property
    def public_pem(self) -> str:
        """The public key as PEM (what `POST /__emulator/orgs` registers)."""
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return raw.decode()

    def assertion(self, username: str, audience: str = "https://login.salesforce.com") -> str:
        """An RS256 JWT bearer assertion for `username`, valid for a minute."""
        claims = {"iss": CLIENT_ID, "sub": username, "aud": audience, "exp": int(time.time()) + 60}
        return jwt.encode(claims, self._key, algorithm="RS256")


@dataclass
class HostedOrg:
    """One org of the emulator, reached at its own URL."""

    client: EmulatorClient
    org_id: str
    url: str
    users: Sequence[Mapping[str, Any]]

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        """Any HTTP request against this org; JSON bodies are decoded."""
        async with self.client.http.request(method, self.url + path, **kwargs) as response:
            raw = await response.read()
            body: Any = None
            if raw and response.content_type == "application/json":
                body = await response.json()
            elif raw:
                body = raw.decode()
            return Reply(response.status, dict(response.headers), body)

    async def token_reply(self, form: Mapping[str, str]) -> Reply:
        """The token endpoint's answer to one grant."""
        return await self.request("POST", "/services/oauth2/token", data=dict(form))

    async def client_token(self) -> str:
        """An access token of the org's integration user (client_credentials grant)."""
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "s"}
        reply = await self.token_reply(form)
        assert reply.status == 200, reply.body
        return str(reply.body["access_token"])

    async def jwt_token(self, key: RsaKey, username: str) -> Reply:
        """The token endpoint's answer to a JWT bearer grant for `username` signed with `key`."""
        return await self.token_reply({"grant_type": JWT_GRANT, "assertion": key.assertion(username)})

    async def rest(self, method: str, path: str, token: str, json: Any = None) -> Reply:
        """A REST call under `/services/data/v60.0` with this bearer token."""
        headers = {"Authorization": f"Bearer {token}"}
        return await self.request(method, f"/services/data/{API}{path}", headers=headers, json=json)

    async def control(self, method: str, path: str, json: Any = None) -> Any:
        """A control-API call of this org; asserts success and answers the JSON body."""
        reply = await self.request(method, "/__emulator" + path, json=json)
        assert reply.status < 300, (reply.status, reply.body)
        return reply.body


async def new_org(
    client: EmulatorClient,
    name: str,
    *,
    key: RsaKey | None = None,
    users: Sequence[Mapping[str, Any]] | None = None,
) -> HostedOrg:
    """Create an org with `POST /__emulator/orgs` on the main emulator."""
    body: dict[str, Any] = {"name": name}
    if key is not None:
        body["jwt_public_key"] = key.public_pem
    if users is not None:
        body["users"] = list(users)
    reply = await client.request("POST", "/__emulator/orgs", json=body)
    assert reply.status == 201, reply.body
    return HostedOrg(client, reply.body["org_id"], reply.body["url"], reply.body["users"])

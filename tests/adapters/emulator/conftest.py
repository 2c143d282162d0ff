"""Fixtures that run the Salesforce emulator as a real server on a free loopback port, in this event loop.

`emulator` serves HTTP, `emulator_tls` serves HTTPS with a throwaway CA (`.ca_file`). Both answer an
`EmulatorClient`: `.url`, `.ca_file`, `.store`, `.state`, `await .token()`, `await .rest(...)`,
`await .control(...)`. `running_emulator(...)` starts one with other options (an org file, latency).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.emulator.server import RunningEmulator, start_emulator
from bridge.emulator.state import EmulatorState
from bridge.emulator.store import OrgStore

API = "v60.0"
USERNAME, PASSWORD = "bridge@example.com", "emulator"


@dataclass(frozen=True)
class Reply:
    """A finished HTTP exchange: status, headers and the decoded JSON body (None when empty)."""

    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass
class EmulatorClient:
    """A running emulator plus an aiohttp session that trusts it."""

    running: RunningEmulator
    http: aiohttp.ClientSession
    access_token: str = ""

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://localhost:PORT`."""
        return self.running.url

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate (PEM) to trust when serving HTTPS."""
        return self.running.ca_file

    @property
    def store(self) -> OrgStore:
        """The org's record store."""
        return self.running.store

    @property
    def state(self) -> EmulatorState:
        """Every shared emulator component."""
        return self.running.state

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        """Any HTTP request against the emulator; JSON bodies are decoded."""
        async with self.http.request(method, self.url + path, **kwargs) as response:
            raw = await response.read()
            body: Any = None
            if raw and response.content_type == "application/json":
                body = await response.json()
            elif raw:
                body = raw.decode()
            return Reply(response.status, dict(response.headers), body)

    async def token(self, username: str = USERNAME, password: str = PASSWORD) -> str:
        """A password-grant access token (also kept as the default for `rest`)."""
        form = {
            "grant_type": "password",
            "client_id": "test-client",
            "client_secret": "test-secret",
            "username": username,
            "password": password,
        }
        reply = await self.request("POST", "/services/oauth2/token", data=form)
        assert reply.status == 200, reply.body
        token = str(reply.body["access_token"])
        if not self.access_token:
            self.access_token = token
        return token

    async def rest(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        version: str = API,
    ) -> Reply:
        """A REST call under `/services/data/<version>` with a Bearer token (fetched on first use)."""
        if token is None:
            token = self.access_token or await self.token()
        all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers}
        if json is not None:
            kwargs["json"] = json
        return await self.request(method, f"/services/data/{version}{path}", **kwargs)

    async def control(self, method: str, path: str, json: Any = None) -> Any:
        """A control-API call under `/__emulator`; asserts success and answers the JSON body."""
        reply = await self.request(method, "/__emulator" + path, json=json)
        assert reply.status < 300, (reply.status, reply.body)
        return reply.body


@asynccontextmanager
async def running_emulator(**options: Any) -> AsyncIterator[EmulatorClient]:
    """Start an emulator with `start_emulator` options on a free port; stop it afterwards."""
    running = await start_emulator(port=0, **options)
    ssl_context: ssl.SSLContext | bool = True
    if running.ca_file is not None:
        ssl_context = ssl.create_default_context(cafile=str(running.ca_file))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context))
    try:
        yield EmulatorClient(running, http)
    finally:
        await http.close()
        await running.stop()


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorClient]:
    """The default org over plain HTTP."""
    async with running_emulator() as client:
        yield client


@pytest.fixture
async def emulator_tls(tmp_path: Path) -> AsyncIterator[EmulatorClient]:
    """The default org over HTTPS; the CA certificate is at `.ca_file`."""
    async with running_emulator(tls=True, ca_out=tmp_path / "emulator-ca.pem") as client:
        yield client

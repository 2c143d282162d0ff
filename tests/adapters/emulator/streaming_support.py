"""A small streaming-only org for the Streaming API tests: the real StreamingService and EventBus behind a
real aiohttp server, a minimal OAuth token route, controllable clocks and a raw Bayeux client."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiosfstream_ng import PasswordAuthenticator

from bridge.emulator.bus import EventBus
from bridge.emulator.contracts import ChangeEvent, StreamingSettings, TokenCheck
from bridge.emulator.streaming import StreamingService

USER_ID = "005000000000001AAA"
API_VERSION = "60.0"
_record_numbers = itertools.count(1)


class ManualClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass
class Tokens:
    """A TokenValidator over a set of issued bearer tokens."""

    valid: set[str] = field(default_factory=set)

    def issue(self) -> str:
        """A new valid access token."""
        token = secrets.token_urlsafe(16)
        self.valid.add(token)
        return token

    def revoke_all(self) -> None:
        """Every issued token becomes invalid."""
        self.valid.clear()

    def __call__(self, authorization: str | None) -> TokenCheck:
        if not authorization:
            return TokenCheck.MISSING
        scheme, _, token = authorization.partition(" ")
        return TokenCheck.VALID if scheme == "Bearer" and token in self.valid else TokenCheck.INVALID


@dataclass
class StreamingOrg:
    """The running test org: its parts, clocks and URLs."""

    bus: EventBus
    service: StreamingService
    tokens: Tokens
    wall: ManualClock
    monotonic: ManualClock
    base_url: str

    @property
    def cometd_url(self) -> str:
        """The CometD endpoint at a current API version."""
        return f"{self.base_url}/cometd/{API_VERSION}"

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return f"{self.base_url}/services/oauth2/token"


@asynccontextmanager
async def running_org(settings: StreamingSettings) -> AsyncIterator[StreamingOrg]:
    """Serve the streaming service and a token route on a free loopback port."""
    wall = ManualClock(time.time())
    monotonic = ManualClock(1_000.0)
    tokens = Tokens()
    bus = EventBus(settings, wall_clock=wall)
    service = StreamingService(bus=bus, settings=settings, validate_token=tokens, clock=monotonic)
    app = web.Application()
    service.register(app)
    base: list[str] = []

    async def token(_request: web.Request) -> web.Response:
        body = {
            "access_token": tokens.issue(),
            "instance_url": base[0],
            "id": f"{base[0]}/id/00D000000000001AAA/{USER_ID}",
            "token_type": "Bearer",
            "issued_at": str(int(wall() * 1000)),
            "signature": "c2lnbmF0dXJl",
        }
        return web.json_response(body)

    app.router.add_post("/services/oauth2/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base.append(f"http://{host}:{port}")
    try:
        yield StreamingOrg(bus, service, tokens, wall, monotonic, base[0])
    finally:
        await service.close()
        await runner.cleanup()


def change_event(
    change_type: str = "CREATE",
    *,
    entity: str = "Event",
    record_id: str | None = None,
    fields: Mapping[str, Any] | None = None,
    changed_fields: tuple[str, ...] = (),
    client: str | None = "mogli-bridge",
    commit_timestamp_ms: int | None = None,
) -> ChangeEvent:
    """One change event as the record store would hand it to the bus."""
    origin = "com/salesforce/api/rest/60.0" + (f";client={client}" if client else "")
    return ChangeEvent(
        entity=entity,
        change_type=change_type,
        record_ids=(record_id or f"00U5e0000{next(_record_numbers):06d}AAA",),
        fields=dict(fields or {}),
        changed_fields=changed_fields,
        change_origin=origin,
        commit_user=USER_ID,
        transaction_key=str(uuid.uuid4()),
        sequence_number=1,
        commit_timestamp_ms=commit_timestamp_ms or int(time.time() * 1000),
        commit_number=11691853425913,
    )


class BayeuxSession:
    """A raw Bayeux client: posts message arrays and remembers the client id and message ids."""

    def __init__(self, http: aiohttp.ClientSession, org: StreamingOrg, token: str | None = None) -> None:
        self.http = http
        self.org = org
        self.token = token if token is not None else org.tokens.issue()
        self.client_id: str | None = None
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        """The next message id, as a string like aiocometd-ng sends."""
        return str(next(self._ids))

    async def post(self, messages: list[dict[str, Any]], url: str | None = None) -> tuple[int, list[Any]]:
        """POST a message array; answers the HTTP status and the decoded JSON array."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.post(url or self.org.cometd_url, json=messages, headers=headers) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    def handshake_message(self, **extra: Any) -> dict[str, Any]:
        """A handshake as aiocometd-ng sends it."""
        message = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "id": self.next_id(),
        }
        message.update(extra)
        return message

    def connect_message(self) -> dict[str, Any]:
        """A long-polling connect for the current client id."""
        return {
            "channel": "/meta/connect",
            "clientId": self.client_id,
            "connectionType": "long-polling",
            "id": self.next_id(),
        }

    def subscribe_message(self, channel: str, replay: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A subscribe, with an `ext.replay` map when given."""
        message: dict[str, Any] = {
            "channel": "/meta/subscribe",
            "clientId": self.client_id,
            "subscription": channel,
            "id": self.next_id(),
        }
        if replay is not None:
            message["ext"] = {"replay": dict(replay)}
        return message

    async def handshake(self) -> dict[str, Any]:
        """Handshake and keep the client id."""
        _, replies = await self.post([self.handshake_message()])
        self.client_id = replies[0].get("clientId")
        return dict(replies[0])

    async def connect(self) -> list[dict[str, Any]]:
        """One connect; answers the whole reply array."""
        _, replies = await self.post([self.connect_message()])
        return replies

    async def subscribe(self, channel: str, replay: int | None = None) -> dict[str, Any]:
        """Subscribe with `ext.replay {channel: replay}` (no ext when None); answers the reply."""
        _, replies = await self.post(
            [self.subscribe_message(channel, None if replay is None else {channel: replay})]
        )
        return dict(replies[0])

    async def open(self, channel: str | None = None, replay: int | None = None) -> None:
        """Handshake, the immediate first connect, and optionally one subscription."""
        await self.handshake()
        await self.connect()
        if channel is not None:
            reply = await self.subscribe(channel, replay)
            assert reply["successful"], reply


async def wait_until_held(org: StreamingOrg, count: int = 1) -> None:
    """Return once `count` connects are parked on the server."""
    # The service exposes no "connect parked" signal, so poll its counter.
    while org.service.held_connects() < count:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


def events_of(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event messages (non-meta channels) of a reply array."""
    return [reply for reply in replies if not reply["channel"].startswith("/meta/")]


def replay_ids(replies: list[dict[str, Any]]) -> list[int]:
    """The replay ids of the event messages in a reply array."""
    return [message["data"]["event"]["replayId"] for message in events_of(replies)]


class LocalAuthenticator(PasswordAuthenticator):
    """aiosfstream-ng's password authenticator, pointed at the test org's token endpoint."""

    def __init__(
        self, token_url: str, username: str = "bridge@example.com", password: str = "emulator"
    ) -> None:
        super().__init__(
            consumer_key="test-client",
            consumer_secret="test-secret",
            username=username,
            password=password,
        )
        self._local_token_url = token_url

    @property
    def _token_url(self) -> str:
        return self._local_token_url

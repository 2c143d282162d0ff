"""The emulated Streaming API: CometD/Bayeux long-polling on `POST /cometd/{version}` over the event bus.

One request carries a JSON array of Bayeux messages. Every message except `/meta/connect` is answered
first (so a re-subscribe batched with a connect takes effect before the connect waits); then the connect
is answered at once (the first after a handshake, or when events are waiting) or held until events arrive
or the long-poll timeout passes. Each subscription is a cursor (a replay id) into a bus channel, so replay
and live delivery are the same read. Clients that stop polling are forgotten; allocations are enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from bridge.emulator import bayeux
from bridge.emulator.bus import EventBus, InvalidReplayId
from bridge.emulator.contracts import StreamingSettings, TokenCheck, TokenValidator

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 32_768
MAX_EVENTS_PER_REPLY = 1_000
ALLOCATION_WINDOW_SECONDS = 24 * 3600.0
_MIN_API_VERSION = 37.0
_CLIENT_ID_ALPHABET = string.ascii_lowercase + string.digits
_CLIENT_ID_LENGTH = 27

Message = Mapping[str, Any]
Reply = dict[str, Any]


@dataclass(eq=False, slots=True)
class _Client:
    """Server-side state of one CometD client id."""

    client_id: str
    expires_at: float
    cursors: dict[str, int] = field(default_factory=dict)  # channel -> last replay id delivered or skipped
    connected: bool = False
    waiter: asyncio.Event | None = None  # set while a connect is held
    gone: bool = False


class StreamingService:
    """CometD long-polling endpoint with CDC subscriptions, replay, client expiry and allocations."""

    def __init__(
        self,
        *,
        bus: EventBus,
        settings: StreamingSettings,
        validate_token: TokenValidator,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._settings = settings
        self._validate_token = validate_token
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._delivered = 0
        self._window_start = clock()
        self._closing = False
        bus.add_listener(self)

    def register(self, app: web.Application) -> None:
        """Mount `POST /cometd/{version}` (plus the version-less paths, which answer 400)."""
        app.router.add_post("/cometd/{version}", self._handle)
        app.router.add_post("/cometd", self._handle)
        app.router.add_post("/cometd/", self._handle)
        app.on_shutdown.append(self._on_shutdown)

    def forget_clients(self) -> int:
        """Make every client id unknown (their held connects answer `403::Unknown client`)."""
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            self._drop(client)
        log.info("emulator.streaming.clients_forgotten", clients=len(clients))
        return len(clients)

    def stats(self) -> dict[str, int]:
        """Live client count and events delivered in the current allocation window."""
        self._expire_clients()
        self._roll_allocation_window()
        return {"streaming_clients": len(self._clients), "delivered_events": self._delivered}

    def set_delivered(self, used: int) -> None:
        """Pretend `used` events were delivered in the current allocation window (tests of the allocation)."""
        self._roll_allocation_window()
        self._delivered = max(0, used)

    def held_connects(self) -> int:
        """How many connects are parked waiting for events right now."""
        return sum(1 for client in self._clients.values() if client.waiter is not None)

    async def close(self) -> None:
        """Answer every held connect now; later connects are answered without waiting."""
        self._closing = True
        for client in self._clients.values():
            if client.waiter is not None:
                client.waiter.set()
        await asyncio.sleep(0)

    # BusListener

    def events_published(self, channels: frozenset[str]) -> None:
        """Wake the held connects of clients subscribed to any of these channels."""
        for client in self._clients.values():
            if client.waiter is not None and not channels.isdisjoint(client.cursors):
                client.waiter.set()

    def bus_reset(self) -> None:
        """An org reset also restores the daily delivery allocation."""
        self._delivered = 0
        self._window_start = self._clock()

    # HTTP

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        messages = await _read_messages(request)
        if isinstance(messages, web.Response):
            return messages
        version_error = _version_error(request.match_info.get("version", ""))
        if version_error is not None:
            return _reject_all(messages, version_error, status=400)
        check = self._validate_token(request.headers.get("Authorization"))
        if check is TokenCheck.MISSING:
            return _reject_all(messages, bayeux.ERR_AUTH_REQUIRED, status=401)
        self._expire_clients()
        if check is TokenCheck.INVALID:
            return web.json_response([self._auth_invalid(message) for message in messages])
        replies: list[Reply] = []
        connect: Message | None = None
        for message in messages:
            if message.get("channel") == bayeux.CONNECT and connect is None:
                connect = message
            else:
                replies.append(self._dispatch(message))
        if connect is not None:
            replies.extend(await self._connect(connect, request))
        return web.json_response(replies)

    def _auth_invalid(self, message: Message) -> Reply:
        if message.get("channel") == bayeux.HANDSHAKE:
            return bayeux.handshake_denied(message)
        return bayeux.failure(message, bayeux.ERR_AUTH_INVALID, bayeux.ADVICE_NONE, _client_id_of(message))

    # Bayeux meta channels

    def _dispatch(self, message: Message) -> Reply:
        channel = message.get("channel")
        if channel == bayeux.HANDSHAKE:
            return self._handshake(message)
        client = self._clients.get(_client_id_of(message) or "")
        if client is None:
            return bayeux.failure(message, bayeux.ERR_UNKNOWN_CLIENT, bayeux.ADVICE_HANDSHAKE)
        if channel == bayeux.SUBSCRIBE:
            return self._subscribe(client, message)
        if channel == bayeux.UNSUBSCRIBE:
            return self._unsubscribe(client, message)
        if channel == bayeux.DISCONNECT:
            return self._disconnect(client, message)
        if channel == bayeux.CONNECT:
            error = "400::Only one /meta/connect message per request"
            return bayeux.failure(message, error, bayeux.ADVICE_RETRY, client.client_id)
        if isinstance(channel, str) and channel.startswith("/meta/"):
            return bayeux.failure(message, "400::Unknown meta channel", bayeux.ADVICE_RETRY, client.client_id)
        return bayeux.failure(message, bayeux.ERR_PUBLISH_DENIED, bayeux.ADVICE_RETRY, client.client_id)

    def _handshake(self, message: Message) -> Reply:
        types = message.get("supportedConnectionTypes")
        if not isinstance(types, list) or bayeux.LONG_POLLING not in types:
            offered = ", ".join(str(t) for t in types) if isinstance(types, list) else ""
            return bayeux.failure(message, bayeux.invalid_connection_type(offered), bayeux.ADVICE_NONE)
        if len(self._clients) >= self._settings.max_concurrent_clients:
            log.warning("emulator.streaming.client_limit", clients=len(self._clients))
            return bayeux.failure(message, bayeux.ERR_CLIENT_LIMIT, bayeux.ADVICE_NONE)
        client_id = "".join(secrets.choice(_CLIENT_ID_ALPHABET) for _ in range(_CLIENT_ID_LENGTH))
        self._clients[client_id] = _Client(client_id=client_id, expires_at=self._idle_deadline())
        log.info("emulator.streaming.handshake", client_id=client_id)
        return bayeux.handshake_ok(message, client_id)

    def _subscribe(self, client: _Client, message: Message) -> Reply:
        channel = message.get("subscription")
        if not isinstance(channel, str) or self._bus.channel_log(channel) is None:
            return bayeux.failure(
                message, bayeux.unknown_channel(str(channel)), bayeux.ADVICE_RETRY, client.client_id
            )
        requested = _requested_replay(channel, message)
        if isinstance(requested, str):
            return bayeux.failure(message, requested, bayeux.ADVICE_RETRY, client.client_id)
        try:
            cursor = self._bus.resolve_replay(channel, requested)
        except InvalidReplayId:
            error = bayeux.invalid_replay_id(requested)
            return bayeux.failure(message, error, bayeux.ADVICE_RETRY, client.client_id)
        client.cursors[channel] = cursor
        if client.waiter is not None:
            client.waiter.set()  # a held connect carries the replayed events
        log.info(
            "emulator.streaming.subscribed", client_id=client.client_id, channel=channel, replay=requested
        )
        return bayeux.reply(message, successful=True, clientId=client.client_id, subscription=channel)

    def _unsubscribe(self, client: _Client, message: Message) -> Reply:
        channel = message.get("subscription")
        if not isinstance(channel, str) or self._bus.channel_log(channel) is None:
            return bayeux.failure(
                message, bayeux.unknown_channel(str(channel)), bayeux.ADVICE_RETRY, client.client_id
            )
        client.cursors.pop(channel, None)
        return bayeux.reply(message, successful=True, clientId=client.client_id, subscription=channel)

    def _disconnect(self, client: _Client, message: Message) -> Reply:
        self._clients.pop(client.client_id, None)
        self._drop(client)
        log.info("emulator.streaming.disconnected", client_id=client.client_id)
        return bayeux.reply(message, successful=True, clientId=client.client_id)

    async def _connect(self, message: Message, request: web.Request) -> list[Reply]:
        """Events (possibly none) followed by the connect reply; the reply may wait for events."""
        client = self._clients.get(_client_id_of(message) or "")
        if client is None:
            return [bayeux.failure(message, bayeux.ERR_UNKNOWN_CLIENT, bayeux.ADVICE_HANDSHAKE)]
        connection_type = message.get("connectionType")
        if connection_type != bayeux.LONG_POLLING:
            error = bayeux.invalid_connection_type(str(connection_type))
            return [bayeux.failure(message, error, bayeux.ADVICE_NONE, client.client_id)]
        if self._remaining_allocation() <= 0:
            log.warning("emulator.streaming.daily_limit", client_id=client.client_id)
            return [bayeux.failure(message, bayeux.ERR_DAILY_LIMIT, bayeux.ADVICE_NONE, client.client_id)]
        extra: dict[str, Any] = {}
        if not client.connected:
            client.connected = True
            extra["advice"] = bayeux.first_connect_advice(self._settings.long_poll_timeout_seconds)
            events = self._take(client)
        else:
            events = await self._hold(client, request)
        if client.gone:
            return [bayeux.failure(message, bayeux.ERR_UNKNOWN_CLIENT, bayeux.ADVICE_HANDSHAKE)]
        client.expires_at = self._delivery_deadline() if events else self._idle_deadline()
        return [*events, bayeux.reply(message, successful=True, clientId=client.client_id, **extra)]

    async def _hold(self, client: _Client, request: web.Request) -> list[Reply]:
        """Wait up to the long-poll timeout for events; a newer connect of the same client ends the wait."""
        if client.waiter is not None:
            client.waiter.set()
        waiter = asyncio.Event()
        client.waiter = waiter
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.long_poll_timeout_seconds
        try:
            while client.waiter is waiter and not client.gone and not _peer_gone(request):
                events = self._take(client)
                remaining = deadline - loop.time()
                if events or self._closing or remaining <= 0:
                    return events
                waiter.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), remaining)
            return []
        finally:
            if client.waiter is waiter:
                client.waiter = None

    def _take(self, client: _Client) -> list[Reply]:
        """Render the next events of the client's subscriptions in replay-id order and advance cursors."""
        budget = min(MAX_EVENTS_PER_REPLY, self._remaining_allocation())
        if budget <= 0 or not client.cursors:
            return []
        streams = []
        for channel, cursor in client.cursors.items():
            channel_log = self._bus.channel_log(channel)
            if channel_log is not None:
                streams.append([(s.replay_id, channel, s) for s in channel_log.after(cursor, budget)])
        picked = list(itertools.islice(heapq.merge(*streams), budget))
        for replay_id, channel, _ in picked:
            client.cursors[channel] = replay_id
        self._delivered += len(picked)
        return [bayeux.change_message(channel, stored) for _, channel, stored in picked]

    # Expiry and allocations

    def _idle_deadline(self) -> float:
        grace = self._settings.client_expiry_seconds
        return self._clock() + self._settings.long_poll_timeout_seconds + grace

    def _delivery_deadline(self) -> float:
        return self._clock() + self._settings.client_expiry_seconds

    def _expire_clients(self) -> None:
        now = self._clock()
        expired = [c for c in self._clients.values() if c.waiter is None and c.expires_at <= now]
        for client in expired:
            del self._clients[client.client_id]
            self._drop(client)
        if expired:
            log.info("emulator.streaming.clients_expired", clients=len(expired))

    def _drop(self, client: _Client) -> None:
        client.gone = True
        client.cursors.clear()
        if client.waiter is not None:
            client.waiter.set()

    def _roll_allocation_window(self) -> None:
        now = self._clock()
        if now - self._window_start >= ALLOCATION_WINDOW_SECONDS:
            self._window_start = now
            self._delivered = 0

    def _remaining_allocation(self) -> int:
        self._roll_allocation_window()
        return self._settings.daily_delivered_events - self._delivered


def _client_id_of(message: Message) -> str | None:
    client_id = message.get("clientId")
    return client_id if isinstance(client_id, str) else None


def _peer_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _requested_replay(channel: str, message: Message) -> int | str:
    """The replay id asked for in `ext.replay` (-1 when absent), or the error string for a bad map."""
    ext = message.get("ext")
    replay_map = ext.get("replay") if isinstance(ext, Mapping) else None
    if not isinstance(replay_map, Mapping):
        return -1
    if channel not in replay_map:
        return bayeux.replay_map_mismatch(channel, replay_map)
    value = replay_map[channel]
    if isinstance(value, bool) or not isinstance(value, int):
        return bayeux.invalid_replay_id(value)
    return value


def _version_error(version: str) -> str | None:
    if re.fullmatch(r"\d+\.\d+", version) is None:
        return bayeux.ERR_VERSION_MISSING
    if float(version) < _MIN_API_VERSION:
        return bayeux.ERR_VERSION_OLD
    return None


async def _read_messages(request: web.Request) -> list[Message] | web.Response:
    """The request's Bayeux messages, or the error response for an oversized or malformed body."""
    too_big = (request.content_length or 0) > MAX_REQUEST_BYTES
    body = b"" if too_big else await request.read()
    if too_big or len(body) > MAX_REQUEST_BYTES:
        return _reject_all([{}], "413::Maximum Request Size Exceeded", status=413)
    try:
        messages = json.loads(body)
    except ValueError:
        messages = None
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return _reject_all([{}], bayeux.ERR_BAD_MESSAGE, status=400)
    return messages


def _reject_all(messages: list[Message], error: str, *, status: int) -> web.Response:
    replies = [
        bayeux.failure(message, error, bayeux.ADVICE_NONE, _client_id_of(message)) for message in messages
    ]
    return web.json_response(replies, status=status)

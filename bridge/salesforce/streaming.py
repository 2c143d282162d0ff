"""Change Data Capture over the Streaming API: aiosfstream-ng, unmodified, its known faults worked around.

Work-arounds (reference: salesforce-protocol.md section 8); those that reach into aiosfstream-ng's client
(the shared token, the API version, committed replay ids, the connect-task callback, tearing a failed client
down) live in `cometd.py`:
- its connection watchdog calls `asyncio.wait_for(loop=...)`: clients are built with `connection_timeout=0`
  and `ChangeStream` runs its own watchdog on the transport state;
- the runaway reconnect loop after a failed `open()`: `_open` tears the transport and HTTP session down;
- replay ids: receiving a message never moves a position; the consumer calls `committed()` after its ledger
  transaction;
- a fatal `ServerError` ("Connection closed by the server") or a stalled transport: the client is closed and
  rebuilt with jittered exponential backoff, resubscribing from the committed ids;
- on `403::Unknown client` aiocometd re-handshakes and re-subscribes inside `/meta/connect`, and a subscribe
  that fails there drops the channel from its set for good while the transport stays CONNECTED: every
  watchdog tick checks that each configured channel is still subscribed, and rebuilds when one is missing;
- Salesforce's guidance for long-lived CometD subscribers is to keep sessions long: a quiet stream is never
  rebuilt while every channel is subscribed and the connect loop runs (a connect request that stays pending
  far beyond a long poll is a hung loop and is rebuilt);
- `salesforce.ca_bundle`: the CometD transport gets the same TLS context as the REST client;
- a channel that has no replay id yet: while live, the stream reports a `Heartbeat` for it, and a later
  subscription of it reports `WindowLost` from that time (`heartbeats.py`);
- a stored replay id outside retention: `WindowLost` is reported and the channel is resubscribed with -1
  (new events only; replaying the whole retention with -2 would redeliver every retained change, each one
  counted against the delivered-event allocation); the consumer reconciles the window by change time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiocometd_ng.constants import TransportState
from aiosfstream_ng.client import Client, ReplayMarkerStoragePolicy
from aiosfstream_ng.exceptions import AiosfstreamException, ServerError

from bridge.config import SalesforceSettings
from bridge.records.inbound import Heartbeat, ReplayPosition, SalesforceChange, WindowLost
from bridge.redact import first_line
from bridge.salesforce.allocation import is_daily_limit_error
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.changes import decode_change
from bridge.salesforce.cometd import (
    ReplayStore,
    TokenAuthenticator,
    VersionedClient,
    connect_task,
    detach_connect_callback,
    guard_connect_callback,
    is_replay_invalid,
    teardown,
)
from bridge.salesforce.heartbeats import Heartbeats
from bridge.salesforce.subscribed import SubscribedChannels

log = structlog.get_logger(__name__)

StreamItem = SalesforceChange | WindowLost | Heartbeat


def channel_for(sobject: str) -> str:
    """`Event` -> `/data/EventChangeEvent`; `Mogli_Event__c` -> `/data/Mogli_Event__ChangeEvent`."""
    if sobject.endswith("__c"):
        return f"/data/{sobject[:-3]}__ChangeEvent"
    return f"/data/{sobject}ChangeEvent"


def default_channels(settings: SalesforceSettings) -> tuple[str, ...]:
    """The channels the bridge watches: Events, the Mogli Event object and Leads."""
    return (channel_for("Event"), channel_for(settings.objects.mogli_event_object), channel_for("Lead"))


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """Watchdog and rebuild pacing."""

    check_seconds: float = 5.0  # how often the watchdog looks at the transport
    stall_seconds: float = 60.0  # not connected for this long: the client is rebuilt
    # One connect request pending for `stall_seconds * silence_factor` (far beyond a long poll, 110 s on
    # Salesforce): the long poll hangs while the transport still calls itself connected, and the client is
    # rebuilt. Silence alone never is: a quiet org sends nothing for hours.
    silence_factor: float = 5.0
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    # A channel without a replay id reports how far it has seen this often; the reported time lags the
    # clock by as much, so that an event committed just before is not counted as seen while still in flight.
    heartbeat_seconds: float = 60.0


class _Stalled(Exception):
    """The transport has not been connected for too long, its connect loop hangs, or a channel is gone."""


@dataclass(slots=True)
class _Watch:
    """What the watchdog has seen of one client (event-loop clock readings)."""

    unconnected_since: float | None = None  # since when the transport is not CONNECTED
    task: asyncio.Future[Any] | None = None  # the connect request seen last
    task_since: float = 0.0  # when it was first seen


class ChangeStream:
    """Decoded change events from the watched channels, across reconnects and client rebuilds."""

    def __init__(
        self,
        tokens: TokenManager,
        settings: SalesforceSettings,
        positions: Mapping[str, ReplayPosition],
        *,
        channels: Sequence[str] | None = None,
        timing: StreamTiming = StreamTiming(),
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tokens = tokens
        self._settings = settings
        self._channels = tuple(channels or default_channels(settings))
        self._positions = dict(positions)
        self._store = ReplayStore(positions)
        self._timing = timing
        self._client: Client | None = None
        self._ssl = ssl_context
        self._beats = Heartbeats(positions, interval=timing.heartbeat_seconds, clock=clock)
        self.subscribed = SubscribedChannels(self._channels)
        self.rebuilds = 0
        self.received = 0
        self.allocation_exhausted = False  # CometD refused: the delivered-event allocation is used up

    @property
    def channels(self) -> tuple[str, ...]:
        """The subscribed channels."""
        return self._channels

    def committed(self, channel: str, replay_id: int) -> None:
        """Called after the event's effect is in the ledger: a resubscription starts after it."""
        self._store.commit(channel, replay_id)

    async def changes(self) -> AsyncIterator[StreamItem]:
        """Yield changes forever; rebuild the client after fatal errors with backoff."""
        failures = 0
        while True:
            client: Client | None = None
            lost: list[WindowLost] = []
            try:
                client = await self._open()
                for channel in self._channels:
                    lost += await self._subscribe(client, channel)
                lost += self._gaps_without_replay_id({item.channel for item in lost})
                failures = 0
                self.allocation_exhausted = False
                for item in lost:
                    yield item
                async for received in self._receive(client):
                    yield received
            # aiocometd-ng lets malformed replies (e.g. an HTTP 503 with a REST error body) escape as
            # KeyError/TypeError/ValueError from its message parsing: transport failures, not our bugs.
            except (
                AiosfstreamException,
                _Stalled,
                OSError,
                aiohttp.ClientError,
                KeyError,
                TypeError,
                ValueError,
            ) as exc:
                self.subscribed.lose_all()
                failures += 1
                self.rebuilds += 1
                delay = min(
                    self._timing.backoff_base_seconds * 2 ** (failures - 1), self._timing.backoff_max_seconds
                )
                delay *= random.uniform(0.5, 1.0)
                self._note_refusal(exc)
                log.warning(
                    "streaming.client_rebuild",
                    host=self._host(),
                    error_type=type(exc).__name__,
                    error=first_line(exc),
                    delay=delay,
                )
                await self._close(client)
                await asyncio.sleep(delay)
            finally:
                self.subscribed.lose_all()
                await self._close(client)

    def _host(self) -> str:
        """The instance the CometD client talks to (for log lines; never the token)."""
        token = self._tokens.token
        return urlsplit(token.instance_url if token else self._settings.login_url).netloc

    def _gaps_without_replay_id(self, reported: set[str]) -> list[WindowLost]:
        """Channels subscribed with -1 after a known time: what happened since may have been skipped."""
        lost = []
        for channel in self._channels:
            if channel in reported or self._store.has_replay_id(channel):
                continue
            gap = self._beats.gap(channel)
            if gap is not None:
                lost.append(gap)
        return lost

    def _note_refusal(self, exc: BaseException) -> None:
        """Remember (and say once) that Salesforce refuses the stream for the daily allocation."""
        if not is_daily_limit_error(str(exc)) or self.allocation_exhausted:
            return
        self.allocation_exhausted = True
        log.error(
            "streaming.allocation_exhausted",
            reason="Salesforce refuses change events: the daily delivered-event allocation is used up",
        )

    async def _open(self) -> Client:
        """A new, opened client; a failed open leaves no transport running (section 8, bug 2)."""
        client = VersionedClient(
            TokenAuthenticator(self._tokens),
            api_version=self._settings.api_version,
            replay=self._store,
            replay_storage_policy=ReplayMarkerStoragePolicy.MANUAL,
            connection_timeout=0,
        )
        client.ssl = self._ssl  # None: the system's trust store; else `salesforce.ca_bundle`'s context
        try:
            await client.open()
        except BaseException:
            await teardown(client)
            raise
        guard_connect_callback(client)
        self._client = client
        log.info("streaming.connected", channels=len(self._channels), api_version=self._settings.api_version)
        return client

    async def _subscribe(self, client: Client, channel: str) -> list[WindowLost]:
        """Subscribe from the committed id; an id outside retention is reported and replaced by -1."""
        try:
            await client.subscribe(channel)
            self.subscribed.mark(channel, True)
            return []
        except ServerError as exc:
            if not is_replay_invalid(exc):
                raise
        position = self._positions.get(channel)
        since = position.commit_time if position else None
        log.warning(
            "streaming.replay_window_lost", channel=channel, since=since.isoformat() if since else None
        )
        self._store.replay_new(channel)
        await client.subscribe(channel)
        self.subscribed.mark(channel, True)
        return [WindowLost(channel, since)]

    async def _receive(self, client: Client) -> AsyncIterator[SalesforceChange | Heartbeat]:
        """Messages until the client fails; the watchdog raises _Stalled (see `_watchdog`).

        One `receive()` stays pending across watchdog ticks: cancelling it on every tick (as `wait_for`
        does) can drop a message that was taken off the client's queue in the same instant.
        """
        watch = _Watch()
        names = self._settings.objects
        pending: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(client.receive())
                done, _ = await asyncio.wait({pending}, timeout=self._timing.check_seconds)
                self._watchdog(client, watch)
                quiet = (c for c in self._channels if not self._store.has_replay_id(c))
                for beat in self._beats.due(quiet):
                    yield beat
                if not done:
                    continue
                message, pending = pending.result(), None
                self.received += 1
                change = decode_change(message, names)
                if change is None:
                    log.warning("streaming.message_undecodable", channel=str(message.get("channel")))
                    continue
                yield change
        finally:
            if pending is not None:
                pending.cancel()

    def _watchdog(self, client: Client, watch: _Watch) -> None:
        """Raise _Stalled when the client cannot deliver: the server closed it, it stays unconnected, a
        configured channel fell out of its subscriptions, or one connect request hangs."""
        transport = client._transport
        state = transport.state if transport is not None else TransportState.DISCONNECTED
        for channel in self._channels:  # only a connected client with the channel in its set delivers it
            self.subscribed.mark(
                channel, state is TransportState.CONNECTED and channel in client.subscriptions
            )
        if state is TransportState.SERVER_DISCONNECTED:
            raise _Stalled("the server closed the connection")
        now = asyncio.get_running_loop().time()
        if state is not TransportState.CONNECTED:
            watch.unconnected_since = watch.unconnected_since or now
            if now - watch.unconnected_since >= self._timing.stall_seconds:
                raise _Stalled(f"transport {state.name} for {now - watch.unconnected_since:.0f}s")
            return
        watch.unconnected_since = None
        missing = sorted(set(self._channels) - set(client.subscriptions))
        if missing:
            raise _Stalled(f"not subscribed to {', '.join(missing)}")
        task = connect_task(client)
        if task is None or task is not watch.task:
            watch.task, watch.task_since = task, now
            return
        if task.done() and now - watch.task_since >= self._timing.stall_seconds:
            raise _Stalled("the connect loop stopped")  # a finished connect is followed by the next at once
        limit = self._timing.stall_seconds * self._timing.silence_factor
        if not task.done() and now - watch.task_since >= limit:
            raise _Stalled(f"one connect request pending for {now - watch.task_since:.0f}s")

    async def _close(self, client: Client | None) -> None:
        if client is None:
            return
        if self._client is client:
            self._client = None
        detach_connect_callback(client)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await client.close()
        await teardown(client)

    async def close(self) -> None:
        """Close the current client (idempotent)."""
        await self._close(self._client)

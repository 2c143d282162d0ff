"""aiosfstream-ng, unmodified, adapted to the bridge: its client pieces and the faults they work around.

`ChangeStream` (streaming.py) drives the client; this module holds what reaches into aiosfstream-ng
(reference: salesforce-protocol.md section 8):
- one token for REST and streaming: `TokenAuthenticator` takes it from the shared TokenManager;
- the hard-coded API version 45.0: `VersionedClient.get_cometd_url` uses `salesforce.api_version`;
- replay ids: `ReplayStore` hands out the ids the ledger committed (MANUAL policy: receiving a message never
  moves a position; the consumer commits after its ledger transaction);
- closing a transport (or the loop's shutdown) cancels its pending connect task, whose done-callback then
  raises CancelledError into the event loop's exception handler (a plain-text traceback): the callback is
  guarded on every opened client (a cancelled connect is ignored) and detached before closing;
- the runaway reconnect loop after a failed `open()`: `teardown` stops the transport and HTTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiosfstream_ng.auth import AuthenticatorBase
from aiosfstream_ng.client import Client
from aiosfstream_ng.exceptions import ServerError
from aiosfstream_ng.replay import ReplayMarker, ReplayMarkerStorage, ReplayOption

from bridge.records.inbound import ReplayPosition
from bridge.salesforce.auth import AccessToken, TokenManager


class TokenAuthenticator(AuthenticatorBase):
    """Hands aiosfstream-ng the bridge's token; a re-authentication refreshes it once, shared with REST."""

    def __init__(self, tokens: TokenManager) -> None:
        super().__init__()
        self._tokens = tokens
        self._last: AccessToken | None = None

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        token = await (self._tokens.get() if self._last is None else self._tokens.refresh(self._last))
        self._last = token
        return 200, {
            "access_token": token.access_token,
            "token_type": "Bearer",
            "instance_url": token.instance_url,
        }


class VersionedClient(Client):
    """aiosfstream-ng's Client at the configured API version instead of its hard-coded 45.0."""

    def __init__(self, authenticator: AuthenticatorBase, *, api_version: str, **kwargs: Any) -> None:
        self._api_version = api_version
        super().__init__(authenticator, **kwargs)

    def get_cometd_url(self, instance_url: str) -> str:  # type: ignore[override]
        """The CometD endpoint of the instance at our API version."""
        return f"{instance_url.rstrip('/')}/cometd/{self._api_version}"


class ReplayStore(ReplayMarkerStorage):
    """Replay ids per channel as last committed to the ledger; -1 (new events) for a channel never seen."""

    def __init__(self, positions: Mapping[str, ReplayPosition]) -> None:
        super().__init__()
        self._ids: dict[str, int] = {channel: p.replay_id for channel, p in positions.items()}

    async def get_replay_marker(self, subscription: str) -> ReplayMarker | None:
        """The committed marker of a channel, if any."""
        replay_id = self._ids.get(subscription)
        return None if replay_id is None else ReplayMarker(date="", replay_id=replay_id)

    async def get_replay_id(self, subscription: str) -> int:
        """The id sent on subscribe: the committed one, else -1."""
        return self._ids.get(subscription, int(ReplayOption.NEW_EVENTS))

    async def set_replay_marker(self, subscription: str, replay_marker: ReplayMarker) -> None:
        """Ignored: positions move only through `commit` (after the ledger transaction)."""

    def commit(self, channel: str, replay_id: int) -> None:
        """The effect of this event is durable: a resubscription starts after it."""
        self._ids[channel] = replay_id

    def has_replay_id(self, channel: str) -> bool:
        """True once the channel has a real position (a delivered event's id)."""
        return self._ids.get(channel, -1) >= 0

    def replay_new(self, channel: str) -> None:
        """Resubscribe this channel with -1 (new events only)."""
        self._ids[channel] = int(ReplayOption.NEW_EVENTS)


def is_replay_invalid(error: ServerError) -> bool:
    """Whether a subscribe was refused for its replay id (invalid, or outside retention)."""
    text = f"{error.error or ''} {error.message}"
    return "replayId" in text or "replay id" in text.lower()


def connect_task(client: Client) -> asyncio.Future[Any] | None:
    """The transport's current connect (or re-handshake) request, if any."""
    transport = client._transport
    task = getattr(transport, "_connect_task", None) if transport is not None else None
    return task if isinstance(task, asyncio.Future) else None


def guard_connect_callback(client: Client) -> None:
    """Make the transport ignore a cancelled connect task instead of raising CancelledError into the loop."""
    transport = client._transport
    if transport is None:
        return
    original = getattr(transport, "_connect_done")  # noqa: B009 (private, untyped)

    def connect_done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled():  # cancelled: the transport is closing, there is no advice to follow
            original(future)

    transport._connect_done = connect_done  # type: ignore[attr-defined]  # the next connect tasks use it
    task = connect_task(client)
    if task is not None and task.remove_done_callback(original):
        task.add_done_callback(connect_done)


def detach_connect_callback(client: Client) -> None:
    """Keep a cancelled connect task from raising CancelledError into the loop's exception handler."""
    transport, task = client._transport, connect_task(client)
    if transport is not None and task is not None:
        task.remove_done_callback(getattr(transport, "_connect_done"))  # noqa: B009 (private, untyped)


async def teardown(client: Client) -> None:
    """Stop the transport's background connect task and the HTTP session, whatever state they are in."""
    transport = client._transport
    detach_connect_callback(client)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            if transport is not None:
                await transport.disconnect()
                await transport.close()
    with contextlib.suppress(Exception):
        await client._close_http_session()

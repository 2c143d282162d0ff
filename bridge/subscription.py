"""The daemon's change-event subscription, chosen from the settings: which channels (the filtered custom
channel `setup` made, else the standard ones), from which stored positions, over which transport (CometD or
the Pub/Sub API). Wiring, called by `app.py`; the streams themselves live in `bridge/salesforce/`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from bridge.config import Settings
from bridge.errors import BridgeError, ConfigurationError, TransientError

if TYPE_CHECKING:
    from bridge.ledger.repository import Ledger
    from bridge.records.inbound import ReplayPosition
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.channels import ChannelCheck
    from bridge.salesforce.pubsub import PubSubStream
    from bridge.salesforce.rest import SalesforceClient
    from bridge.salesforce.streaming import ChangeStream

log = structlog.get_logger(__name__)


async def choose_channels(
    settings: Settings,
    client: SalesforceClient,
    tokens: TokenManager,
    ledger: Ledger,
    known: ChannelCheck | None = None,
) -> tuple[tuple[str, ...], str]:
    """The channels to subscribe to and a status line saying why: the custom channel when `setup`
    created it (`sync.channel` auto or custom), else the standard ones. A check that fails for a passing
    reason (Salesforce down, the API allocation spent) keeps the channel the ledger has positions of:
    flipping channels at every restart would leave windows only a reconciliation could cover. `known` is a
    check made a moment ago (the org's runtime just ensured the channel): not asked of Salesforce again."""
    from bridge.salesforce.channels import ChannelCheck, check_channel
    from bridge.salesforce.streaming import default_channels

    sf, sync = settings.salesforce, settings.sync
    if sync.channel == "standard":
        return default_channels(sf), "standard channels (sync.channel = standard)"
    try:
        user = await tokens.user_id()
        if known is not None:
            found = known
        elif user:
            found = await check_channel(client, sf.objects, sync.channel_name, user)
        else:
            found = ChannelCheck(None, "the token response names no user")
    except BridgeError as exc:
        if sync.channel == "custom":
            raise
        reason = f"the custom channel could not be checked ({type(exc).__name__})"
        custom = f"/data/{sync.channel_name}"
        if isinstance(exc, TransientError) and await ledger.read_checkpoint(custom) is not None:
            log.warning("streaming.custom_channel_kept", channel=custom, error_type=type(exc).__name__)
            return (custom,), f"{reason}; kept, as the ledger has its position"
        found = ChannelCheck(None, reason)
    if found.path is not None:
        log.info("streaming.custom_channel", channel=found.path)
        return (found.path,), found.reason
    if sync.channel == "custom":
        raise ConfigurationError(f"sync.channel is custom but {found.reason}", "sync.channel")
    log.warning("streaming.standard_channels", reason=found.reason)
    return default_channels(sf), f"standard channels: {found.reason}"


async def stored_positions(
    settings: Settings, ledger: Ledger, channels: tuple[str, ...]
) -> dict[str, ReplayPosition]:
    """The stored positions of the channels. On a first run on them (the custom channel after the standard
    ones, or back), the time of the other channels' last positions: the window since is reconciled."""
    from bridge.records.inbound import ReplayPosition
    from bridge.salesforce.streaming import default_channels

    stored = {}
    custom = f"/data/{settings.sync.channel_name}"
    for channel in {*channels, *default_channels(settings.salesforce), custom}:
        position = ReplayPosition.decode(await ledger.read_checkpoint(channel))
        if position is not None:
            stored[channel] = position
    positions = {c: p for c, p in stored.items() if c in channels}
    earlier = [p.commit_time for c, p in stored.items() if c not in channels and p.commit_time]
    if positions or not earlier:
        return positions
    return {channel: ReplayPosition(-1, min(earlier)) for channel in channels}


async def change_stream(
    settings: Settings, tokens: TokenManager, positions: dict[str, ReplayPosition], channels: tuple[str, ...]
) -> tuple[ChangeStream | PubSubStream, str]:
    """The transport `sync.transport` names, and a status line saying which; both transports trust what REST
    trusts and yield the same items."""
    from bridge.salesforce.auth import make_ssl_context
    from bridge.salesforce.pubsub import PubSubStream, channel_credentials
    from bridge.salesforce.streaming import ChangeStream, StreamTiming

    sf, sync = settings.salesforce, settings.sync
    if sync.transport == "cometd":
        log.info("streaming.transport", transport="cometd")
        stream = ChangeStream(
            tokens,
            sf,
            positions,
            channels=channels,
            timing=StreamTiming(stall_seconds=sync.streaming_stall_seconds),
            ssl_context=make_ssl_context(sf.ca_bundle),
        )
        return stream, "cometd"
    org_id = await tokens.org_id()
    if org_id is None:
        raise ConfigurationError(
            "sync.transport is pubsub, but the token response names no org (no `id` URL) for `tenantid`",
            "sync.transport",
        )
    security = "plaintext" if sync.pubsub_plaintext else "TLS"
    line = f"pubsub at {sync.pubsub_endpoint} ({security})"
    log.info("streaming.transport", transport="pubsub", endpoint=sync.pubsub_endpoint, security=security)
    pubsub = PubSubStream(
        tokens,
        sf,
        positions,
        channels=channels,
        target=sync.pubsub_endpoint,
        tenant_id=org_id,
        credentials=None if sync.pubsub_plaintext else channel_credentials(sf.ca_bundle),
    )
    return pubsub, line

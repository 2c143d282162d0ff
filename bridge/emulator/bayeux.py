"""Bayeux wire shapes of the emulated Streaming API: replies, error strings, advice and CDC messages.

Pure functions, no state: each builds one JSON object exactly as Salesforce's CometD server sends it
(reference salesforce-protocol.md sections 4 and 5). Every failed reply carries an `advice`, because
aiocometd-ng spins in a tight reconnect loop on errors without one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from bridge.emulator.bus import StoredEvent

HANDSHAKE = "/meta/handshake"
CONNECT = "/meta/connect"
SUBSCRIBE = "/meta/subscribe"
UNSUBSCRIBE = "/meta/unsubscribe"
DISCONNECT = "/meta/disconnect"
LONG_POLLING = "long-polling"
BAYEUX_VERSION = "1.0"

ADVICE_NONE: dict[str, Any] = {"reconnect": "none", "interval": 0}
ADVICE_HANDSHAKE: dict[str, Any] = {"reconnect": "handshake", "interval": 0}
ADVICE_RETRY: dict[str, Any] = {"reconnect": "retry", "interval": 0}

ERR_AUTH_REQUIRED = "401::Request requires authentication"
ERR_AUTH_INVALID = "401::Authentication invalid"
ERR_HANDSHAKE_DENIED = "403::Handshake denied"
ERR_UNKNOWN_CLIENT = "403::Unknown client"
ERR_CLIENT_LIMIT = "403::Organization concurrent user limit exceeded"
ERR_DAILY_LIMIT = "403::Organization total events daily limit exceeded"
ERR_PUBLISH_DENIED = "403::Publish denied"
ERR_VERSION_MISSING = "400::API version in the URI is mandatory. URI format: '/cometd/NN.0'"
ERR_VERSION_OLD = "400::Unsupported API version. Only API version 37.0 and later are supported."
ERR_BAD_MESSAGE = "400::Bad request: the body must be a JSON array of Bayeux messages"


def invalid_connection_type(connection_type: str) -> str:
    """`400::Invalid connection type {websocket}`."""
    return f"400::Invalid connection type {{{connection_type}}}"


def unknown_channel(channel: str) -> str:
    """The error for a channel that does not exist or whose entity is not enabled."""
    return f"400::The channel you requested to subscribe to doesn't exist {{{channel}}}"


def invalid_replay_id(replay_id: object) -> str:
    """The error for a replay id outside the retention window or never issued."""
    return (
        f"400::The replayId {{{replay_id}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )


def replay_map_mismatch(channel: str, replay_map: Mapping[str, Any]) -> str:
    """The error for a replay map with no entry for the subscribed channel (rendered like Java's Map)."""
    rendered = ", ".join(f"{key}={value}" for key, value in replay_map.items())
    return (
        f"400::The replayId for channel {{{channel}}} wasn't found using the provided replay ID map "
        f"{{{{{rendered}}}}}. Ensure that the channel name in the map matches the subscription."
    )


def reply(message: Mapping[str, Any], *, successful: bool, **extra: Any) -> dict[str, Any]:
    """A reply to `message`: its channel, its id echoed verbatim (same JSON type), `successful`, extras."""
    answer: dict[str, Any] = {"channel": message.get("channel", "/meta/unsuccessful")}
    if "id" in message:
        answer["id"] = message["id"]
    answer["successful"] = successful
    answer.update(extra)
    return answer


def failure(
    message: Mapping[str, Any], error: str, advice: Mapping[str, Any], client_id: str | None = None
) -> dict[str, Any]:
    """A failed reply with error string and advice; subscription echoed for (un)subscribe messages."""
    extra: dict[str, Any] = {"error": error, "advice": dict(advice)}
    if client_id is not None:
        extra["clientId"] = client_id
    if message.get("channel") in (SUBSCRIBE, UNSUBSCRIBE) and "subscription" in message:
        extra["subscription"] = message["subscription"]
    return reply(message, successful=False, **extra)


def handshake_denied(message: Mapping[str, Any]) -> dict[str, Any]:
    """Handshake with an unknown, expired or revoked token (answered with HTTP 200)."""
    answer = failure(message, ERR_HANDSHAKE_DENIED, {"reconnect": "none", "interval": 0})
    answer["ext"] = {"sfdc": {"failureReason": ERR_AUTH_INVALID}}
    return answer


def handshake_ok(message: Mapping[str, Any], client_id: str) -> dict[str, Any]:
    """A successful handshake: long-polling only, replay and payload.format extensions, no advice."""
    return reply(
        message,
        successful=True,
        version=BAYEUX_VERSION,
        minimumVersion=BAYEUX_VERSION,
        clientId=client_id,
        supportedConnectionTypes=[LONG_POLLING],
        ext={"replay": True, "payload.format": True},
    )


def first_connect_advice(long_poll_timeout_seconds: float) -> dict[str, Any]:
    """The advice of the first connect after a handshake: timeout in ms, interval 0, retry."""
    return {"interval": 0, "timeout": round(long_poll_timeout_seconds * 1000), "reconnect": "retry"}


def schema_id(entity: str) -> str:
    """A stable, Salesforce-looking 22-character schema id per entity."""
    digest = hashlib.sha256(f"cdc-schema:{entity}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def change_message(channel: str, stored: StoredEvent) -> dict[str, Any]:
    """The CometD message of one change event on `channel` (header, body fields, replay id)."""
    event = stored.event
    header = {
        **event.scalar_header(),
        "recordIds": list(event.record_ids),
        "changedFields": list(event.changed_fields),
    }
    payload: dict[str, Any] = {"ChangeEventHeader": header}
    payload.update(event.fields)
    return {
        "channel": channel,
        "data": {
            "schema": schema_id(event.entity),
            "payload": payload,
            "event": {"replayId": stored.replay_id},
        },
    }

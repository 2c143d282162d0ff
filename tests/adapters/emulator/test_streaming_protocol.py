"""Streaming API conformance on the wire: raw Bayeux requests against the emulator's CometD endpoint,
each test naming the documented behaviour (reference salesforce-protocol.md sections 4, 5 and 8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from streaming_support import (
    BayeuxSession,
    StreamingOrg,
    change_event,
    events_of,
    replay_ids,
    running_org,
    wait_until_held,
)

from bridge.emulator.contracts import StreamingSettings

SETTINGS = StreamingSettings(
    long_poll_timeout_seconds=1.0,
    retention_seconds=3600.0,
    client_expiry_seconds=5.0,
    max_concurrent_clients=20,
    daily_delivered_events=10_000,
)
EVENTS = "/data/EventChangeEvent"


@pytest.fixture
async def org() -> AsyncIterator[StreamingOrg]:
    """A running streaming org with 1-second long polls."""
    async with running_org(SETTINGS) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def bayeux(http: aiohttp.ClientSession, org: StreamingOrg) -> BayeuxSession:
    """A raw Bayeux client holding a valid token."""
    return BayeuxSession(http, org)


# Handshake


async def test_handshake_reply_has_the_documented_shape_and_no_advice(bayeux: BayeuxSession) -> None:
    """Handshake answers version/minimumVersion 1.0, a clientId, long-polling only, replay ext, no advice."""
    status, replies = await bayeux.post([bayeux.handshake_message(id="1", ext={"replay": True})])
    assert status == 200
    [reply] = replies
    client_id = reply.pop("clientId")
    assert isinstance(client_id, str) and len(client_id) >= 20
    assert reply == {
        "channel": "/meta/handshake",
        "id": "1",
        "successful": True,
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": ["long-polling"],
        "ext": {"replay": True, "payload.format": True},
    }


async def test_handshake_without_replay_ext_offering_websocket_too_succeeds(bayeux: BayeuxSession) -> None:
    """aiosfstream-ng's first handshake (no ext, websocket + long-polling) is accepted, long-polling only."""
    message = bayeux.handshake_message(supportedConnectionTypes=["websocket", "long-polling"])
    _, [reply] = await bayeux.post([message])
    assert reply["successful"] is True
    assert reply["supportedConnectionTypes"] == ["long-polling"]


async def test_websocket_only_handshake_is_an_invalid_connection_type(bayeux: BayeuxSession) -> None:
    """A handshake offering only websocket fails with `400::Invalid connection type` and advice."""
    _, [reply] = await bayeux.post([bayeux.handshake_message(supportedConnectionTypes=["websocket"])])
    assert reply["successful"] is False
    assert reply["error"].startswith("400::Invalid connection type")
    assert reply["advice"]["reconnect"] == "none"
    assert "clientId" not in reply


@pytest.mark.parametrize("message_id", ["7", 7])
async def test_message_id_is_echoed_with_the_same_json_type(
    bayeux: BayeuxSession, message_id: object
) -> None:
    """Replies echo `id` verbatim: a string stays a string, a number stays a number."""
    _, [reply] = await bayeux.post([bayeux.handshake_message(id=message_id)])
    assert reply["id"] == message_id
    assert type(reply["id"]) is type(message_id)


# Transport rules: version, method, body, auth


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/cometd/36.0", "400::Unsupported API version. Only API version 37.0 and later are supported."),
        ("/cometd/latest", "400::API version in the URI is mandatory. URI format: '/cometd/NN.0'"),
        ("/cometd", "400::API version in the URI is mandatory. URI format: '/cometd/NN.0'"),
    ],
)
async def test_api_version_below_37_or_missing_is_rejected(
    bayeux: BayeuxSession, path: str, error: str
) -> None:
    """Versions under 37.0 and version-less paths answer HTTP 400 with the documented text, as JSON."""
    status, [reply] = await bayeux.post([bayeux.handshake_message()], url=bayeux.org.base_url + path)
    assert status == 400
    assert reply["error"] == error
    assert reply["successful"] is False and "advice" in reply


async def test_oldest_supported_version_37_is_accepted(bayeux: BayeuxSession) -> None:
    """`/cometd/37.0` is the oldest version that handshakes."""
    _, [reply] = await bayeux.post([bayeux.handshake_message()], url=bayeux.org.base_url + "/cometd/37.0")
    assert reply["successful"] is True


async def test_only_post_is_served(http: aiohttp.ClientSession, org: StreamingOrg) -> None:
    """The endpoint answers GET with 405: CometD here is POST-only long-polling."""
    async with http.get(org.cometd_url) as response:
        assert response.status == 405


async def test_body_must_be_a_json_array(bayeux: BayeuxSession, http: aiohttp.ClientSession) -> None:
    """A body that is not a JSON array of messages answers 400 with a JSON error reply."""
    headers = {"Authorization": f"Bearer {bayeux.token}"}
    async with http.post(
        bayeux.org.cometd_url, json={"channel": "/meta/handshake"}, headers=headers
    ) as response:
        assert response.status == 400
        [reply] = await response.json()
    assert reply["successful"] is False and reply["error"].startswith("400::")


async def test_request_over_32_kb_is_rejected(bayeux: BayeuxSession) -> None:
    """A request body over 32,768 bytes answers 413 Maximum Request Size Exceeded."""
    status, [reply] = await bayeux.post([bayeux.handshake_message(padding="x" * 33_000)])
    assert status == 413
    assert reply["error"] == "413::Maximum Request Size Exceeded"


async def test_missing_token_requires_authentication(http: aiohttp.ClientSession, org: StreamingOrg) -> None:
    """Without an Authorization header every message fails with `401::Request requires authentication`."""
    bayeux = BayeuxSession(http, org, token="")
    status, [reply] = await bayeux.post([bayeux.handshake_message(id="1")])
    assert status == 401
    assert reply["error"] == "401::Request requires authentication"
    assert reply["id"] == "1" and reply["successful"] is False and "advice" in reply


async def test_handshake_with_invalid_token_is_denied_with_failure_reason(bayeux: BayeuxSession) -> None:
    """Invalid token on handshake: HTTP 200, `403::Handshake denied`, sfdc failureReason, reconnect none."""
    bayeux.org.tokens.revoke_all()
    status, [reply] = await bayeux.post([bayeux.handshake_message(id="1")])
    assert status == 200
    assert reply == {
        "channel": "/meta/handshake",
        "id": "1",
        "successful": False,
        "error": "403::Handshake denied",
        "advice": {"reconnect": "none", "interval": 0},
        "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}},
    }


async def test_connect_with_revoked_token_is_authentication_invalid(bayeux: BayeuxSession) -> None:
    """Token revoked after handshake: connect fails `401::Authentication invalid`, reconnect none."""
    await bayeux.open()
    bayeux.org.tokens.revoke_all()
    message = bayeux.connect_message()
    _, [reply] = await bayeux.post([message])
    assert reply == {
        "channel": "/meta/connect",
        "id": message["id"],
        "successful": False,
        "error": "401::Authentication invalid",
        "advice": {"reconnect": "none", "interval": 0},
        "clientId": bayeux.client_id,
    }


# Connect and long polling


async def test_first_connect_is_answered_at_once_with_retry_advice(bayeux: BayeuxSession) -> None:
    """The first connect after a handshake returns immediately with advice interval 0, timeout ms, retry."""
    await bayeux.handshake()
    [reply] = await bayeux.connect()
    assert reply["successful"] is True
    assert reply["clientId"] == bayeux.client_id
    assert reply["advice"] == {"interval": 0, "timeout": 1000, "reconnect": "retry"}


async def test_held_connect_without_events_ends_successful_without_advice(bayeux: BayeuxSession) -> None:
    """A later connect with nothing to deliver is held for the long poll, then answered without advice."""
    await bayeux.open(EVENTS, -1)
    [reply] = await bayeux.connect()
    assert reply == {
        "channel": "/meta/connect",
        "id": reply["id"],
        "successful": True,
        "clientId": bayeux.client_id,
    }


async def test_held_connect_is_answered_early_when_an_event_arrives(
    http: aiohttp.ClientSession,
) -> None:
    """A held connect returns with the event in the same response array as soon as it is published."""
    settings = StreamingSettings(long_poll_timeout_seconds=90.0)
    async with running_org(settings) as org:
        bayeux = BayeuxSession(http, org)
        await bayeux.open(EVENTS, -1)
        held = asyncio.create_task(bayeux.connect())
        await wait_until_held(org)
        org.bus.publish([change_event("CREATE")])
        async with asyncio.timeout(30):  # a liveness bound, far under the 90-second poll
            replies = await held
    assert [r["channel"] for r in replies] == [EVENTS, "/meta/connect"]
    assert replies[-1]["successful"] is True


async def test_batch_processes_subscribe_before_the_connect(bayeux: BayeuxSession) -> None:
    """[connect, subscribe]: the subscribe applies first, so its replay rides on the same connect reply."""
    bayeux.org.bus.publish([change_event("CREATE"), change_event("CREATE")])
    await bayeux.handshake()
    connect = bayeux.connect_message()
    subscribe = bayeux.subscribe_message(EVENTS, {EVENTS: -2})
    _, replies = await bayeux.post([connect, subscribe])
    channels = [r["channel"] for r in replies]
    assert channels == ["/meta/subscribe", EVENTS, EVENTS, "/meta/connect"]
    assert replies[0]["subscription"] == EVENTS and replies[0]["successful"] is True
    assert replies[-1]["id"] == connect["id"] and replies[-1]["advice"]["reconnect"] == "retry"


async def test_unknown_client_on_connect_advises_handshake(bayeux: BayeuxSession) -> None:
    """A connect with a never-issued clientId gets `403::Unknown client`, handshake advice, no clientId."""
    bayeux.client_id = "nosuchclient"
    message = bayeux.connect_message()
    _, [reply] = await bayeux.post([message])
    assert reply == {
        "channel": "/meta/connect",
        "id": message["id"],
        "successful": False,
        "error": "403::Unknown client",
        "advice": {"interval": 0, "reconnect": "handshake"},
    }


async def test_forget_clients_makes_client_ids_unknown_and_releases_held_connects(
    bayeux: BayeuxSession,
) -> None:
    """forget_clients() answers a held connect with `403::Unknown client`; the next connect gets the same."""
    await bayeux.open(EVENTS, -1)
    held = asyncio.create_task(bayeux.connect())
    await wait_until_held(bayeux.org)
    assert bayeux.org.service.forget_clients() == 1
    [released] = await held
    assert released["error"] == "403::Unknown client"
    [again] = await bayeux.connect()
    assert again["error"] == "403::Unknown client"
    assert bayeux.org.service.stats()["streaming_clients"] == 0


async def test_client_that_stops_polling_is_forgotten(bayeux: BayeuxSession) -> None:
    """A client silent beyond long poll + grace is expired: its connect gets `403::Unknown client`."""
    await bayeux.open(EVENTS, -1)
    assert bayeux.org.service.stats()["streaming_clients"] == 1
    bayeux.org.monotonic.advance(SETTINGS.long_poll_timeout_seconds + SETTINGS.client_expiry_seconds + 1)
    assert bayeux.org.service.stats()["streaming_clients"] == 0
    [reply] = await bayeux.connect()
    assert reply["error"] == "403::Unknown client"


async def test_client_must_reconnect_within_expiry_after_a_delivery(bayeux: BayeuxSession) -> None:
    """After a connect that delivered events, the client expires client_expiry_seconds later."""
    await bayeux.open(EVENTS, -1)
    bayeux.org.bus.publish([change_event("CREATE")])
    assert len(events_of(await bayeux.connect())) == 1
    bayeux.org.monotonic.advance(SETTINGS.client_expiry_seconds + 0.5)
    [reply] = await bayeux.connect()
    assert reply["error"] == "403::Unknown client"


async def test_disconnect_ends_the_client(bayeux: BayeuxSession) -> None:
    """/meta/disconnect answers successful and the client id is unknown afterwards."""
    await bayeux.open(EVENTS, -1)
    message = {"channel": "/meta/disconnect", "clientId": bayeux.client_id, "id": bayeux.next_id()}
    _, [reply] = await bayeux.post([message])
    assert reply["successful"] is True and reply["id"] == message["id"]
    [after] = await bayeux.connect()
    assert after["error"] == "403::Unknown client"


async def test_close_releases_held_connects(http: aiohttp.ClientSession) -> None:
    """Server shutdown (close) answers held connects right away instead of leaving them parked."""
    async with running_org(StreamingSettings(long_poll_timeout_seconds=90.0)) as org:
        bayeux = BayeuxSession(http, org)
        await bayeux.open(EVENTS, -1)
        held = asyncio.create_task(bayeux.connect())
        await wait_until_held(org)
        await org.service.close()
        async with asyncio.timeout(30):  # a liveness bound, far under the 90-second poll
            [reply] = await held
    assert reply["successful"] is True


async def test_subscribe_with_revoked_token_is_authentication_invalid(bayeux: BayeuxSession) -> None:
    """Bearer auth applies to every message: a subscribe with a revoked token fails with 401 and advice."""
    await bayeux.open()
    bayeux.org.tokens.revoke_all()
    reply = await bayeux.subscribe(EVENTS, -1)
    assert reply["error"] == "401::Authentication invalid"
    assert reply["subscription"] == EVENTS and reply["advice"] == {"reconnect": "none", "interval": 0}


async def test_a_newer_connect_releases_the_held_one(http: aiohttp.ClientSession) -> None:
    """A second connect from the same client answers the first (successful, empty) and is held itself."""
    async with running_org(StreamingSettings(long_poll_timeout_seconds=90.0)) as org:
        bayeux = BayeuxSession(http, org)
        await bayeux.open(EVENTS, -1)
        first = asyncio.create_task(bayeux.connect())
        await wait_until_held(org)
        second = asyncio.create_task(bayeux.connect())
        async with asyncio.timeout(30):  # a liveness bound, far under the 90-second poll
            [released] = await first
            assert released["successful"] is True
            await wait_until_held(org)
            org.bus.publish([change_event("CREATE")])
            replies = await second
    assert [r["channel"] for r in replies] == [EVENTS, "/meta/connect"]


async def test_replay_subscribe_wakes_the_held_connect(http: aiohttp.ClientSession) -> None:
    """A -2 subscribe sent while a connect is held makes that connect return with the replayed events."""
    async with running_org(StreamingSettings(long_poll_timeout_seconds=90.0)) as org:
        org.bus.publish([change_event("CREATE"), change_event("UPDATE")])
        bayeux = BayeuxSession(http, org)
        await bayeux.open()
        held = asyncio.create_task(bayeux.connect())
        await wait_until_held(org)
        assert (await bayeux.subscribe(EVENTS, -2))["successful"]
        async with asyncio.timeout(30):  # a liveness bound, far under the 90-second poll
            replies = await held
    assert len(replay_ids(replies)) == 2


async def test_publishing_from_the_client_is_denied(bayeux: BayeuxSession) -> None:
    """CometD publish to a CDC channel is not part of the Streaming API: `403::Publish denied` with advice."""
    await bayeux.open()
    message = {"channel": EVENTS, "clientId": bayeux.client_id, "data": {}, "id": bayeux.next_id()}
    _, [reply] = await bayeux.post([message])
    assert reply["successful"] is False and reply["error"] == "403::Publish denied"
    assert reply["id"] == message["id"] and "advice" in reply

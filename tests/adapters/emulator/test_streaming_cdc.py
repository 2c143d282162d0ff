"""Change Data Capture over the emulator's CometD endpoint: channels, replay -1/-2/N, retention errors,
message shapes, gap and overflow events, and the streaming allocations (reference sections 4.4-5.4)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
from streaming_support import (
    USER_ID,
    BayeuxSession,
    StreamingOrg,
    change_event,
    events_of,
    replay_ids,
    running_org,
)

from bridge.emulator.contracts import StreamingSettings

SETTINGS = StreamingSettings(
    long_poll_timeout_seconds=1.0, retention_seconds=3600.0, client_expiry_seconds=5.0
)
EVENTS = "/data/EventChangeEvent"
MOGLI = "/data/Mogli_Event__ChangeEvent"
ALL = "/data/ChangeEvents"


@pytest.fixture
async def org() -> AsyncIterator[StreamingOrg]:
    """A running streaming org with 1-second long polls and a one-hour retention."""
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


# Channels


@pytest.mark.parametrize("channel", [EVENTS, MOGLI, ALL, "/data/LeadChangeEvent", "/data/ContactChangeEvent"])
async def test_cdc_channels_of_enabled_entities_can_be_subscribed(
    bayeux: BayeuxSession, channel: str
) -> None:
    """Enabled entities' channels (standard, custom `__ChangeEvent`, /data/ChangeEvents) subscribe fine."""
    await bayeux.open()
    reply = await bayeux.subscribe(channel, -1)
    assert reply == {
        "channel": "/meta/subscribe",
        "id": reply["id"],
        "successful": True,
        "clientId": bayeux.client_id,
        "subscription": channel,
    }


@pytest.mark.parametrize(
    "channel",
    ["/data/AccountChangeEvent", "/data/Mogli_Event__c", "/topic/Bookings", "/data/Nope__ChangeEvent"],
)
async def test_unknown_or_not_enabled_channel_does_not_exist(bayeux: BayeuxSession, channel: str) -> None:
    """Channels of entities without CDC, or not CDC channels at all, fail with the documented 400."""
    await bayeux.open()
    reply = await bayeux.subscribe(channel, -1)
    assert reply["successful"] is False
    assert reply["error"] == f"400::The channel you requested to subscribe to doesn't exist {{{channel}}}"
    assert reply["subscription"] == channel and "advice" in reply


async def test_subscribe_without_client_id_is_unknown_client(bayeux: BayeuxSession) -> None:
    """A subscribe from a client id the server does not know fails `403::Unknown client`."""
    bayeux.client_id = "nosuchclient"
    reply = await bayeux.subscribe(EVENTS, -1)
    assert reply["error"] == "403::Unknown client"
    assert reply["subscription"] == EVENTS
    assert reply["advice"] == {"interval": 0, "reconnect": "handshake"}


# Message shape


async def test_create_message_has_header_body_schema_and_replay_id(bayeux: BayeuxSession) -> None:
    """A CREATE arrives as {channel, data: {schema, payload: {ChangeEventHeader, ...}, event: {replayId}}}."""
    await bayeux.open(EVENTS, -1)
    event = change_event(
        "CREATE",
        record_id="00U5e00000AbCdEEAV",
        fields={"Subject": "Intro call", "DurationInMinutes": 30},
        commit_timestamp_ms=1718035201000,
    )
    bayeux.org.bus.publish([event])
    [message] = events_of(await bayeux.connect())
    assert message["channel"] == EVENTS
    data = message["data"]
    assert set(data) == {"schema", "payload", "event"}
    assert isinstance(data["schema"], str) and len(data["schema"]) == 22
    assert isinstance(data["event"]["replayId"], int)
    assert data["payload"] == {
        "ChangeEventHeader": {
            "entityName": "Event",
            "recordIds": ["00U5e00000AbCdEEAV"],
            "changeType": "CREATE",
            "changeOrigin": "com/salesforce/api/rest/60.0;client=mogli-bridge",
            "transactionKey": event.transaction_key,
            "sequenceNumber": 1,
            "commitTimestamp": 1718035201000,
            "commitNumber": 11691853425913,
            "commitUser": USER_ID,
            "changedFields": [],
        },
        "Subject": "Intro call",
        "DurationInMinutes": 30,
    }


async def test_schema_id_is_stable_per_entity(bayeux: BayeuxSession) -> None:
    """Every Event change carries the same schema id; Mogli_Event__c's differs."""
    await bayeux.open(ALL, -1)
    bayeux.org.bus.publish([change_event("CREATE"), change_event("UPDATE")])
    bayeux.org.bus.publish([change_event("CREATE", entity="Mogli_Event__c")])
    schemas = [m["data"]["schema"] for m in events_of(await bayeux.connect())]
    assert len(schemas) == 3
    assert schemas[0] == schemas[1] != schemas[2]


async def test_all_change_events_channel_repeats_entity_events_with_the_same_replay_id(
    bayeux: BayeuxSession,
) -> None:
    """/data/ChangeEvents carries every CDC event under the replay id it has on its entity channel."""
    await bayeux.open(EVENTS, -1)
    assert (await bayeux.subscribe(ALL, -1))["successful"]
    bayeux.org.bus.publish([change_event("CREATE"), change_event("CREATE", entity="Mogli_Event__c")])
    messages = events_of(await bayeux.connect())
    by_channel = [(m["channel"], m["data"]["event"]["replayId"]) for m in messages]
    first, second = sorted({replay_id for _, replay_id in by_channel})
    assert sorted(by_channel) == sorted([(EVENTS, first), (ALL, first), (ALL, second)])


async def test_events_of_entities_without_cdc_are_not_published(bayeux: BayeuxSession) -> None:
    """The bus drops changes of entities that are not CDC-enabled (e.g. Account)."""
    await bayeux.open(ALL, -1)
    bayeux.org.bus.publish([change_event("CREATE", entity="Account"), change_event("CREATE")])
    messages = events_of(await bayeux.connect())
    assert [m["data"]["payload"]["ChangeEventHeader"]["entityName"] for m in messages] == ["Event"]


async def test_replay_ids_increase_but_are_not_contiguous(bayeux: BayeuxSession) -> None:
    """Replay ids grow strictly, in steps of 1..7 that are not all 1 (clients must not do arithmetic)."""
    await bayeux.open(EVENTS, -1)
    bayeux.org.bus.publish([change_event("CREATE") for _ in range(60)])
    ids = replay_ids(await bayeux.connect())
    steps = [b - a for a, b in itertools.pairwise(ids)]
    assert len(ids) == 60
    assert all(1 <= step <= 7 for step in steps)
    assert any(step > 1 for step in steps)


async def test_gap_event_has_header_only_with_sequence_number_1(bayeux: BayeuxSession) -> None:
    """An injected GAP_UPDATE carries its record ids and header, no field values, sequenceNumber 1."""
    await bayeux.open(EVENTS, -1)
    bayeux.org.bus.publish_gap("Event", ["00U5e00000AbCdEEAV", "00U5e00000AbCdFEAV"], "GAP_UPDATE")
    [message] = events_of(await bayeux.connect())
    payload = message["data"]["payload"]
    assert list(payload) == ["ChangeEventHeader"]
    header = payload["ChangeEventHeader"]
    assert header["changeType"] == "GAP_UPDATE"
    assert header["recordIds"] == ["00U5e00000AbCdEEAV", "00U5e00000AbCdFEAV"]
    assert header["sequenceNumber"] == 1
    assert isinstance(header["commitTimestamp"], int)


async def test_overflow_event_names_only_the_entity(bayeux: BayeuxSession) -> None:
    """GAP_OVERFLOW names the entity with empty recordIds, whatever ids the injector passed."""
    await bayeux.open(MOGLI, -1)
    bayeux.org.bus.publish_gap("Mogli_Event__c", ["a0X5e000001AbCdEAF"], "GAP_OVERFLOW")
    [message] = events_of(await bayeux.connect())
    header = message["data"]["payload"]["ChangeEventHeader"]
    assert (header["entityName"], header["changeType"], header["recordIds"]) == (
        "Mogli_Event__c",
        "GAP_OVERFLOW",
        [],
    )
    assert list(message["data"]["payload"]) == ["ChangeEventHeader"]


# Replay


async def test_replay_minus_one_delivers_only_new_events(bayeux: BayeuxSession) -> None:
    """-1: events published before the subscribe are not delivered; later ones are."""
    bayeux.org.bus.publish([change_event("CREATE")])
    await bayeux.open(EVENTS, -1)
    bayeux.org.bus.publish([change_event("UPDATE")])
    messages = events_of(await bayeux.connect())
    assert [m["data"]["payload"]["ChangeEventHeader"]["changeType"] for m in messages] == ["UPDATE"]


async def test_subscribe_without_replay_ext_means_new_events_only(bayeux: BayeuxSession) -> None:
    """No ext.replay on the subscribe behaves like -1."""
    bayeux.org.bus.publish([change_event("CREATE")])
    await bayeux.open(EVENTS)
    assert (await bayeux.subscribe(EVENTS, None))["successful"]
    bayeux.org.bus.publish([change_event("DELETE")])
    assert len(events_of(await bayeux.connect())) == 1


async def test_replay_minus_two_delivers_everything_retained_on_the_next_connect(
    bayeux: BayeuxSession,
) -> None:
    """-2: every retained event of the channel comes on the next connect, oldest first."""
    bayeux.org.bus.publish([change_event("CREATE") for _ in range(3)])
    await bayeux.open(EVENTS, -2)
    ids = replay_ids(await bayeux.connect())
    assert len(ids) == 3 and ids == sorted(ids)


async def test_replay_n_delivers_events_strictly_after_n(bayeux: BayeuxSession) -> None:
    """N: the events after replay id N, not N itself."""
    bayeux.org.bus.publish([change_event("CREATE") for _ in range(4)])
    await bayeux.open(EVENTS, -2)
    all_ids = replay_ids(await bayeux.connect())
    again = BayeuxSession(bayeux.http, bayeux.org)
    await again.open(EVENTS, all_ids[1])
    assert replay_ids(await again.connect()) == all_ids[2:]


async def test_replay_id_outside_retention_is_invalid(bayeux: BayeuxSession) -> None:
    """An id whose event was purged fails with the documented `400::The replayId {N} ...` text."""
    bayeux.org.bus.publish([change_event("CREATE")])
    await bayeux.open(EVENTS, -2)
    [old] = replay_ids(await bayeux.connect())
    bayeux.org.wall.advance(SETTINGS.retention_seconds + 1)
    bayeux.org.bus.publish([change_event("CREATE")])  # publishing purges what fell out of retention
    reply = await bayeux.subscribe(EVENTS, old)
    assert reply["successful"] is False
    assert reply["error"] == (
        f"400::The replayId {{{old}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )
    assert reply["subscription"] == EVENTS and "advice" in reply


async def test_replay_id_never_issued_is_invalid(bayeux: BayeuxSession) -> None:
    """An id the channel never carried is answered with the same invalid-replayId 400."""
    await bayeux.open()
    reply = await bayeux.subscribe(EVENTS, 123_456_789)
    assert reply["error"].startswith("400::The replayId {123456789} you provided was invalid.")


async def test_replay_map_keyed_by_another_channel_is_not_found(bayeux: BayeuxSession) -> None:
    """A replay map without an entry for the subscribed channel fails with the "wasn't found" 400."""
    await bayeux.open()
    message = bayeux.subscribe_message(EVENTS, {"/data/LeadChangeEvent": -1})
    _, [reply] = await bayeux.post([message])
    assert reply["successful"] is False
    assert reply["error"].startswith(
        "400::The replayId for channel {/data/EventChangeEvent} wasn't found using the provided "
        "replay ID map {{/data/LeadChangeEvent=-1}}"
    )


async def test_unsubscribe_stops_delivery(bayeux: BayeuxSession) -> None:
    """/meta/unsubscribe answers with the subscription and no later event is delivered on it."""
    await bayeux.open(EVENTS, -1)
    message = {
        "channel": "/meta/unsubscribe",
        "clientId": bayeux.client_id,
        "subscription": EVENTS,
        "id": bayeux.next_id(),
    }
    _, [reply] = await bayeux.post([message])
    assert reply["successful"] is True and reply["subscription"] == EVENTS
    bayeux.org.bus.publish([change_event("CREATE")])
    assert events_of(await bayeux.connect()) == []


# Allocations


async def test_concurrent_client_cap_denies_the_next_handshake(http: aiohttp.ClientSession) -> None:
    """Past max_concurrent_clients, a handshake fails `403::Organization concurrent user limit exceeded`."""
    async with running_org(StreamingSettings(long_poll_timeout_seconds=1.0, max_concurrent_clients=2)) as org:
        for _ in range(2):
            assert (await BayeuxSession(http, org).handshake())["successful"]
        reply = await BayeuxSession(http, org).handshake()
        assert reply["error"] == "403::Organization concurrent user limit exceeded"
        assert reply["advice"]["reconnect"] == "none"
        org.service.forget_clients()
        assert (await BayeuxSession(http, org).handshake())["successful"]


async def test_daily_delivery_allocation_stops_delivery_but_keeps_events(http: aiohttp.ClientSession) -> None:
    """Each delivered event counts; once used up, connect fails the documented 403, events stay replayable."""
    settings = StreamingSettings(long_poll_timeout_seconds=1.0, daily_delivered_events=3)
    async with running_org(settings) as org:
        bayeux = BayeuxSession(http, org)
        await bayeux.open(EVENTS, -1)
        org.bus.publish([change_event("CREATE") for _ in range(5)])
        assert len(events_of(await bayeux.connect())) == 3
        assert org.service.stats()["delivered_events"] == 3
        [reply] = await bayeux.connect()
        assert reply["successful"] is False
        assert reply["error"] == "403::Organization total events daily limit exceeded"
        assert reply["advice"] == {"reconnect": "none", "interval": 0}
        assert len(org.bus.channel_log(EVENTS) or []) == 5
        org.monotonic.advance(24 * 3600)  # a new allocation day
        fresh = BayeuxSession(http, org)
        await fresh.open(EVENTS, -2)
        replayed = replay_ids(await fresh.connect())
        assert replayed == [s.replay_id for s in (org.bus.channel_log(EVENTS) or []).after(0, 3)]

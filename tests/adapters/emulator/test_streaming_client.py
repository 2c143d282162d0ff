"""The real, unmodified aiosfstream-ng client against the emulator's Streaming API.

Only the authenticator is subclassed (to point at the local token endpoint). Per reference section 8:
clients are built inside the running loop, with `connection_timeout=0` (bug 1) and a persistent
MutableMapping replay storage (bug 4), and are always closed (bugs 2 and 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiosfstream_ng import Client, ReplayMarker, ReplayMarkerStoragePolicy, ReplayOption
from aiosfstream_ng.exceptions import ServerError
from streaming_support import USER_ID, LocalAuthenticator, StreamingOrg, change_event, running_org

from bridge.emulator.contracts import StreamingSettings

SETTINGS = StreamingSettings(
    long_poll_timeout_seconds=2.0, retention_seconds=3600.0, client_expiry_seconds=10.0
)
EVENTS = "/data/EventChangeEvent"
RECORD = "00U5e00000AbCdEEAV"
# A liveness bound for one receive(): far above a 2-second long poll, far below the test timeout.
RECEIVE_BOUND_SECONDS = 30


@pytest.fixture
async def org() -> AsyncIterator[StreamingOrg]:
    """A running streaming org with 2-second long polls."""
    async with running_org(SETTINGS) as running:
        yield running


@asynccontextmanager
async def open_client(
    org: StreamingOrg, storage: MutableMapping[str, ReplayMarker] | ReplayOption
) -> AsyncIterator[Client]:
    """An opened aiosfstream-ng client that is closed on the way out."""
    client = Client(
        LocalAuthenticator(org.token_url),
        replay=storage,
        replay_storage_policy=ReplayMarkerStoragePolicy.AUTOMATIC,
        connection_timeout=0,
    )
    await client.open()
    try:
        yield client
    finally:
        await client.close()


async def receive(client: Client) -> dict[str, Any]:
    """The next event message, bounded so a broken server fails the test instead of hanging it."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        return dict(await client.receive())


def header(message: dict[str, Any]) -> dict[str, Any]:
    """The ChangeEventHeader of an event message."""
    return dict(message["data"]["payload"]["ChangeEventHeader"])


async def test_receives_create_update_delete_undelete_with_header_fields(org: StreamingOrg) -> None:
    """A subscriber to /data/EventChangeEvent gets CREATE, UPDATE, DELETE, UNDELETE in order, with headers."""
    storage: dict[str, ReplayMarker] = {}
    async with open_client(org, storage) as client:
        await client.subscribe(EVENTS)
        created = {"Subject": "Intro call", "DurationInMinutes": 30, "OwnerId": USER_ID}
        org.bus.publish([change_event("CREATE", record_id=RECORD, fields=created)])
        changed = ("Subject", "LastModifiedDate")
        update = {"Subject": "Rescheduled", "LastModifiedDate": "2024-06-11T16:00:00.000Z"}
        org.bus.publish(
            [change_event("UPDATE", record_id=RECORD, fields=update, changed_fields=changed, client=None)]
        )
        org.bus.publish([change_event("DELETE", record_id=RECORD)])
        org.bus.publish([change_event("UNDELETE", record_id=RECORD, fields=created)])
        messages = [await receive(client) for _ in range(4)]

    headers = [header(m) for m in messages]
    assert [h["changeType"] for h in headers] == ["CREATE", "UPDATE", "DELETE", "UNDELETE"]
    assert all(h["recordIds"] == [RECORD] and h["entityName"] == "Event" for h in headers)
    assert all(h["commitUser"] == USER_ID and isinstance(h["commitTimestamp"], int) for h in headers)
    assert headers[0]["changeOrigin"] == "com/salesforce/api/rest/60.0;client=mogli-bridge"
    assert headers[1]["changeOrigin"] == "com/salesforce/api/rest/60.0"
    assert headers[1]["changedFields"] == ["Subject", "LastModifiedDate"]
    assert messages[0]["data"]["payload"]["Subject"] == "Intro call"
    assert messages[1]["data"]["payload"]["Subject"] == "Rescheduled"
    assert set(messages[2]["data"]["payload"]) == {"ChangeEventHeader"}
    assert storage[EVENTS].replay_id == messages[-1]["data"]["event"]["replayId"]


async def test_resumes_from_stored_replay_id_after_clients_are_forgotten(org: StreamingOrg) -> None:
    """After forget_clients() the client re-handshakes, re-subscribes with its stored id, and gets the event
    published while it was unknown."""
    storage: dict[str, ReplayMarker] = {}
    async with open_client(org, storage) as client:
        await client.subscribe(EVENTS)
        org.bus.publish([change_event("CREATE", record_id=RECORD)])
        first = await receive(client)
        assert storage[EVENTS].replay_id == first["data"]["event"]["replayId"]

        assert org.service.forget_clients() == 1
        # Published in the same tick: no live subscription exists, so only replay can deliver it.
        org.bus.publish([change_event("UPDATE", record_id=RECORD, fields={"Subject": "During the outage"})])
        missed = await receive(client)

        assert header(missed)["changeType"] == "UPDATE"
        assert missed["data"]["payload"]["Subject"] == "During the outage"
        assert storage[EVENTS].replay_id == missed["data"]["event"]["replayId"]
        assert org.service.stats()["streaming_clients"] == 1


async def test_replay_id_outside_retention_raises_server_error(org: StreamingOrg) -> None:
    """Subscribing with a stored replay id that was purged raises ServerError with the documented 400."""
    org.bus.publish([change_event("CREATE", record_id=RECORD)])
    retained = org.bus.channel_log(EVENTS)
    assert retained is not None
    [old] = retained.after(0, 1)
    org.wall.advance(SETTINGS.retention_seconds + 1)
    assert org.bus.purge() == 1
    storage = {EVENTS: ReplayMarker(date=str(old.event.commit_timestamp_ms), replay_id=old.replay_id)}

    async with open_client(org, storage) as client:
        with pytest.raises(ServerError) as failure:
            await client.subscribe(EVENTS)

    assert failure.value.error == (
        f"400::The replayId {{{old.replay_id}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )


async def test_replay_fallback_turns_a_purged_replay_id_into_new_events(org: StreamingOrg) -> None:
    """With replay_fallback=NEW_EVENTS, the 400 is retried as -1 and later events still arrive."""
    storage = {EVENTS: ReplayMarker(date="0", replay_id=999_999)}
    client = Client(
        LocalAuthenticator(org.token_url),
        replay=storage,
        replay_fallback=ReplayOption.NEW_EVENTS,
        connection_timeout=0,
    )
    await client.open()
    try:
        await client.subscribe(EVENTS)
        org.bus.publish([change_event("CREATE", record_id=RECORD)])
        message = await receive(client)
    finally:
        await client.close()
    assert header(message)["recordIds"] == [RECORD]


async def test_all_events_option_replays_everything_retained(org: StreamingOrg) -> None:
    """ReplayOption.ALL_EVENTS (-2) delivers the retained events published before the subscribe."""
    org.bus.publish([change_event("CREATE"), change_event("CREATE")])
    async with open_client(org, ReplayOption.ALL_EVENTS) as client:
        await client.subscribe(EVENTS)
        messages = [await receive(client) for _ in range(2)]
    ids = [m["data"]["event"]["replayId"] for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == 2


async def test_receives_an_injected_gap_event(org: StreamingOrg) -> None:
    """An injected GAP_UPDATE reaches the client with its record ids, header only, and is stored."""
    storage: dict[str, ReplayMarker] = {}
    async with open_client(org, storage) as client:
        await client.subscribe(EVENTS)
        org.bus.publish_gap("Event", [RECORD], "GAP_UPDATE")
        message = await receive(client)
    assert header(message)["changeType"] == "GAP_UPDATE"
    assert header(message)["recordIds"] == [RECORD]
    assert header(message)["sequenceNumber"] == 1
    assert set(message["data"]["payload"]) == {"ChangeEventHeader"}
    assert storage[EVENTS].replay_id == message["data"]["event"]["replayId"]


async def test_exhausted_delivery_allocation_ends_the_stream_with_server_error() -> None:
    """When the daily delivery allocation runs out, the client's stream closes with ServerError (no spin)."""
    settings = StreamingSettings(long_poll_timeout_seconds=2.0, daily_delivered_events=1)
    async with running_org(settings) as org, open_client(org, {}) as client:
        await client.subscribe(EVENTS)
        org.bus.publish([change_event("CREATE"), change_event("CREATE")])
        await receive(client)
        with pytest.raises(ServerError) as failure:
            await receive(client)
    assert failure.value.response is not None
    assert failure.value.response["error"] == "403::Organization total events daily limit exceeded"

"""aiosfstream-ng (unmodified; only the authenticator subclassed) against the whole emulator: change events
come from REST writes through the record store, recovery hooks come from the control API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aiosfstream_ng import Client, ReplayMarker, ReplayMarkerStoragePolicy
from aiosfstream_ng.exceptions import ServerError
from streaming_support import LocalAuthenticator

from bridge import sfid
from bridge.emulator.contracts import DmlContext

if TYPE_CHECKING:  # the fixtures' class lives in this directory's conftest (by fixture, not import)
    from conftest import EmulatorClient

EVENTS = "/data/EventChangeEvent"
BRIDGE_CALL = {"Sforce-Call-Options": "client=mogli-bridge"}
# A liveness bound for one receive(): events wake the long poll at once; this only stops a hang.
RECEIVE_BOUND_SECONDS = 30


@asynccontextmanager
async def open_client(
    emulator: EmulatorClient, storage: MutableMapping[str, ReplayMarker]
) -> AsyncIterator[Client]:
    """An opened aiosfstream-ng client on the emulator, closed on the way out."""
    client = Client(
        LocalAuthenticator(emulator.url + "/services/oauth2/token"),
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
    """The next event message, bounded."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        return dict(await client.receive())


def header(message: dict[str, Any]) -> dict[str, Any]:
    """The ChangeEventHeader of an event message."""
    return dict(message["data"]["payload"]["ChangeEventHeader"])


async def create_event(emulator: EmulatorClient, subject: str = "Intro call") -> str:
    """Create an Event through REST as the bridge would; answers its id."""
    body = {
        "Subject": subject,
        "StartDateTime": "2026-06-01T10:00:00Z",
        "EndDateTime": "2026-06-01T10:30:00Z",
    }
    reply = await emulator.rest("POST", "/sobjects/Event", json=body, headers=BRIDGE_CALL)
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


async def test_rest_create_update_delete_undelete_arrive_with_header_fields(emulator: EmulatorClient) -> None:
    """REST CREATE (bridge), UPDATE (a person), DELETE and an UNDELETE reach the subscriber in order."""
    storage: dict[str, ReplayMarker] = {}
    async with open_client(emulator, storage) as client:
        await client.subscribe(EVENTS)
        event_id = await create_event(emulator)
        patched = await emulator.rest("PATCH", f"/sobjects/Event/{event_id}", json={"Subject": "Moved"})
        assert patched.status == 204, patched.body
        deleted = await emulator.rest("DELETE", f"/sobjects/Event/{event_id}", headers=BRIDGE_CALL)
        assert deleted.status == 204, deleted.body
        user = emulator.store.integration_user_id
        with emulator.store.transaction(DmlContext(user_id=user, change_origin="")) as txn:
            txn.undelete(event_id)
        messages = [await receive(client) for _ in range(4)]

    headers = [header(m) for m in messages]
    assert [h["changeType"] for h in headers] == ["CREATE", "UPDATE", "DELETE", "UNDELETE"]
    assert all(sfid.same(h["recordIds"][0], event_id) and h["entityName"] == "Event" for h in headers)
    assert headers[0]["changeOrigin"].endswith(";client=mogli-bridge")
    assert "client=" not in headers[1]["changeOrigin"]
    assert "Subject" in headers[1]["changedFields"] and "LastModifiedDate" in headers[1]["changedFields"]
    assert messages[0]["data"]["payload"]["Subject"] == "Intro call"
    assert messages[1]["data"]["payload"]["Subject"] == "Moved"
    assert all(isinstance(h["commitTimestamp"], int) and h["commitUser"] for h in headers)
    assert storage[EVENTS].replay_id == messages[-1]["data"]["event"]["replayId"]


async def test_resumes_after_forget_clients_without_losing_the_change_in_between(
    emulator: EmulatorClient,
) -> None:
    """POST /__emulator/streaming/forget-clients, then a REST change: the client re-handshakes and gets it."""
    storage: dict[str, ReplayMarker] = {}
    async with open_client(emulator, storage) as client:
        await client.subscribe(EVENTS)
        event_id = await create_event(emulator)
        await receive(client)
        assert (await emulator.control("POST", "/streaming/forget-clients"))["forgotten"] == 1
        patched = await emulator.rest("PATCH", f"/sobjects/Event/{event_id}", json={"Subject": "In between"})
        assert patched.status == 204
        missed = await receive(client)
    assert header(missed)["changeType"] == "UPDATE"
    assert missed["data"]["payload"]["Subject"] == "In between"


async def test_purged_replay_id_is_the_documented_server_error(emulator: EmulatorClient) -> None:
    """After the control API purges events, subscribing from a stored id raises ServerError with the 400."""
    storage: dict[str, ReplayMarker] = {}
    async with open_client(emulator, storage) as client:
        await client.subscribe(EVENTS)
        await create_event(emulator)
        await receive(client)
    await emulator.control("POST", "/streaming/purge", json={"older_than_seconds": 0})
    async with open_client(emulator, storage) as client:
        try:
            await client.subscribe(EVENTS)
        except ServerError as failure:
            error = failure.error
        else:
            error = None
    assert error is not None
    assert error.startswith(f"400::The replayId {{{storage[EVENTS].replay_id}}} you provided was invalid.")


async def test_gap_injected_through_the_control_api_arrives(emulator: EmulatorClient) -> None:
    """POST /__emulator/gap publishes a header-only gap event that the subscriber receives."""
    async with open_client(emulator, {}) as client:
        await client.subscribe(EVENTS)
        event_id = await create_event(emulator)
        await receive(client)
        body = {"entity": "Event", "record_ids": [event_id], "change_type": "GAP_UPDATE"}
        await emulator.control("POST", "/gap", json=body)
        gap = await receive(client)
    assert header(gap)["changeType"] == "GAP_UPDATE"
    assert header(gap)["recordIds"] == [event_id]
    assert set(gap["data"]["payload"]) == {"ChangeEventHeader"}

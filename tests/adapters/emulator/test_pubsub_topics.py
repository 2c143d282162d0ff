"""Topics of the emulator's Pub/Sub API are the CometD channels of the same bus: the all-entities channel
carries each entity's events under that entity's schema, and a filtered custom channel only what passes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from tests.adapters.emulator.pubsub_support import (
    PubSubOrg,
    Requests,
    decode,
    events_until,
    fetch,
    next_response,
    pubsub_emulator,
)

CHANNEL = "Bridge__chn"


@pytest.fixture
async def org(tmp_path: Path) -> AsyncIterator[PubSubOrg]:
    """The emulator process serving plaintext gRPC, with a logged-in REST side."""
    async with pubsub_emulator(tmp_path) as running:
        yield running


async def created(org: PubSubOrg, sobject: str, body: dict[str, Any]) -> str:
    """Create a record through REST; answers its id."""
    status, reply = await org.rest("POST", f"/sobjects/{sobject}", body)
    assert status == 201, reply
    return str(reply["id"])


async def test_all_change_events_carry_each_entity_under_its_own_schema(org: PubSubOrg) -> None:
    """`/data/ChangeEvents` delivers an Event and a Lead change, each with its entity's schema id."""
    await org.create_event("Mixed")
    await created(org, "Lead", {"LastName": "Mixed", "Company": "Mixed Co"})
    requests = Requests()
    requests.send(fetch("/data/ChangeEvents", preset=pb.EARLIEST, num=10))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        events = await events_until(call, 2)
        entities = [(await decode(stub, org, e))["ChangeEventHeader"]["entityName"] for e in events]
        call.cancel()
    assert entities == ["Event", "Lead"]
    assert events[0].event.schema_id != events[1].event.schema_id


async def test_a_filtered_custom_channel_delivers_only_what_passes(org: PubSubOrg) -> None:
    """A custom channel whose Contact member filters on Title delivers the matching Contact only."""
    channel = {"FullName": CHANNEL, "Metadata": {"channelType": "data", "label": "Bridge"}}
    status, body = await org.rest("POST", "/tooling/sobjects/PlatformEventChannel", channel)
    assert status == 201, body
    metadata = {
        "eventChannel": CHANNEL,
        "selectedEntity": "ContactChangeEvent",
        "filterExpression": "Title = 'VIP'",
    }
    member = {"FullName": "Bridge_chn_ContactChangeEvent", "Metadata": metadata}
    status, body = await org.rest("POST", "/tooling/sobjects/PlatformEventChannelMember", member)
    assert status == 201, body
    await created(org, "Contact", {"LastName": "Plain", "Title": "Clerk"})
    await created(org, "Contact", {"LastName": "Chosen", "Title": "VIP"})
    await org.control("POST", "/pubsub/faults", {"keepalive_seconds": 0.3})
    requests = Requests()
    requests.send(fetch(f"/data/{CHANNEL}", preset=pb.EARLIEST, num=10))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        [event] = await events_until(call, 1)
        after = await next_response(call)
        record = await decode(stub, org, event)
        call.cancel()
    assert record["Name"]["LastName"] == "Chosen"
    assert record["Title"] == "VIP"
    assert after.events == []


async def test_delete_and_gap_events_encode_with_their_change_types(org: PubSubOrg) -> None:
    """A DELETE and a GAP_UPDATE published by the org arrive in order, encoded under the entity's schema."""
    event_id = await org.create_event("Short lived")
    status, body = await org.rest("DELETE", f"/sobjects/Event/{event_id}")
    assert status == 204, body
    gap = {"entity": "Event", "record_ids": [event_id], "change_type": "GAP_UPDATE"}
    await org.control("POST", "/gap", gap)
    requests = Requests()
    requests.send(fetch(preset=pb.EARLIEST, num=10))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        events = await events_until(call, 3)
        headers = [(await decode(stub, org, e))["ChangeEventHeader"] for e in events]
        call.cancel()
    assert [h["changeType"] for h in headers] == ["CREATE", "DELETE", "GAP_UPDATE"]
    assert all(h["recordIds"] for h in headers)

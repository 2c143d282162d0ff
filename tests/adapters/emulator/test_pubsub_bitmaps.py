"""Change events over the emulator's Pub/Sub API carry changedFields, nulledFields and diffFields as the
documented bitmaps over the Avro schema's fields; a client decoding them gets back the changed field names."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import fastavro
import pytest

from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from tests.adapters.emulator.pubsub_support import (
    PubSubOrg,
    Requests,
    events_until,
    fetch,
    pubsub_emulator,
    wait_subscribed,
)


@pytest.fixture
async def org(tmp_path: Path) -> AsyncIterator[PubSubOrg]:
    """The emulator process serving plaintext gRPC, with a logged-in REST side."""
    async with pubsub_emulator(tmp_path) as running:
        yield running


def field_names(schema_json: str, bitmaps: Sequence[str]) -> list[str]:
    """Decode bitmap strings as a Pub/Sub client does: bit i of `0x..` is top-level field i, and
    `i-0x..` names subfields of the compound field at position i as `Parent.Child`."""
    fields = json.loads(schema_json)["fields"]
    names: list[str] = []
    for entry in bitmaps:
        if entry.startswith("0x"):
            bits = int(entry, 16)
            names += [f["name"] for i, f in enumerate(fields) if bits >> i & 1]
            continue
        index, hex_bits = entry.split("-")
        parent = fields[int(index)]
        record = next(t for t in parent["type"] if isinstance(t, dict))
        bits = int(hex_bits, 16)
        names += [f"{parent['name']}.{s['name']}" for i, s in enumerate(record["fields"]) if bits >> i & 1]
    return names


async def next_change(org: PubSubOrg, topic: str, change: Any) -> tuple[dict[str, Any], str]:
    """Subscribe to `topic` (LATEST), make the change, and answer the decoded record and its schema."""
    requests = Requests()
    requests.send(fetch(topic, num=1))
    async with org.stub() as stub:
        call = stub.Subscribe(requests, metadata=org.metadata())
        await wait_subscribed(org)
        await change()
        [event] = await events_until(call, 1)
        call.cancel()
        request = pb.SchemaRequest(schema_id=event.event.schema_id)
        info = await stub.GetSchema(request, metadata=org.metadata())
    schema = fastavro.parse_schema(json.loads(info.schema_json))
    record = fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema, schema)
    return dict(record), info.schema_json  # type: ignore[arg-type]


async def test_changed_fields_decode_to_the_fields_the_update_carries(org: PubSubOrg) -> None:
    """An UPDATE of Subject and Location: changedFields names exactly the fields with values in the event."""
    event_id = await org.create_event("Before")

    async def update() -> None:
        status, body = await org.rest(
            "PATCH", f"/sobjects/Event/{event_id}", {"Subject": "After", "Location": "Room 4"}
        )
        assert status == 204, body

    record, schema_json = await next_change(org, "/data/EventChangeEvent", update)
    header = record["ChangeEventHeader"]
    changed = field_names(schema_json, header["changedFields"])
    carried = [name for name, value in record.items() if name != "ChangeEventHeader" and value is not None]
    assert header["changedFields"][0].startswith("0x")
    assert {"Subject", "Location"} <= set(changed)
    assert sorted(changed) == sorted(carried)
    assert (record["Subject"], record["Location"]) == ("After", "Room 4")
    assert header["nulledFields"] == [] and header["diffFields"] == []


async def test_nulled_fields_name_a_field_set_to_null(org: PubSubOrg) -> None:
    """Clearing Location on an UPDATE: nulledFields decodes to Location alone."""
    event_id = await org.create_event("Has a room")
    await org.rest("PATCH", f"/sobjects/Event/{event_id}", {"Location": "Room 9"})

    async def clear() -> None:
        status, body = await org.rest("PATCH", f"/sobjects/Event/{event_id}", {"Location": None})
        assert status == 204, body

    record, schema_json = await next_change(org, "/data/EventChangeEvent", clear)
    assert field_names(schema_json, record["ChangeEventHeader"]["nulledFields"]) == ["Location"]


async def test_a_compound_name_part_comes_as_a_parent_child_entry(org: PubSubOrg) -> None:
    """A Lead's LastName change is a `i-0x..` entry naming Name.LastName, its value inside the Name record."""
    status, body = await org.rest(
        "POST", "/sobjects/Lead", {"LastName": "Prospect", "Company": "Prospect Co"}
    )
    assert status == 201, body
    lead_id = body["id"]

    async def rename() -> None:
        status, reply = await org.rest("PATCH", f"/sobjects/Lead/{lead_id}", {"LastName": "Customer"})
        assert status == 204, reply

    record, schema_json = await next_change(org, "/data/LeadChangeEvent", rename)
    bitmaps = record["ChangeEventHeader"]["changedFields"]
    assert any("-0x" in entry for entry in bitmaps)
    assert set(field_names(schema_json, bitmaps)) == {"LastModifiedDate", "Name.LastName"}
    assert record["Name"]["LastName"] == "Customer"

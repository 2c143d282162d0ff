"""Decoding Pub/Sub API change events: bitmap fields into names, Avro payloads into the CometD change, replay
ids into ints."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from bridge.config import SalesforceObjectNames
from bridge.records.inbound import ChangeEntity, ChangeType, Field
from bridge.salesforce.avro_events import (
    EventSchema,
    SchemaField,
    UndecodableEvent,
    bitmap_names,
    decode_event,
)
from bridge.salesforce.changes import decode_change
from bridge.salesforce.pubsub_positions import replay_bytes, replay_number

NAMES = SalesforceObjectNames()
EVENT_ID = "00U5e00000AbCdEEAV"
WHO_ID = "0035e00000QrStUAAV"
OWNER_ID = "0055e00000XyZaBAAV"
COMMIT_MS = 1718121600000
START_MS = 1718294400000  # 2024-06-13T16:00:00Z


def _nullable(kind: Any, doc: str = "") -> dict[str, Any]:
    field: dict[str, Any] = {"type": ["null", kind], "default": None}
    if doc:
        field["doc"] = doc
    return field


HEADER_SCHEMA = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {"name": "changeType", "type": "string"},
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}
ADDRESS = {
    "type": "record",
    "name": "Address",
    "fields": [{"name": n, **_nullable("string")} for n in ("Street", "City", "PostalCode")],
}
# Field positions: 0 header, 1 OwnerId, 2 WhoId, 3 WhatId, 4 StartDateTime, 5 EndDateTime, 6 Subject,
# 7 Booking_Id__c, 8 Location__c (compound), 9 ActivityDate (a date, not a datetime), 10 Sequence__c (a
# long that is no datetime).
EVENT_SCHEMA = {
    "type": "record",
    "name": "EventChangeEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER_SCHEMA},
        {"name": "OwnerId", **_nullable("string")},
        {"name": "WhoId", **_nullable("string")},
        {"name": "WhatId", **_nullable("string")},
        {"name": "StartDateTime", **_nullable("long")},
        {"name": "EndDateTime", **_nullable({"type": "long", "logicalType": "timestamp-millis"})},
        {"name": "Subject", **_nullable("string")},
        {"name": NAMES.booking_external_id_field, **_nullable("string")},
        {"name": "Location__c", **_nullable(ADDRESS)},
        {"name": "ActivityDate", **_nullable("int", "Data:Date")},
        {"name": "Sequence__c", **_nullable("long", "Data:Long")},
    ],
}
SCHEMA = EventSchema.from_json("s-1", json.dumps(EVENT_SCHEMA))
FIELDS = SCHEMA.fields


def _bitmap(*positions: int) -> str:
    return hex(sum(1 << p for p in positions))


def _header(change_type: str, **bitmaps: list[str]) -> dict[str, Any]:
    return {
        "entityName": "Event",
        "recordIds": [EVENT_ID[:15]],
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/60.0",
        "transactionKey": "t-1",
        "sequenceNumber": 1,
        "commitTimestamp": COMMIT_MS,
        "commitNumber": 7,
        "commitUser": OWNER_ID,
        "nulledFields": bitmaps.get("nulled", []),
        "diffFields": [],
        "changedFields": bitmaps.get("changed", []),
    }


def _payload(header: dict[str, Any], **values: Any) -> bytes:
    """An Avro payload as the Pub/Sub API sends it: every field present, unset ones null."""
    record: dict[str, Any] = {f["name"]: None for f in EVENT_SCHEMA["fields"]}
    record.update(ChangeEventHeader=header, **values)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(EVENT_SCHEMA), record)
    return out.getvalue()


def _cometd(change_type: str, **body: Any) -> dict[str, Any]:
    """The same change as the Streaming API delivers it (only changed fields; datetimes as text)."""
    header = {k: v for k, v in _header(change_type).items() if k not in ("nulledFields", "diffFields")}
    return {
        "channel": "/data/EventChangeEvent",
        "data": {
            "schema": "s-1",
            "payload": {"ChangeEventHeader": header, **body},
            "event": {"replayId": 42},
        },
    }


def _decode(payload: bytes) -> Any:
    return decode_event(SCHEMA, payload, channel="/data/EventChangeEvent", replay_id=42, names=NAMES)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], ()),
        ([_bitmap(1)], ("OwnerId",)),
        ([_bitmap(2, 4, 7)], ("WhoId", "StartDateTime", NAMES.booking_external_id_field)),
        (["0x0000000000000006"], ("OwnerId", "WhoId")),  # leading zeros change nothing
        (["0X1"], ("ChangeEventHeader",)),
        ([_bitmap(6), "8-0x05"], ("Subject", "Location__c.Street", "Location__c.PostalCode")),
        (["8-0x2"], ("Location__c.City",)),
    ],
)
def test_bitmaps_name_the_fields_at_their_set_bits(entries: list[str], expected: tuple[str, ...]) -> None:
    """Bit i of the first bitmap is the schema's i-th field; `N-0x..` names parts of compound field N."""
    assert bitmap_names(FIELDS, entries) == expected


def test_a_bitmap_wider_than_the_schema_is_refused() -> None:
    """A bit beyond the last field means the schema is not the one the event was written with."""
    with pytest.raises(UndecodableEvent, match="names field 11 of 11"):
        bitmap_names(FIELDS, [_bitmap(11)])


@pytest.mark.parametrize("entry", ["650004E0", "0xZZ", "x-0x1", "6-0x1", "8-0x8"])
def test_malformed_bitmaps_are_refused(entry: str) -> None:
    """Not hexadecimal, no parent position, a parent that is not compound, a part beyond the compound."""
    with pytest.raises(UndecodableEvent):
        bitmap_names(FIELDS, [entry])


def test_compound_fields_are_known_from_a_named_reference() -> None:
    """A compound field whose record type is defined earlier and referred to by name still has its parts."""
    schema = {
        "type": "record",
        "name": "X",
        "fields": [
            {"name": "ChangeEventHeader", "type": HEADER_SCHEMA},
            {"name": "BillingAddress", **_nullable(ADDRESS)},
            {"name": "ShippingAddress", **_nullable("Address")},
        ],
    }
    fields = EventSchema.from_json("s-2", json.dumps(schema)).fields
    assert bitmap_names(fields, ["2-0x4"]) == ("ShippingAddress.PostalCode",)
    assert fields[2].children == (SchemaField("Street"), SchemaField("City"), SchemaField("PostalCode"))


def test_update_decodes_to_the_same_change_as_over_cometd() -> None:
    """An UPDATE's unchanged fields are null over Pub/Sub: only the changed ones (a nulled one included)
    are present, exactly as CometD delivers them."""
    header = _header("UPDATE", changed=[_bitmap(2, 4)], nulled=[_bitmap(2)])
    change = _decode(_payload(header, StartDateTime=START_MS))
    expected = decode_change(_cometd("UPDATE", WhoId=None, StartDateTime="2024-06-13T16:00:00.000Z"), NAMES)
    assert change == expected
    assert change is not None and change.present == frozenset({Field.WHO, Field.START})
    assert change.start_at == datetime(2024, 6, 13, 16, 0, tzinfo=UTC) and change.who_id is None


def test_create_carries_the_fields_with_values() -> None:
    """A CREATE over Pub/Sub carries every field; CometD leaves out empty ones, and so does the decoder."""
    values = {
        "OwnerId": OWNER_ID,
        "WhoId": WHO_ID,
        "StartDateTime": START_MS,
        "EndDateTime": datetime.fromtimestamp((START_MS + 3_600_000) / 1000, UTC),
        NAMES.booking_external_id_field: "booking-1",
    }
    change = _decode(_payload(_header("CREATE", changed=[_bitmap(1, 2, 4, 5, 7)]), **values))
    expected = decode_change(
        _cometd(
            "CREATE",
            OwnerId=OWNER_ID,
            WhoId=WHO_ID,
            StartDateTime="2024-06-13T16:00:00.000Z",
            EndDateTime="2024-06-13T17:00:00.000Z",
            **{NAMES.booking_external_id_field: "booking-1"},
        ),
        NAMES,
    )
    assert change == expected
    assert change is not None and Field.WHAT not in change.present
    assert change.external_id == "booking-1" and change.end_at == datetime(2024, 6, 13, 17, tzinfo=UTC)


def test_delete_carries_no_values() -> None:
    """A DELETE's body is all null over Pub/Sub: nothing is present."""
    change = _decode(_payload(_header("DELETE")))
    assert change == decode_change(_cometd("DELETE"), NAMES)
    assert change is not None and change.change_type is ChangeType.DELETE and change.present == frozenset()
    assert change.entity is ChangeEntity.EVENT and change.record_ids == (EVENT_ID,)


def test_an_enriched_field_is_present_without_being_changed() -> None:
    """A filtered channel enriches an UPDATE with fields it did not change: they have values and count."""
    change = _decode(
        _payload(_header("UPDATE", changed=[_bitmap(4)]), StartDateTime=START_MS, OwnerId=OWNER_ID)
    )
    assert change is not None and change.present == frozenset({Field.START, Field.OWNER})
    assert change.owner_id == OWNER_ID


def test_a_payload_that_does_not_fit_its_schema_is_refused() -> None:
    """Truncated Avro is an undecodable event, not a crash of the stream."""
    with pytest.raises(UndecodableEvent, match="s-1"):
        _decode(_payload(_header("DELETE"))[:5])


def test_a_schema_that_is_not_a_record_is_refused() -> None:
    """GetSchema answering something other than a record schema is undecodable."""
    with pytest.raises(UndecodableEvent, match="s-3"):
        EventSchema.from_json("s-3", '"string"')


@pytest.mark.parametrize(
    ("position", "is_datetime"),
    [(4, True), (5, True), (9, False), (10, False), (1, False)],
)
def test_datetimes_are_known_from_the_schema(position: int, is_datetime: bool) -> None:
    """A plain long (as the emulator and Salesforce write DateTime), a timestamp logical type and a long
    documented `Data:DateTime` are datetimes; a long documented as another type, an int and text are not."""
    assert FIELDS[position].is_datetime is is_datetime
    documented = {
        "type": "record",
        "name": "D",
        "fields": [{"name": "At", **_nullable("long", "Data:DateTime")}],
    }
    assert EventSchema.from_json("s-4", json.dumps(documented)).fields[0].is_datetime


def test_replay_numbers_round_trip_and_stay_apart_from_cometd_ids() -> None:
    """Any bytes (leading zeros, empty) come back unchanged, and every number is above a CometD id."""
    for raw in (b"", b"\x00", b"\x00\x00\x00\x00\x00\x00\x00\x07", b"\xff" * 16):
        assert replay_bytes(replay_number(raw)) == raw
        assert replay_number(raw) > 2**63 - 1
    assert replay_bytes(18502) is None and replay_bytes(-1) is None

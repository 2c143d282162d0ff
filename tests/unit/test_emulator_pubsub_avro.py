"""The emulator's Avro change-event schemas: field layout, the documented bitmap strings, and payloads that
read back under the schema's own JSON."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from bridge.emulator.contracts import ChangeEvent
from bridge.emulator.pubsub_avro import HEADER, EntitySchema, entity_schema
from bridge.emulator.schema import Schema, standard_objects

SCHEMA = Schema.build(standard_objects())


def schema_of(entity: str) -> EntitySchema:
    """The change-event schema of a standard object."""
    obj = SCHEMA.get(entity)
    assert obj is not None
    return entity_schema(obj)


def update(entity: str, fields: dict[str, object], changed: tuple[str, ...]) -> ChangeEvent:
    """An UPDATE event of one record."""
    return ChangeEvent(
        entity=entity,
        change_type="UPDATE",
        record_ids=("00U000000000001AAA",),
        fields=fields,
        changed_fields=changed,
        change_origin="",
        commit_user="005000000000001AAA",
        transaction_key="tx",
        sequence_number=1,
        commit_timestamp_ms=1_700_000_000_000,
    )


def test_the_header_comes_first_and_id_is_left_out() -> None:
    """Field 0 is ChangeEventHeader; the record id travels only in the header's recordIds."""
    event = schema_of("Event")
    assert event.top_fields[0] == HEADER
    assert "Id" not in event.top_fields
    assert "Subject" in event.top_fields


def test_person_names_are_one_compound_record() -> None:
    """A Lead's first and last name sit in the compound Name record, not at the top level."""
    lead = schema_of("Lead")
    assert "Name" in lead.top_fields
    assert {"FirstName", "LastName"} <= set(lead.compounds["Name"])
    assert "LastName" not in lead.top_fields


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ((), []),
        (("ChangeEventHeader",), ["0x01"]),
        (("NotAField",), []),
    ],
)
def test_bitmap_edges(names: tuple[str, ...], expected: list[str]) -> None:
    """No field is an empty list; bit 0 is the header; a name outside the schema sets no bit."""
    assert schema_of("Event").bitmap(names) == expected


def test_bitmap_sets_the_bit_at_each_field_position() -> None:
    """Each top-level field sets bit i for its position i; the hex has an even number of digits."""
    event = schema_of("Event")
    names = ("Subject", "Location")
    [top] = event.bitmap(names)
    bits = int(top, 16)
    assert bits == sum(1 << event.top_fields.index(n) for n in names)
    assert len(top[2:]) % 2 == 0


def test_a_compound_part_is_a_parent_child_entry() -> None:
    """LastName becomes `i-0x..` with i the position of Name and the bit of LastName inside it, after the
    top-level bitmap, which always comes first (here with no bit set: Name itself sets none)."""
    lead = schema_of("Lead")
    entries = lead.bitmap(("Name", "LastName"))
    index = lead.top_fields.index("Name")
    bit = 1 << lead.compounds["Name"].index("LastName")
    assert entries == ["0x00", f"{index}-0x{bit:02X}"]


def test_a_payload_reads_back_under_the_schema_json() -> None:
    """An UPDATE encodes and reads back with its schema JSON: values, datetimes as epoch ms, and bitmaps."""
    event = schema_of("Event")
    fields = {"Subject": "Moved", "Location": None, "StartDateTime": "2026-06-01T10:00:00.000Z"}
    payload = event.encode(update("Event", fields, ("Subject", "Location", "StartDateTime")))
    parsed = fastavro.parse_schema(json.loads(event.schema_json))
    record = fastavro.schemaless_reader(io.BytesIO(payload), parsed, parsed)
    assert isinstance(record, dict)
    assert record["Subject"] == "Moved"
    assert record["StartDateTime"] == 1_780_308_000_000
    assert record[HEADER]["nulledFields"] == event.bitmap(["Location"])
    assert record[HEADER]["changedFields"] == event.bitmap(["Subject", "Location", "StartDateTime"])

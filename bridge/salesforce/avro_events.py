"""Change events over the Pub/Sub API: Avro payloads read into the message shape `changes.py` decodes.

Raw Avro stops here. The Pub/Sub API delivers a change event as Avro binary written with a schema fetched by
id; unlike CometD it carries every field of the record (unchanged and empty ones as null), datetimes as epoch
milliseconds, and `changedFields` / `nulledFields` / `diffFields` as bitmaps over the schema's field list
(Pub/Sub API guide, "Event Deserialization Considerations"): the first entry, `0x...`, has bit i set for the
schema's i-th top-level field; an entry `N-0x...` is a bitmap over the fields of the compound field at
position N, named `Parent.Child`. `cometd_message` rebuilds what the Streaming API would have delivered for
the same change (the body holds only what CometD would send), so that one decoder, `changes.decode_change`,
reads both transports.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fastavro

from bridge.config import SalesforceObjectNames
from bridge.records.inbound import SalesforceChange
from bridge.salesforce.changes import decode_change

HEADER = "ChangeEventHeader"
BITMAP_FIELDS = ("changedFields", "nulledFields", "diffFields")
_DATETIME_LOGICAL = {"timestamp-millis", "timestamp-micros"}


class UndecodableEvent(ValueError):
    """A payload or bitmap that does not fit its schema."""


@dataclass(frozen=True, slots=True)
class SchemaField:
    """One top-level field of an event schema: its name, whether it holds a datetime, and, for a compound
    field, its subfields in schema order."""

    name: str
    is_datetime: bool = False
    children: tuple[SchemaField, ...] = ()


@dataclass(frozen=True, slots=True)
class EventSchema:
    """A writer schema fetched by id: parsed for fastavro, and its field list for the bitmaps."""

    schema_id: str
    parsed: Any
    fields: tuple[SchemaField, ...]

    @classmethod
    def from_json(cls, schema_id: str, schema_json: str) -> EventSchema:
        """Parse `SchemaInfo.schema_json`; UndecodableEvent when it is not an Avro record schema."""
        try:
            raw = json.loads(schema_json)
            parsed = fastavro.parse_schema(raw)
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise UndecodableEvent(f"schema {schema_id} is not valid Avro: {exc}") from exc
        if not isinstance(raw, Mapping) or raw.get("type") != "record":
            raise UndecodableEvent(f"schema {schema_id} is not a record schema")
        named: dict[str, Mapping[str, Any]] = {}
        _collect_named(raw, named)
        return cls(schema_id, parsed, _fields_of(raw, named))

    def read(self, payload: bytes) -> dict[str, Any]:
        """The payload as a dict (schemaless: the writer schema comes from GetSchema, not the payload)."""
        try:
            record = fastavro.schemaless_reader(io.BytesIO(payload), self.parsed, None)
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise UndecodableEvent(f"payload does not fit schema {self.schema_id}: {exc}") from exc
        if not isinstance(record, dict):
            raise UndecodableEvent(f"payload of schema {self.schema_id} is not a record")
        return record


def _collect_named(node: Any, named: dict[str, Mapping[str, Any]]) -> None:
    """Every named record in a schema, by short and full name (fields may refer to one by name)."""
    if isinstance(node, list):
        for item in node:
            _collect_named(item, named)
    elif isinstance(node, Mapping):
        if node.get("type") == "record" and isinstance(node.get("name"), str):
            name = str(node["name"])
            namespace = node.get("namespace")
            named[name] = node
            if isinstance(namespace, str) and namespace:
                named[f"{namespace}.{name}"] = node
        for value in node.values():
            if isinstance(value, (list, Mapping)):
                _collect_named(value, named)


def _branches(field_type: Any, named: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """A field type without its null branch, named records resolved."""
    options = field_type if isinstance(field_type, list) else [field_type]
    return [named.get(o, o) if isinstance(o, str) else o for o in options if o != "null"]


def _is_datetime(branch: Any, field: Mapping[str, Any]) -> bool:
    if isinstance(branch, Mapping):
        return branch.get("logicalType") in _DATETIME_LOGICAL
    # Salesforce writes DateTime fields as epoch-millisecond longs (Date is an int of days; numbers are int or
    # double), sometimes naming the Salesforce type in `doc` ("Data:DateTime"): a long is a datetime unless
    # its doc names another type.
    doc = str(field.get("doc") or "")
    return branch == "long" and (":" not in doc or doc.endswith(":DateTime"))


def _fields_of(record: Mapping[str, Any], named: Mapping[str, Mapping[str, Any]]) -> tuple[SchemaField, ...]:
    out = []
    for field in record.get("fields", ()):
        branches = _branches(field.get("type"), named)
        nested = next((b for b in branches if isinstance(b, Mapping) and b.get("type") == "record"), None)
        children = _fields_of(nested, named) if nested is not None and field["name"] != HEADER else ()
        datetime_ = any(_is_datetime(b, field) for b in branches)
        out.append(SchemaField(str(field["name"]), datetime_, children))
    return tuple(out)


def _bits(hex_text: str) -> list[int]:
    """Positions of the set bits of `0x...`, lowest first (bit i stands for the i-th field)."""
    text = hex_text.strip()
    if not text.lower().startswith("0x"):
        raise UndecodableEvent(f"bitmap {hex_text!r} is not hexadecimal")
    try:
        value = int(text[2:], 16)
    except ValueError as exc:
        raise UndecodableEvent(f"bitmap {hex_text!r} is not hexadecimal") from exc
    return [i for i in range(value.bit_length()) if value >> i & 1]


def _field_at(fields: Sequence[SchemaField], position: int, entry: str) -> SchemaField:
    if position >= len(fields):
        raise UndecodableEvent(f"bitmap {entry!r} names field {position} of {len(fields)}")
    return fields[position]


def bitmap_names(fields: Sequence[SchemaField], entries: Sequence[str]) -> tuple[str, ...]:
    """The field names a bitmap field stands for, in schema order; compound parts as `Parent.Child`."""
    names: list[str] = []
    for entry in entries:
        parent_text, dash, bitmap = entry.partition("-")
        if not dash:
            names += [_field_at(fields, i, entry).name for i in _bits(entry)]
            continue
        try:
            parent = _field_at(fields, int(parent_text), entry)
        except ValueError as exc:
            raise UndecodableEvent(f"bitmap {entry!r} has no parent position") from exc
        if not parent.children:
            raise UndecodableEvent(f"bitmap {entry!r} points at {parent.name}, which is not compound")
        names += [f"{parent.name}.{_field_at(parent.children, i, entry).name}" for i in _bits(bitmap)]
    return tuple(names)


def _iso(value: Any) -> Any:
    """A datetime value as the Streaming API writes it (`2024-06-12T15:00:00.000Z`)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int):
        moment = datetime.fromtimestamp(value / 1000, UTC)
    else:
        return value
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(
    record: Mapping[str, Any], fields: Sequence[SchemaField], prefix: str, kept: frozenset[str]
) -> dict[str, Any]:
    """The fields CometD would carry: those with a value, and those the header names as changed (a field
    set to null is changed with no value). Unchanged fields are null over Pub/Sub; enriched ones are not."""
    body: dict[str, Any] = {}
    for field in fields:
        value, path = record.get(field.name), f"{prefix}{field.name}"
        if field.children and isinstance(value, Mapping):
            nested = _body(value, field.children, f"{path}.", kept)
            if nested or path in kept:
                body[field.name] = nested
        elif value is not None or path in kept:
            body[field.name] = _iso(value) if field.is_datetime else value
    return body


def cometd_message(
    schema: EventSchema, record: Mapping[str, Any], *, channel: str, replay_id: int
) -> dict[str, Any]:
    """The CometD message the Streaming API would deliver for this decoded Pub/Sub event."""
    header = record.get(HEADER)
    if not isinstance(header, Mapping):
        raise UndecodableEvent(f"schema {schema.schema_id} has no {HEADER}")
    body_fields = tuple(f for f in schema.fields if f.name != HEADER)
    decoded = {name: bitmap_names(schema.fields, header.get(name) or ()) for name in BITMAP_FIELDS}
    changed = frozenset(decoded["changedFields"]) | frozenset(decoded["nulledFields"])
    kept = changed if header.get("changeType") == "UPDATE" else frozenset()
    return {
        "channel": channel,
        "data": {
            "schema": schema.schema_id,
            "payload": {HEADER: {**header, **decoded}, **_body(record, body_fields, "", kept)},
            "event": {"replayId": replay_id},
        },
    }


def decode_event(
    schema: EventSchema,
    payload: bytes,
    *,
    channel: str,
    replay_id: int,
    names: SalesforceObjectNames,
) -> SalesforceChange | None:
    """One Pub/Sub change event as the same change its CometD delivery decodes to; None when it is not a
    readable change event (as `decode_change`); UndecodableEvent when the payload does not fit its schema."""
    record = schema.read(payload)
    return decode_change(cometd_message(schema, record, channel=channel, replay_id=replay_id), names)

"""Avro schemas and payloads of change events for the emulator's Pub/Sub API.

One schema per entity, built from the org's object definition: a `ChangeEventHeader` record first, then
every field of the object except `Id` (the record ids travel in the header) as a union with null. First and
last name become the compound `Name` record, as Salesforce models person names. The three field lists of
the header (`changedFields`, `nulledFields`, `diffFields`) are bitmaps as documented: the first string is
a hex bitmap over the schema's top-level fields (bit i = field i), and a compound field's subfields come
as `"i-0xBITS"` with i the compound's top-level position. Datetimes are epoch milliseconds (long), dates
days since the epoch (int) [mem, an emulator assumption].
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro

from bridge.emulator.contracts import ChangeEvent
from bridge.emulator.schema import FieldDef, ObjectDef, Schema

NAMESPACE = "com.sforce.eventbus"
HEADER = "ChangeEventHeader"
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
)
_NAME_PARTS = ("Salutation", "FirstName", "LastName")
_EPOCH_DAY = dt.date(1970, 1, 1)
_DOCUMENTED_TYPES = {"datetime": "DateTime", "date": "Date"}


@dataclass(frozen=True, slots=True)
class EntitySchema:
    """The Avro schema of one entity's change events and how the org's fields sit in it."""

    entity: str
    schema_id: str
    schema_json: str
    parsed: Any
    top_fields: tuple[str, ...]  # Avro top-level field names; index 0 is the header
    compounds: Mapping[str, tuple[str, ...]]  # compound field -> its subfields, in schema order
    types: Mapping[str, str]  # org field name -> the emulator's field type

    def encode(self, event: ChangeEvent) -> bytes:
        """The event's Avro binary payload under this schema."""
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self.parsed, self._record(event))
        return buffer.getvalue()

    def bitmap(self, names: Iterable[str]) -> list[str]:
        """Field names as the documented bitmap strings (an empty list for no fields)."""
        top, nested = 0, dict[int, int]()
        for name in names:
            parent = self._compound_of(name)
            if name in self.compounds:
                continue  # a compound is named by the "i-0x.." entries of its changed parts alone
            if parent is None and name in self.top_fields:
                top |= 1 << self.top_fields.index(name)
            elif parent is not None:
                index = self.top_fields.index(parent)
                nested[index] = nested.get(index, 0) | 1 << self.compounds[parent].index(name)
        if not top and not nested:
            return []
        return [_hex(top), *(f"{index}-{_hex(bits)}" for index, bits in sorted(nested.items()))]

    def _compound_of(self, name: str) -> str | None:
        for parent, parts in self.compounds.items():
            if name in parts:
                return parent
        return None

    def _record(self, event: ChangeEvent) -> dict[str, Any]:
        fields = event.fields
        nulled = [name for name, value in fields.items() if value is None and event.change_type == "UPDATE"]
        record: dict[str, Any] = {
            HEADER: {
                **event.scalar_header(),
                "recordIds": list(event.record_ids),
                "nulledFields": self.bitmap(nulled),
                "diffFields": [],
                "changedFields": self.bitmap(event.changed_fields),
            }
        }
        for name in self.top_fields[1:]:
            parts = self.compounds.get(name)
            if parts is None:
                record[name] = _avro_value(self.types[name], fields.get(name))
            elif any(fields.get(part) is not None for part in parts):
                record[name] = {part: fields.get(part) for part in parts}
            else:
                record[name] = None
        return record


class AvroSchemas:
    """The change-event schemas of every entity with Change Data Capture, by entity and by schema id."""

    def __init__(self, schema: Schema, entities: Iterable[str]) -> None:
        self._by_entity: dict[str, EntitySchema] = {}
        for entity in entities:
            obj = schema.get(entity)
            if obj is not None:
                self._by_entity[entity] = entity_schema(obj)
        self._by_id = {s.schema_id: s for s in self._by_entity.values()}

    def for_entity(self, entity: str) -> EntitySchema | None:
        """The schema of an entity's change events, None when it has none."""
        return self._by_entity.get(entity)

    def by_id(self, schema_id: str) -> EntitySchema | None:
        """The schema with this id (GetSchema), None when unknown."""
        return self._by_id.get(schema_id)


def entity_schema(obj: ObjectDef) -> EntitySchema:
    """Build the Avro schema of `obj`'s change events."""
    own = [f for f in obj.fields.values() if f.name != "Id"]
    names = {f.name for f in own}
    parts = tuple(p for p in _NAME_PARTS if p in names)
    compounds = {"Name": parts} if {"FirstName", "LastName"} <= names else {}
    avro_fields: list[dict[str, Any]] = [{"name": HEADER, "type": _header_schema()}]
    top = [HEADER]
    for f in own:
        if compounds and f.name in parts:
            continue
        if f.name in compounds:
            avro_fields.append(_compound_field(obj.name, f.name, parts))
        else:
            avro_fields.append(_plain_field(f))
        top.append(f.name)
    document = {
        "type": "record",
        "name": f"{obj.name.removesuffix('__c')}{'__' if obj.custom else ''}ChangeEvent",
        "namespace": NAMESPACE,
        "fields": avro_fields,
    }
    schema_json = json.dumps(document, separators=(",", ":"))
    digest = hashlib.sha256(schema_json.encode()).digest()[:16]
    return EntitySchema(
        entity=obj.name,
        schema_id=base64.urlsafe_b64encode(digest).decode().rstrip("="),
        schema_json=schema_json,
        parsed=fastavro.parse_schema(document),
        top_fields=tuple(top),
        compounds=compounds,
        types={f.name: f.type for f in own},
    )


def _header_schema() -> dict[str, Any]:
    strings = {"type": "array", "items": "string"}
    return {
        "type": "record",
        "name": HEADER,
        "fields": [
            {"name": "entityName", "type": "string"},
            {"name": "recordIds", "type": strings},
            {"name": "changeType", "type": {"type": "enum", "name": "ChangeType", "symbols": CHANGE_TYPES}},
            {"name": "changeOrigin", "type": "string"},
            {"name": "transactionKey", "type": "string"},
            {"name": "sequenceNumber", "type": "int"},
            {"name": "commitTimestamp", "type": "long"},
            {"name": "commitNumber", "type": "long"},
            {"name": "commitUser", "type": "string"},
            {"name": "nulledFields", "type": strings},
            {"name": "diffFields", "type": strings},
            {"name": "changedFields", "type": strings},
        ],
    }


def _compound_field(entity: str, name: str, parts: Sequence[str]) -> dict[str, Any]:
    record = {
        "type": "record",
        "name": f"{entity.removesuffix('__c')}{name}",
        "fields": [{"name": p, "type": ["null", "string"], "default": None} for p in parts],
    }
    return {"name": name, "type": ["null", record], "default": None}


def _plain_field(f: FieldDef) -> dict[str, Any]:
    """A field as a union with null; datetimes and dates name their Salesforce type in `doc`."""
    avro: dict[str, Any] = {"name": f.name, "type": ["null", _avro_type(f)], "default": None}
    if f.type in _DOCUMENTED_TYPES:
        avro["doc"] = f"Data:{_DOCUMENTED_TYPES[f.type]}"
    return avro


def _avro_type(f: FieldDef) -> str:
    if f.type == "boolean":
        return "boolean"
    if f.type == "int":
        return "int"
    if f.type in ("double", "currency", "percent"):
        return "double"
    if f.type == "datetime":
        return "long"
    if f.type == "date":
        return "int"
    return "string"


def _avro_value(field_type: str, value: Any) -> Any:
    """A rendered field value (as the CometD body carries it) in its Avro form."""
    if value is None:
        return None
    if field_type == "datetime" and isinstance(value, str):
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int(moment.timestamp() * 1000)
    if field_type == "date" and isinstance(value, str):
        return (dt.date.fromisoformat(value) - _EPOCH_DAY).days
    if field_type == "int":
        return int(value)
    if field_type in ("double", "currency", "percent"):
        return float(value)
    if field_type == "boolean":
        return bool(value)
    return value if isinstance(value, str) else json.dumps(value)


def _hex(bits: int) -> str:
    digits = f"{bits:X}"
    return "0x" + digits.zfill(len(digits) + len(digits) % 2)

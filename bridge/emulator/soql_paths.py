"""Parent relationship fields in SOQL (`Who.Name`, `Account.Name`, `Mogli_Event__r.Name`): one level up."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.emulator.schema import FieldDef, ObjectDef, Schema
from bridge.emulator.soql import invalid_field

Values = Mapping[str, Any]
Resolver = Callable[[str], tuple[str, Values] | None]  # id -> (object name, values) or None

# Fields of the polymorphic `Name` entity Salesforce exposes behind Who, What and Owner-like lookups.
_NAME_FIELDS = {
    "id": FieldDef("Id", "id"),
    "name": FieldDef("Name", "string"),
    "type": FieldDef("Type", "string"),
    "firstname": FieldDef("FirstName", "string"),
    "lastname": FieldDef("LastName", "string"),
    "email": FieldDef("Email", "email"),
    "phone": FieldDef("Phone", "phone"),
    "title": FieldDef("Title", "string"),
}


@dataclass(frozen=True, slots=True)
class Path:
    """A parent field reached through a lookup: `key` = `Relationship.Field` (canonical)."""

    key: str
    lookup: str  # the local lookup field, e.g. WhoId
    relationship: str  # e.g. Who
    field: str  # the parent's field, e.g. Name
    polymorphic: bool


def relationship_name(f: FieldDef) -> str:
    """`WhoId` -> `Who`, `Mogli_Event__c` -> `Mogli_Event__r`."""
    if f.name.endswith("__c"):
        return f.name[:-3] + "__r"
    return f.name[:-2] if f.name.endswith("Id") else f.name


def resolve_path(obj: ObjectDef, schema: Schema, name: str) -> tuple[Path, FieldDef]:
    """The Path for `Relationship.Field` on `obj` and the parent field's definition; INVALID_FIELD if none."""
    rel, _, target = name.partition(".")
    lookup = next(
        (
            f
            for f in obj.fields.values()
            if f.type == "reference" and relationship_name(f).lower() == rel.lower()
        ),
        None,
    )
    if lookup is None or "." in target:
        raise invalid_field(name, obj.name)
    polymorphic = len(lookup.reference_to) > 1
    parent_def = _NAME_FIELDS.get(target.lower()) if polymorphic else _parent_field(schema, lookup, target)
    if parent_def is None:
        raise invalid_field(target, "Name" if polymorphic else lookup.reference_to[0])
    canonical = f"{relationship_name(lookup)}.{parent_def.name}"
    return Path(canonical, lookup.name, relationship_name(lookup), parent_def.name, polymorphic), parent_def


def _parent_field(schema: Schema, lookup: FieldDef, target: str) -> FieldDef | None:
    parent = schema.get(lookup.reference_to[0]) if lookup.reference_to else None
    return parent.field(target) if parent is not None else None


class RowView(Mapping[str, Any]):
    """A row whose `Relationship.Field` keys read through to the parent record."""

    __slots__ = ("_paths", "_resolve", "record")

    def __init__(self, values: Values, paths: Mapping[str, Path], resolve: Resolver) -> None:
        self.record, self._paths, self._resolve = values, paths, resolve

    def __getitem__(self, key: str) -> Any:
        path = self._paths.get(key)
        if path is None:
            return self.record[key]
        parent = self.parent(path)
        if parent is None:
            return None
        sobject, values = parent
        return sobject if path.field == "Type" else values.get(path.field)

    def parent(self, path: Path) -> tuple[str, Values] | None:
        """The record the path's lookup points at, or None."""
        target = self.record.get(path.lookup)
        return self._resolve(target) if target else None

    def __iter__(self) -> Iterator[str]:
        return iter(self.record)

    def __len__(self) -> int:
        return len(self.record)

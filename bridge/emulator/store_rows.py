"""The in-memory record table of the emulated org and its indexes (ids, unique values, lookups, cascades)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bridge.emulator.schema import Schema

# Lookups that never drive a cascade or a reverse lookup; indexing them would only fill the index.
_UNINDEXED_REFS = frozenset({"OwnerId", "CreatedById", "LastModifiedById"})


@dataclass(slots=True)
class Row:
    """One stored record: canonical field names to Python values; `cascade_root` = id whose delete took it."""

    sobject: str
    values: dict[str, Any]
    deleted: bool = False
    cascade_root: str | None = None

    @property
    def id(self) -> str:
        """The record's 18-character id."""
        return str(self.values["Id"])

    def copy(self) -> Row:
        """A copy whose values can be changed without touching this row."""
        return Row(self.sobject, dict(self.values), self.deleted, self.cascade_root)


def unique_key(value: Any) -> Any:
    """Unique and External ID text values compare case-insensitively."""
    return value.lower() if isinstance(value, str) else value


@dataclass
class RowTable:
    """Every record, with the indexes that keep single-record DML O(1)."""

    schema: Schema
    rows: dict[str, Row] = field(default_factory=dict)
    by_type: dict[str, dict[str, None]] = field(default_factory=lambda: defaultdict(dict))
    unique: dict[tuple[str, str], dict[Any, set[str]]] = field(default_factory=lambda: defaultdict(dict))
    refs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    cascades: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _indexed_fields: dict[str, _IndexedFields] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget every record."""
        for index in (self.rows, self.by_type, self.unique, self.refs, self.cascades):
            index.clear()

    def get(self, record_id: str) -> Row | None:
        """The row with this 18-character id, deleted or not."""
        return self.rows.get(record_id)

    def put(self, row: Row) -> Row | None:
        """Store `row` (replacing the row with its id); returns the replaced row."""
        old = self.rows.get(row.id)
        if old is not None:
            self._unindex(old)
        self.rows[row.id] = row
        self._index(row)
        return old

    def remove(self, record_id: str) -> None:
        """Drop a row entirely (rollback of a create)."""
        old = self.rows.pop(record_id, None)
        if old is not None:
            self._unindex(old)

    def of_type(self, sobject: str) -> Iterator[Row]:
        """Every row of one object, in creation order."""
        for record_id in list(self.by_type.get(sobject, ())):
            yield self.rows[record_id]

    def matching(self, sobject: str, field_name: str, value: Any) -> set[str]:
        """Ids of live rows whose unique/External ID field equals `value`."""
        return set(self.unique.get((sobject, field_name), {}).get(unique_key(value), ()))

    def referrers(self, record_id: str) -> list[Row]:
        """Rows (deleted or not) with a lookup pointing at `record_id`."""
        return [self.rows[r] for r in sorted(self.refs.get(record_id, ())) if r in self.rows]

    def cascaded_by(self, root_id: str) -> list[Row]:
        """Deleted rows whose delete was caused by deleting `root_id`."""
        return [self.rows[r] for r in sorted(self.cascades.get(root_id, ())) if r in self.rows]

    def _indexed(self, sobject: str) -> _IndexedFields:
        """Which fields of `sobject` the indexes cover (computed once per object)."""
        found = self._indexed_fields.get(sobject)
        if found is None:
            obj = self.schema.get(sobject)
            assert obj is not None, sobject
            unique = tuple(f.name for f in obj.fields.values() if f.unique or f.external_id)
            refs = tuple(
                f.name for f in obj.fields.values() if f.type == "reference" and f.name not in _UNINDEXED_REFS
            )
            found = self._indexed_fields[sobject] = _IndexedFields(obj.name, unique, refs)
        return found

    def _index(self, row: Row) -> None:
        spec, values = self._indexed(row.sobject), row.values
        self.by_type[spec.sobject][row.id] = None
        if not row.deleted:
            for name in spec.unique:
                if values.get(name) is not None:
                    self.unique[(spec.sobject, name)].setdefault(unique_key(values[name]), set()).add(row.id)
        for name in spec.refs:
            if values.get(name) is not None:
                self.refs[values[name]].add(row.id)
        if row.cascade_root is not None:
            self.cascades[row.cascade_root].add(row.id)

    def _unindex(self, row: Row) -> None:
        spec, values = self._indexed(row.sobject), row.values
        self.by_type[spec.sobject].pop(row.id, None)
        for name in spec.unique:
            if values.get(name) is None:
                continue
            key = unique_key(values[name])
            bucket = self.unique.get((spec.sobject, name), {}).get(key)
            if bucket is not None:
                bucket.discard(row.id)
                if not bucket:
                    del self.unique[(spec.sobject, name)][key]
        for name in spec.refs:
            if values.get(name) is not None:
                self.refs[values[name]].discard(row.id)
        if row.cascade_root is not None:
            self.cascades[row.cascade_root].discard(row.id)


@dataclass(frozen=True, slots=True)
class _IndexedFields:
    """The unique/External ID fields and the indexed lookups of one object."""

    sobject: str
    unique: tuple[str, ...]
    refs: tuple[str, ...]

"""Running a SOQL query against the record table, and rendering records as REST JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import sfid
from bridge.emulator import soql, soql_eval
from bridge.emulator.schema import ObjectDef
from bridge.emulator.soql_paths import Path, RowView
from bridge.emulator.store_rows import Row, RowTable
from bridge.emulator.validation import render_rest


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Every row a SOQL query selects (paging is the HTTP layer's); `records` is empty for COUNT()."""

    total_size: int
    records: list[dict[str, Any]]


def render_record(
    obj: ObjectDef, values: Mapping[str, Any], names: Sequence[str], version: str
) -> dict[str, Any]:
    """REST JSON of one record: `attributes` {type, url}, then the named fields in order."""
    url = f"/services/data/v{version}/sobjects/{obj.name}/{values['Id']}"
    out: dict[str, Any] = {"attributes": {"type": obj.name, "url": url}}
    for name in names:
        out[name] = render_rest(values.get(name))
    return out


def run_query(table: RowTable, text: str, include_deleted: bool, now: datetime, version: str) -> QueryResult:
    """Parse, bind and run one query over the table (the caller holds the store's lock)."""
    parsed = soql.parse(text)
    obj = table.schema.get(parsed.sobject)
    if obj is None:
        raise soql.invalid_type(parsed.sobject)
    plan = soql_eval.bind(parsed, obj, table.schema)
    rows = (r.values for r in _candidates(table, obj, plan, include_deleted))

    def resolve(record_id: str) -> tuple[str, Mapping[str, Any]] | None:
        """The parent record a relationship path reads."""
        row = table.get(record_id)
        return (row.sobject, row.values) if row is not None else None

    selected = soql_eval.execute(plan, rows, now, resolve)
    if plan.count_only:
        return QueryResult(total_size=len(selected), records=[])
    if plan.aggregate is not None:
        counted, key = plan.aggregate
        value = sum(1 for row in selected if row.get(counted) is not None)
        return QueryResult(total_size=1, records=[{"attributes": {"type": "AggregateResult"}, key: value}])
    out = [_render_selected(obj, plan, row, version) for row in selected]
    return QueryResult(total_size=len(out), records=out)


def _candidates(
    table: RowTable, obj: ObjectDef, plan: soql_eval.Plan, include_deleted: bool
) -> Iterable[Row]:
    """Rows that may match: from the id or External ID index when the WHERE clause allows, else all."""
    keys = soql_eval.lookup_keys(plan)
    f = obj.field(keys[0]) if keys is not None else None
    if keys is None or f is None:
        found: Iterable[Row] = table.of_type(obj.name)
    elif f.type == "id":
        by_id = (table.get(sfid.to18(k)) for k in keys[1] if isinstance(k, str) and sfid.is_valid(k))
        found = sorted((r for r in by_id if r is not None and r.sobject == obj.name), key=lambda r: r.id)
    elif (f.external_id or f.unique) and not include_deleted:
        ids = sorted({i for k in keys[1] for i in table.matching(obj.name, f.name, k)})
        found = [table.rows[i] for i in ids]
    else:
        found = table.of_type(obj.name)
    return (r for r in found if include_deleted or not r.deleted)


def _render_selected(
    obj: ObjectDef, plan: soql_eval.Plan, row: Mapping[str, Any], version: str
) -> dict[str, Any]:
    """A query row as REST JSON; parent fields nest under their relationship (null without a parent)."""
    own = row.record if isinstance(row, RowView) else row
    out = render_record(obj, own, [name for name in plan.fields if name not in plan.paths], version)
    if isinstance(row, RowView):
        for name in plan.fields:
            path = plan.paths.get(name)
            if path is None:
                continue
            if path.relationship not in out:
                out[path.relationship] = _parent_stub(row, path, version)
            nested = out[path.relationship]
            if nested is not None:
                nested[path.field] = render_rest(row[name])
    return {"attributes": out.pop("attributes"), **{n: out[n] for n in _output_order(plan)}}


def _parent_stub(row: RowView, path: Path, version: str) -> dict[str, Any] | None:
    """`{"attributes": {...}}` of the parent a path reads, or None when the lookup is empty."""
    parent = row.parent(path)
    if parent is None:
        return None
    sobject, values = parent
    url = f"/services/data/v{version}/sobjects/{sobject}/{values['Id']}"
    return {"attributes": {"type": "Name" if path.polymorphic else sobject, "url": url}}


def _output_order(plan: soql_eval.Plan) -> list[str]:
    """Output keys in SELECT order: a relationship appears where its first field was selected."""
    keys: dict[str, None] = {}
    for name in plan.fields:
        path = plan.paths.get(name)
        keys[path.relationship if path is not None else name] = None
    return list(keys)

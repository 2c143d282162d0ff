"""Binding a parsed SOQL query to an object's fields, and evaluating it over stored rows (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import ApiError
from bridge.emulator.schema import FieldDef, ObjectDef, Schema, long_text
from bridge.emulator.soql import (
    BoolOp,
    Compare,
    DateLiteral,
    InList,
    Like,
    OrderItem,
    Query,
    invalid_field,
    malformed,
)
from bridge.emulator.soql_paths import Path, Resolver, RowView, resolve_path

Values = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """A query whose field names are canonical and whose literals match the field types."""

    sobject: str
    fields: tuple[str, ...]
    count_only: bool
    where: Any
    order: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None
    paths: Mapping[str, Path] = field(default_factory=dict)  # `Relationship.Field` keys in use
    aggregate: tuple[str, str] | None = None  # COUNT(field): (canonical field, output key)


@dataclass(frozen=True, slots=True)
class InSet:
    """A bound `[NOT] IN` over plain values: a set lookup per row instead of one compare per value."""

    field: str
    keys: frozenset[Any]
    negate: bool


def bind(query: Query, obj: ObjectDef, schema: Schema | None = None) -> Plan:
    """Resolve every field name (INVALID_FIELD when unknown) and convert literals to the fields' types.

    With `schema`, parent relationship fields (`Who.Name`, `Account.Name`) are allowed too.
    """
    binder = _Binder(obj, schema)
    fields = tuple(binder.field(name).name for name in query.fields)
    seen: set[str] = set()
    for name in fields:
        if name in seen:
            raise malformed(f"duplicate field selected: {name}")
        seen.add(name)
    order = tuple(
        OrderItem(_usable(binder.field(o.field), "sorted").name, o.descending, o.nulls_last)
        for o in query.order
    )
    where = binder.condition(query.where) if query.where is not None else None
    aggregate = (binder.field(query.aggregate[0]).name, query.aggregate[1]) if query.aggregate else None
    return Plan(
        obj.name, fields, query.count_only, where, order, query.limit, query.offset, binder.paths, aggregate
    )


class _Binder:
    """Resolves names against one object (and its parents), remembering the relationship paths used."""

    def __init__(self, obj: ObjectDef, schema: Schema | None) -> None:
        self.obj, self.schema = obj, schema
        self.paths: dict[str, Path] = {}

    def field(self, name: str) -> FieldDef:
        """The field `name` denotes (parent paths become FieldDefs named `Rel.Field`)."""
        obj = self.obj
        f = obj.field(name)
        head, _, tail = name.partition(".")
        if f is None and tail and head.lower() == obj.name.lower():
            return self.field(tail)
        if f is None and tail and self.schema is not None:
            path, parent_field = resolve_path(obj, self.schema, name)
            self.paths[path.key] = path
            return replace(parent_field, name=path.key)
        if f is None:
            raise invalid_field(name, obj.name)
        return f

    def condition(self, node: Any) -> Any:
        """Bind a WHERE node: canonical names, typed literals, IN lists as sets."""
        if isinstance(node, BoolOp):
            return BoolOp(node.op, tuple(self.condition(i) for i in node.items))
        f = _usable(self.field(node.field), "filtered")
        if isinstance(node, Compare):
            return Compare(f.name, node.op, _literal(f, node.value))
        if isinstance(node, InList):
            values = tuple(_literal(f, v) for v in node.values)
            if any(isinstance(v, DateLiteral) for v in values):
                return InList(f.name, values, node.negate)
            return InSet(f.name, frozenset(_key(v) for v in values), node.negate)
        return Like(f.name, node.pattern)


def _usable(f: FieldDef, how: str) -> FieldDef:
    """Long text areas can be neither filtered nor sorted in SOQL."""
    if not long_text(f):
        return f
    raise ApiError(400, "INVALID_FIELD", f"field '{f.name}' can not be {how} in a query call")


def _literal(f: FieldDef, value: Any) -> Any:
    """Convert a literal to what is stored for field `f` (ids to 18 characters, dates for datetimes)."""
    if value is None or isinstance(value, DateLiteral):
        return value
    if f.type in ("id", "reference") and isinstance(value, str):
        if not sfid.is_valid(value):
            raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
        return sfid.to18(value)
    expected = _NON_TEXT.get(f.type)
    if expected is not None and isinstance(value, str):
        raise ApiError(
            400,
            "INVALID_FIELD",
            f"value of filter criterion for field '{f.name}' must be of type {expected}"
            " and should not be enclosed in quotes",
        )
    if f.type == "datetime" and isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


_NON_TEXT = {
    "datetime": "dateTime",
    "date": "date",
    "boolean": "boolean",
    "int": "double",
    "double": "double",
    "currency": "double",
}


def lookup_keys(plan: Plan) -> tuple[str, frozenset[Any]] | None:
    """(field, values) when the WHERE clause limits a field to a few values (`=` / `IN`, alone or ANDed).

    The store can then read candidate rows from an index instead of scanning; execute() still applies
    the whole condition to them. Text values are lower-cased (SOQL compares text case-insensitively).
    """
    where = plan.where
    items = where.items if isinstance(where, BoolOp) and where.op == "and" else (where,)
    for node in items:
        if isinstance(node, InSet) and not node.negate:
            return node.field, node.keys
        if isinstance(node, Compare) and node.op == "=" and not isinstance(node.value, DateLiteral):
            return node.field, frozenset({_key(node.value)})
    return None


def execute(
    plan: Plan, rows: Iterable[Values], now: datetime, resolve: Resolver | None = None
) -> list[Values]:
    """The rows the plan selects, ordered, offset and limited (RowViews when the plan uses parent fields)."""
    if plan.paths:
        if resolve is None:
            raise ValueError("a plan with relationship fields needs a resolver")
        rows = (RowView(r, plan.paths, resolve) for r in rows)
    where = plan.where
    selected = [r for r in rows if where is None or _eval(where, r, now)]
    for item in reversed(plan.order):
        _sort(selected, item)
    start = plan.offset or 0
    end = start + plan.limit if plan.limit is not None else None
    return selected[start:end]


def _sort(rows: list[Values], item: OrderItem) -> None:
    present = [r for r in rows if r.get(item.field) is not None]
    missing = [r for r in rows if r.get(item.field) is None]
    present.sort(key=lambda r: _key(r[item.field]), reverse=item.descending)
    rows[:] = present + missing if item.nulls_last else missing + present


def _key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _eval(node: Any, row: Values, now: datetime) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_eval(i, row, now) for i in node.items)
        if node.op == "or":
            return any(_eval(i, row, now) for i in node.items)
        return not _eval(node.items[0], row, now)
    value = row.get(node.field)
    if isinstance(node, InSet):
        return (_key(value) in node.keys) != node.negate
    if isinstance(node, InList):
        hit = any(_compare(value, "=", v, now) for v in node.values)
        return hit != node.negate
    if isinstance(node, Like):
        return isinstance(value, str) and _like(node.pattern).match(value) is not None
    return _compare(value, node.op, node.value, now)


def _compare(value: Any, op: str, literal: Any, now: datetime) -> bool:
    if isinstance(literal, DateLiteral):
        return _in_range(value, op, literal, now)
    if literal is None or value is None:
        equal = value is None and literal is None
        return equal if op == "=" else (not equal if op == "!=" else False)
    left, right = _key(value), _key(literal)
    if isinstance(left, datetime) and type(right) is date:
        left = left.date()
    if isinstance(right, datetime) and type(left) is date:
        right = right.date()
    try:
        return bool(_OPS[op](left, right))
    except TypeError:
        return op == "!="


_OPS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _in_range(value: Any, op: str, literal: DateLiteral, now: datetime) -> bool:
    if value is None:
        return op == "!="
    start, end = literal.bounds(now)
    point = value if isinstance(value, datetime) else datetime(value.year, value.month, value.day, tzinfo=UTC)
    inside = start <= point < end
    return {
        "=": inside,
        "!=": not inside,
        "<": point < start,
        "<=": point < end,
        ">": point >= end,
        ">=": point >= start,
    }[op]


def _like(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)

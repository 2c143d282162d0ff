"""Decoded tuples of the scheduler tables to OrganizationRow / ConnectionRow / UserRow / LinkRow / BookingRow.

Conversion is tolerant: a value that is missing or does not convert becomes None and a readable entry in the
row's `problems`, so one bad row never stops the stream. Unchanged TOASTed columns are named in `unchanged`.
Personal data (users.email, users.full_name, bookings.invitee_name, bookings.invitee_email) is never read:
those columns are not in the field tables below, so their values are not even converted.
The tenancy columns (CONTRACT §9) may be absent from an older scheduling database: a missing
users.organization_id reads as None (the default org) without a problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bridge.records.source import (
    BookingRow,
    ConnectionRow,
    LinkRow,
    OrganizationRow,
    SourceRow,
    SourceTable,
    UserRow,
)
from bridge.source.pgoutput import Column, TupleValue, Unchanged
from bridge.source.values import ConversionError, load_value


def _as_text(type_oid: int, text: str) -> str:
    return text


def _as_int(type_oid: int, text: str) -> int:
    value = load_value(type_oid, text)
    if isinstance(value, bool):
        raise ConversionError(f"{text[:40]!r} is a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ConversionError(f"{text[:40]!r} is not an integer")


def _as_bool(type_oid: int, text: str) -> bool:
    value = load_value(type_oid, text)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("t", "true", "f", "false"):
        return value.strip().lower() in ("t", "true")
    raise ConversionError(f"{text[:40]!r} is not a boolean")


def _as_datetime(type_oid: int, text: str) -> datetime:
    value = load_value(type_oid, text)
    if isinstance(value, str):
        value = _parse_iso(value)
    if not isinstance(value, datetime):
        raise ConversionError(f"{text[:40]!r} is not a timestamp")
    # A timestamp without time zone is read as UTC: the reader pins TimeZone=UTC on its sessions.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _parse_iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConversionError(f"{text[:40]!r} is not a timestamp") from exc


CONNECTION_STATUSES = ("connected", "disconnected")


def _as_connection_status(type_oid: int, text: str) -> str:
    if text not in CONNECTION_STATUSES:
        raise ConversionError(f"{text[:40]!r} is not one of {', '.join(CONNECTION_STATUSES)}")
    return text


Converter = Callable[[int, str], Any]

# Each table's columns as (column, converter); the first one is the key.
_FIELDS: dict[SourceTable, tuple[tuple[str, Converter], ...]] = {
    SourceTable.ORGANIZATIONS: (("id", _as_text), ("name", _as_text)),
    SourceTable.CONNECTIONS: (
        ("organization_id", _as_text),
        ("login_url", _as_text),
        ("username", _as_text),
        ("status", _as_connection_status),
    ),
    SourceTable.USERS: (("id", _as_text), ("salesforce_user_id", _as_text), ("organization_id", _as_text)),
    SourceTable.LINKS: (
        ("id", _as_text),
        ("link_type", _as_text),
        ("owner_id", _as_text),
        ("title", _as_text),
        ("description", _as_text),
        ("duration_minutes", _as_int),
        ("is_active", _as_bool),
    ),
    SourceTable.BOOKINGS: (
        ("id", _as_text),
        ("link_id", _as_text),
        ("assigned_user_id", _as_text),
        ("start_at", _as_datetime),
        ("end_at", _as_datetime),
        ("status", _as_text),
        ("related_record_id", _as_text),
    ),
}

# A column whose row attribute has another name (the connection's key is its organization's id).
_ATTRIBUTES: dict[tuple[SourceTable, str], str] = {(SourceTable.CONNECTIONS, "organization_id"): "id"}
# Columns an older scheduling database lacks (tenancy off): absent means None, not a problem.
_OPTIONAL: frozenset[tuple[SourceTable, str]] = frozenset({(SourceTable.USERS, "organization_id")})

_ROW_TYPES: dict[SourceTable, type[SourceRow]] = {
    SourceTable.ORGANIZATIONS: OrganizationRow,
    SourceTable.CONNECTIONS: ConnectionRow,
    SourceTable.USERS: UserRow,
    SourceTable.LINKS: LinkRow,
    SourceTable.BOOKINGS: BookingRow,
}


def columns_read(table: SourceTable) -> tuple[str, ...]:
    """The columns of `table` the bridge reads (never the personal-data ones)."""
    return tuple(name for name, _ in _FIELDS[table])


def key_column(table: SourceTable) -> str:
    """The primary-key column of `table` (the row's `id`)."""
    return _FIELDS[table][0][0]


# One relation's plan: per field (column name, row attribute, the column's index or -1 when it is missing,
# its type OID, converter). Cached by the identity of the relation's columns, which the assembler keeps.
_Step = tuple[str, str, int, int, Converter]
_PLANS: dict[tuple[SourceTable, int, bool], tuple[Sequence[Column], tuple[_Step, ...]]] = {}
_PLAN_CACHE_SIZE = 256


def _plan(table: SourceTable, columns: Sequence[Column], key_only: bool) -> tuple[_Step, ...]:
    cached = _PLANS.get((table, id(columns), key_only))
    if cached is not None and cached[0] is columns:
        return cached[1]
    index = {col.name: i for i, col in enumerate(columns)}
    fields = _FIELDS[table][:1] if key_only else _FIELDS[table]
    steps: list[_Step] = []
    for name, convert in fields:
        i = index.get(name, -1)
        steps.append(
            (name, _ATTRIBUTES.get((table, name), name), i, columns[i].type_oid if i >= 0 else 0, convert)
        )
    if len(_PLANS) >= _PLAN_CACHE_SIZE:
        _PLANS.clear()
    _PLANS[(table, id(columns), key_only)] = (columns, tuple(steps))
    return tuple(steps)


def build_row(
    table: SourceTable, columns: Sequence[Column], values: Sequence[TupleValue], *, key_only: bool = False
) -> SourceRow:
    """Convert one decoded tuple of `table`; with `key_only` (DELETE) only the id is read."""
    if len(columns) != len(values):
        raise ValueError(f"{table}: {len(values)} values for {len(columns)} columns")
    kwargs: dict[str, Any] = {}
    unchanged: set[str] = set()
    problems: list[str] = []
    for name, attribute, i, type_oid, convert in _plan(table, columns, key_only):
        if i < 0:
            if (table, name) not in _OPTIONAL:
                problems.append(f"{table}.{name}: column is missing from the table")
            continue
        raw = values[i]
        if isinstance(raw, str):
            try:
                kwargs[attribute] = convert(type_oid, raw)
            except ConversionError as exc:
                problems.append(f"{table}.{name}: {exc}")
        elif isinstance(raw, Unchanged):
            unchanged.add(attribute)
        elif isinstance(raw, bytes):
            problems.append(f"{table}.{name}: value arrived in binary format and was not read")
    if kwargs.get("id") is None:
        problems.append(f"{table}.{key_column(table)}: the row has no id")
        kwargs["id"] = ""
    return _ROW_TYPES[table](**kwargs, unchanged=frozenset(unchanged), problems=tuple(problems))

"""Text values to Python by type OID, and tolerant conversion of scheduler tuples to typed rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bridge.records.source import BookingRow, LinkRow, SourceTable, UserRow
from bridge.source.pgoutput import UNCHANGED, Column, TupleValue
from bridge.source.rows import build_row, columns_read
from bridge.source.values import ConversionError, load_value, session_options

UUID, TEXT, TIMESTAMPTZ, TIMESTAMP, INT4, INT8, BOOL, NUMERIC, JSONB, TEXT_ARRAY, INT4_ARRAY, DATE = (
    2950, 25, 1184, 1114, 23, 20, 16, 1700, 3802, 1009, 1007, 1082,
)  # fmt: skip
U1 = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
U2 = "b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a22"


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (UUID, U1, uuid.UUID(U1)),
        (TEXT, "Intro call", "Intro call"),
        (TIMESTAMPTZ, "2026-03-01 09:30:00+00", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
        (TIMESTAMPTZ, "2026-03-01 09:30:00.5+05:30", datetime(2026, 3, 1, 4, 0, 0, 500000, tzinfo=UTC)),
        (TIMESTAMP, "2026-03-01 09:30:00", datetime(2026, 3, 1, 9, 30)),
        (INT4, "30", 30),
        (INT8, "-9000000000", -9_000_000_000),
        (BOOL, "t", True),
        (BOOL, "f", False),
        (NUMERIC, "12.34", Decimal("12.34")),
        (JSONB, '{"a": [1, null]}', {"a": [1, None]}),
        (TEXT_ARRAY, '{a,"b c",NULL}', ["a", "b c", None]),
        (INT4_ARRAY, "{1,2}", [1, 2]),
        (99999, "an_enum_label", "an_enum_label"),
    ],
)
def test_load_value_by_oid(oid: int, text: str, expected: Any) -> None:
    """Each type's text output becomes the matching Python value (unknown OIDs stay text)."""
    value = load_value(oid, text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("oid", "text"), [(INT4, "thirty"), (TIMESTAMPTZ, "yesterday-ish"), (UUID, "nope")])
def test_load_value_rejects_bad_text(oid: int, text: str) -> None:
    """Unparseable text raises ConversionError (a ValueError), never a driver-specific error."""
    with pytest.raises(ConversionError):
        load_value(oid, text)


def test_session_options_pin_formats() -> None:
    """The session options pin date, time zone, interval and float output formats."""
    opts = session_options()
    for setting in ("DateStyle=ISO", "TimeZone=UTC", "IntervalStyle=postgres", "extra_float_digits=3"):
        assert f"-c {setting}" in opts


def cols(*spec: tuple[str, int]) -> list[Column]:
    return [Column(name, oid, -1, name == "id") for name, oid in spec]


BOOKING_COLS = cols(
    ("id", UUID), ("link_id", UUID), ("assigned_user_id", UUID), ("start_at", TIMESTAMPTZ),
    ("end_at", TIMESTAMPTZ), ("status", TEXT), ("invitee_name", TEXT), ("invitee_email", TEXT),
    ("related_record_id", TEXT), ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ),
)  # fmt: skip


def booking(**overrides: TupleValue) -> list[TupleValue]:
    values: dict[str, TupleValue] = {
        "id": U1, "link_id": U2, "assigned_user_id": None, "start_at": "2026-03-01 09:00:00+00",
        "end_at": "2026-03-01 09:30:00+00", "status": "scheduled", "invitee_name": "Ada Example",
        "invitee_email": "ada@example.invalid", "related_record_id": "003000000000001AAA",
        "created_at": "2026-01-01 00:00:00+00", "updated_at": "2026-01-01 00:00:00+00",
    }  # fmt: skip
    values.update(overrides)
    return [values[c.name] for c in BOOKING_COLS]


def test_booking_row_is_typed_and_carries_no_personal_data() -> None:
    """A clean booking converts fully; invitee name and email appear nowhere in the row."""
    row = build_row(SourceTable.BOOKINGS, BOOKING_COLS, booking())
    assert row == BookingRow(
        id=U1,
        link_id=U2,
        assigned_user_id=None,
        start_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        end_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        status="scheduled",
        related_record_id="003000000000001AAA",
    )
    assert "Ada" not in repr(row) and "ada@" not in repr(row)
    assert "invitee_name" not in columns_read(SourceTable.BOOKINGS)
    assert not {"email", "full_name"} & set(columns_read(SourceTable.USERS))


def test_bad_values_become_none_with_readable_problems() -> None:
    """An unparseable timestamp and a missing column become None plus one problem each; the rest converts."""
    columns = [c for c in BOOKING_COLS if c.name != "status"]
    values = [
        v for c, v in zip(BOOKING_COLS, booking(start_at="not a time"), strict=True) if c.name != "status"
    ]
    row = build_row(SourceTable.BOOKINGS, columns, values)
    assert isinstance(row, BookingRow)
    assert row.start_at is None and row.status is None and row.end_at is not None
    assert len(row.problems) == 2
    assert row.problems[0].startswith("bookings.start_at:") and "not a time" in row.problems[0]
    assert row.problems[1] == "bookings.status: column is missing from the table"


@pytest.mark.parametrize(
    ("column", "oid", "text", "expected"),
    [
        ("duration_minutes", TEXT, "45", 45),
        ("duration_minutes", NUMERIC, "45.0", 45),
        ("duration_minutes", INT8, "45", 45),
        ("is_active", TEXT, "true", True),
        ("is_active", TEXT, "f", False),
    ],
)
def test_retyped_columns_still_convert(column: str, oid: int, text: str, expected: object) -> None:
    """A column whose type changed (text, numeric, bigint) still converts when its value fits."""
    spec = {"id": UUID, "link_type": TEXT, "owner_id": UUID, "title": TEXT, "description": TEXT,
            "duration_minutes": INT4, "is_active": BOOL}  # fmt: skip
    spec[column] = oid
    values: dict[str, TupleValue] = {
        "id": U1, "link_type": "rsvp", "owner_id": U2, "title": "T",
        "description": None, "duration_minutes": "30", "is_active": "t",
    }  # fmt: skip
    values[column] = text
    row = build_row(SourceTable.LINKS, cols(*spec.items()), list(values.values()))
    assert isinstance(row, LinkRow) and getattr(row, column) == expected and row.problems == ()


@pytest.mark.parametrize(
    ("column", "oid", "text"),
    [
        ("duration_minutes", NUMERIC, "30.5"),
        ("duration_minutes", TEXT, "half an hour"),
        ("duration_minutes", BOOL, "t"),
        ("is_active", TEXT, "maybe"),
        ("is_active", INT4, "1"),
    ],
)
def test_values_that_do_not_fit_become_problems(column: str, oid: int, text: str) -> None:
    """A value that does not fit the field's type becomes None with a problem naming the column."""
    spec = {"id": UUID, "duration_minutes": INT4, "is_active": BOOL}
    spec[column] = oid
    values: dict[str, TupleValue] = {"id": U1, "duration_minutes": "30", "is_active": "t"}
    values[column] = text
    row = build_row(SourceTable.LINKS, cols(*spec.items()), list(values.values()))
    assert getattr(row, column) is None
    assert any(p.startswith(f"scheduling_links.{column}:") for p in row.problems)


def test_naive_timestamp_is_read_as_utc_and_date_is_a_problem() -> None:
    """timestamp without time zone is taken as UTC (sessions pin UTC); a bare date is not a timestamp."""
    columns = cols(("id", UUID), ("start_at", TIMESTAMP), ("end_at", DATE))
    row = build_row(SourceTable.BOOKINGS, columns, [U1, "2026-03-01 09:00:00", "2026-03-01"])
    assert isinstance(row, BookingRow)
    assert row.start_at == datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert row.start_at.utcoffset() == timedelta(0)
    assert row.end_at is None and any(p.startswith("bookings.end_at:") for p in row.problems)


def test_unchanged_null_binary_and_missing_id() -> None:
    """Unchanged TOAST is listed, NULL is None without a problem, binary is a problem, no id is a problem."""
    columns = cols(("id", UUID), ("salesforce_user_id", TEXT))
    assert build_row(SourceTable.USERS, columns, [U1, UNCHANGED]) == UserRow(
        id=U1, unchanged=frozenset({"salesforce_user_id"})
    )
    assert build_row(SourceTable.USERS, columns, [U1, None]) == UserRow(id=U1)
    binary = build_row(SourceTable.USERS, columns, [U1, b"\x00"])
    assert binary.problems == ("users.salesforce_user_id: value arrived in binary format and was not read",)
    nameless = build_row(SourceTable.USERS, columns, [None, "005"])
    assert nameless.id == "" and nameless.problems == ("users.id: the row has no id",)


def test_delete_key_only_reads_just_the_id() -> None:
    """With key_only, non-key columns (sent as NULL in a 'K' tuple) are not read or reported."""
    values: list[TupleValue] = [U1] + [None] * (len(BOOKING_COLS) - 1)
    assert build_row(SourceTable.BOOKINGS, BOOKING_COLS, values, key_only=True) == BookingRow(id=U1)


def test_width_mismatch_is_a_value_error() -> None:
    """A tuple whose width differs from its columns is refused (the assembler calls it a protocol error)."""
    with pytest.raises(ValueError, match="2 values for 1 columns"):
        build_row(SourceTable.USERS, cols(("id", UUID)), [U1, None])


def test_session_options_keep_the_dsns_own_options() -> None:
    """Options already in the DSN are kept, and the pinned formats come after them (so they win)."""
    opts = session_options("postgresql://u@h/db?options=-c%20statement_timeout%3D5s")
    assert opts.startswith("-c statement_timeout=5s -c DateStyle=ISO")


def test_layouts_built_afresh_for_every_row_each_read_by_their_own_columns() -> None:
    """Column layouts cached by identity never leak into one another: two layouts of the bookings table
    (reordered columns, one without `status`), each a new list per row and far more of them than the cache
    holds, each read by its own columns."""
    reordered = list(reversed(BOOKING_COLS))
    for n in range(600):
        if n % 2:
            layout = [c for c in reordered if c.name != "status"]
            values = [
                v
                for c, v in zip(reversed(BOOKING_COLS), reversed(booking()), strict=True)
                if c.name != "status"
            ]
            row = build_row(SourceTable.BOOKINGS, layout, values)
            assert row.status is None and row.problems == (
                "bookings.status: column is missing from the table",
            )
        else:
            row = build_row(SourceTable.BOOKINGS, list(BOOKING_COLS), booking(status=f"s{n}"))
            assert row.status == f"s{n}" and row.problems == ()
        assert row.id == U1 and row.link_id == U2 and row.start_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

"""Tolerant conversion of the tenancy tables' tuples (CONTRACT §9) to typed rows."""

from __future__ import annotations

from bridge.records.source import ConnectionRow, OrganizationRow, SourceTable, UserRow
from bridge.source.pgoutput import UNCHANGED, Column, TupleValue
from bridge.source.rows import build_row, columns_read, key_column

UUID, TEXT, TIMESTAMPTZ = 2950, 25, 1184
ORG = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
USER = "b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a22"
LOGIN = "https://acme.my.salesforce.com"

ORG_COLS = [
    Column("id", UUID, -1, True),
    Column("name", TEXT, -1, False),
    Column("created_at", TIMESTAMPTZ, -1, False),
]
CONN_COLS = [
    Column("organization_id", UUID, -1, True),
    Column("login_url", TEXT, -1, False),
    Column("username", TEXT, -1, False),
    Column("status", TEXT, -1, False),
    Column("updated_at", TIMESTAMPTZ, -1, False),
]
USER_COLS = [
    Column("id", UUID, -1, True),
    Column("email", TEXT, -1, False),
    Column("salesforce_user_id", TEXT, -1, False),
    Column("organization_id", UUID, -1, False),
]
NOW = "2026-01-01 00:00:00+00"


def connection(
    status: TupleValue = "connected", username: TupleValue = "int@acme.example"
) -> list[TupleValue]:
    return [ORG, LOGIN, username, status, NOW]


def test_organization_row_reads_id_and_name() -> None:
    """An organizations tuple becomes an OrganizationRow with its id and name, and no problem."""
    row = build_row(SourceTable.ORGANIZATIONS, ORG_COLS, [ORG, "Acme", NOW])
    assert row == OrganizationRow(id=ORG, name="Acme")
    assert columns_read(SourceTable.ORGANIZATIONS) == ("id", "name")


def test_connection_row_is_keyed_by_its_organization() -> None:
    """A connection tuple's organization_id is the row's id; login_url, username and status are read."""
    row = build_row(SourceTable.CONNECTIONS, CONN_COLS, connection())
    assert row == ConnectionRow(id=ORG, login_url=LOGIN, username="int@acme.example", status="connected")
    assert key_column(SourceTable.CONNECTIONS) == "organization_id"
    assert key_column(SourceTable.USERS) == "id"


def test_connection_delete_reads_only_the_key() -> None:
    """A DELETE (key only) of a connection reads just the organization id."""
    row = build_row(SourceTable.CONNECTIONS, CONN_COLS, [ORG, None, None, None, None], key_only=True)
    assert row == ConnectionRow(id=ORG)


def test_unknown_connection_status_is_a_problem() -> None:
    """A status other than connected/disconnected becomes None plus a problem naming the column."""
    row = build_row(SourceTable.CONNECTIONS, CONN_COLS, connection(status="paused-ish"))
    assert isinstance(row, ConnectionRow)
    assert row.status is None
    assert row.problems == (
        "salesforce_connections.status: 'paused-ish' is not one of connected, disconnected",
    )


def test_connection_unchanged_and_missing_key() -> None:
    """An unchanged TOASTed username is named in `unchanged`; a NULL key is a problem naming its column."""
    row = build_row(SourceTable.CONNECTIONS, CONN_COLS, connection(username=UNCHANGED))
    assert isinstance(row, ConnectionRow)
    assert row.unchanged == frozenset({"username"}) and row.username is None and row.problems == ()
    keyless = build_row(SourceTable.CONNECTIONS, CONN_COLS, [None, LOGIN, "u", "connected", NOW])
    assert keyless.problems == ("salesforce_connections.organization_id: the row has no id",)


def test_user_organization_is_read_and_may_be_null() -> None:
    """users.organization_id is read; NULL means the default org; the email is never read."""
    row = build_row(SourceTable.USERS, USER_COLS, [USER, "ada@example.invalid", "005000000000001AAA", ORG])
    assert row == UserRow(id=USER, salesforce_user_id="005000000000001AAA", organization_id=ORG)
    default = build_row(SourceTable.USERS, USER_COLS, [USER, "ada@example.invalid", None, None])
    assert isinstance(default, UserRow) and default.organization_id is None and default.problems == ()
    assert "ada@" not in repr(row)


def test_user_without_the_organization_column_has_no_problem() -> None:
    """An older scheduling database without users.organization_id decodes users as the default org's."""
    row = build_row(SourceTable.USERS, USER_COLS[:3], [USER, "x@example.invalid", "005000000000001AAA"])
    assert row == UserRow(id=USER, salesforce_user_id="005000000000001AAA")


def test_user_organization_unchanged_is_named() -> None:
    """An organization_id marked unchanged is named in `unchanged` (the ledger keeps what it knew)."""
    row = build_row(SourceTable.USERS, USER_COLS, [USER, UNCHANGED, "005000000000001AAA", UNCHANGED])
    assert isinstance(row, UserRow)
    assert row.unchanged == frozenset({"organization_id"}) and row.organization_id is None

"""Builders for source transactions and outcomes used by the ledger tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from bridge.records.source import (
    BookingRow,
    ChangeOp,
    IngestBatch,
    LinkRow,
    SourceChange,
    SourceRow,
    SourceTable,
    SourceTransaction,
    UserRow,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FUTURE = NOW + timedelta(days=1)
PAST = NOW - timedelta(days=1)
BIG = 10**12  # explicit LSNs in tests sit above every automatic one
OWNER_SF = "005000000000001AAA"
OTHER_SF = "005000000000002AAA"

_TABLES = {UserRow: SourceTable.USERS, LinkRow: SourceTable.LINKS, BookingRow: SourceTable.BOOKINGS}
_lsn = itertools.count(1000, 100)


def user(user_id: str = "u1", salesforce_user_id: str | None = OWNER_SF, **kw: object) -> UserRow:
    """A scheduler user row."""
    return UserRow(id=user_id, salesforce_user_id=salesforce_user_id, **kw)  # type: ignore[arg-type]


def link(link_id: str = "l1", owner_id: str = "u1", **kw: object) -> LinkRow:
    """A one-on-one link row with a title and description."""
    values: dict[str, object] = {
        "link_type": "one_on_one",
        "title": "Intro call",
        "description": "Say hello",
        "duration_minutes": 30,
        "is_active": True,
    }
    values.update(kw)
    return LinkRow(id=link_id, owner_id=owner_id, **values)  # type: ignore[arg-type]


def booking(
    booking_id: str = "b1", link_id: str = "l1", start: datetime = FUTURE, **kw: object
) -> BookingRow:
    """A scheduled booking of 30 minutes."""
    values: dict[str, object] = {"status": "scheduled", "related_record_id": "003000000000001AAA"}
    values.update(kw)
    return BookingRow(
        id=booking_id,
        link_id=link_id,
        start_at=start,
        end_at=start + timedelta(minutes=30),
        **values,  # type: ignore[arg-type]
    )


def change(row: SourceRow, op: ChangeOp = ChangeOp.INSERT) -> SourceChange:
    """A change of `row`."""
    return SourceChange(table=_TABLES[type(row)], op=op, row=row)


def truncate(table: SourceTable) -> SourceChange:
    """A TRUNCATE of a whole table."""
    return SourceChange(table=table, op=ChangeOp.TRUNCATE, row=None)


def txn(
    *changes: SourceChange | SourceRow,
    lsn: int | None = None,
    snapshot: bool = False,
    last_chunk: bool = False,
) -> SourceTransaction:
    """A committed transaction; bare rows are INSERTs."""
    items = tuple(c if isinstance(c, SourceChange) else change(c) for c in changes)
    return SourceTransaction(
        end_lsn=lsn if lsn is not None else next(_lsn),
        commit_time=NOW,
        changes=items,
        xid=7,
        snapshot=snapshot,
        last_snapshot_chunk=last_chunk,
    )


def batch(*txns: SourceTransaction, now: datetime = NOW, quiet: frozenset[str] = frozenset()) -> IngestBatch:
    """An ingest batch."""
    return IngestBatch(transactions=txns, now=now, quiet_booking_ids=quiet)


def setup_link(owner_sf: str | None = OWNER_SF) -> SourceTransaction:
    """A user and their link, the usual starting point."""
    return txn(user("u1", owner_sf), link("l1", "u1"))

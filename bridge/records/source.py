"""Frozen records of the source side: decoded rows of the scheduling database and the ledger's mirror of them.

Raw pgoutput bytes never leave `bridge/source/` and raw Salesforce JSON never leaves `bridge/salesforce/`;
everything in between speaks these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

# --------------------------------------------------------------------------------------------------
# Source side: rows of the scheduling database, as decoded from the replication stream.
# --------------------------------------------------------------------------------------------------


class SourceTable(enum.StrEnum):
    """The scheduler tables the bridge reads."""

    ORGANIZATIONS = "organizations"
    CONNECTIONS = "salesforce_connections"
    USERS = "users"
    LINKS = "scheduling_links"
    BOOKINGS = "bookings"


class ChangeOp(enum.StrEnum):
    """What happened to a row."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"


@dataclass(frozen=True, slots=True)
class OrganizationRow:
    """A customer of Mogli Scheduler (CONTRACT §9); its name is the customer's, not personal data."""

    id: str
    name: str | None = None
    unchanged: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    """An organization's Salesforce connection: where its tokens come from and as whom (no secret).

    `id` is the organization id (the table's key). `status` is 'connected' or 'disconnected' as the source
    holds it (anything else is treated as disconnected, with a problem recorded).
    """

    id: str
    login_url: str | None = None
    username: str | None = None
    status: str | None = None
    unchanged: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserRow:
    """A scheduler user. Email and full name are personal data and deliberately not carried.

    `organization_id` is None for a user of the default org (`[salesforce]`)."""

    id: str
    salesforce_user_id: str | None = None
    organization_id: str | None = None
    unchanged: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkRow:
    """A scheduling link. Fields are None when the column was NULL or missing.

    `unchanged` names the columns pgoutput did not send (unchanged TOASTed values): their value here is
    None and the consumer must keep what it knew. `problems` lists values that could not be converted.
    """

    id: str
    link_type: str | None = None
    owner_id: str | None = None
    title: str | None = None
    description: str | None = None
    duration_minutes: int | None = None
    is_active: bool | None = None
    unchanged: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BookingRow:
    """A booking. Invitee name and email are personal data and deliberately not carried."""

    id: str
    link_id: str | None = None
    assigned_user_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    status: str | None = None
    related_record_id: str | None = None
    unchanged: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


SourceRow = OrganizationRow | ConnectionRow | UserRow | LinkRow | BookingRow


@dataclass(frozen=True, slots=True)
class SourceChange:
    """One row change. For DELETE the row carries only its id; for TRUNCATE `row` is None."""

    table: SourceTable
    op: ChangeOp
    row: SourceRow | None


@dataclass(frozen=True, slots=True)
class SourceTransaction:
    """One committed source transaction (or one chunk of the initial snapshot).

    `end_lsn` is the Commit's end LSN: the position to acknowledge once the transaction is durable in
    the ledger. Snapshot chunks carry `snapshot=True` and the slot's consistent point as `end_lsn`;
    `last_snapshot_chunk` marks the final one.
    """

    end_lsn: int
    commit_time: datetime
    changes: tuple[SourceChange, ...]
    xid: int = 0
    origin: str | None = None
    snapshot: bool = False
    last_snapshot_chunk: bool = False


def format_lsn(lsn: int) -> str:
    """Render an LSN the way PostgreSQL does (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse PostgreSQL's `X/Y` LSN notation."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class BackfillMode(enum.StrEnum):
    """Which bookings that already exist at first start become Salesforce work."""

    NONE = "none"
    UPCOMING = "upcoming"
    SINCE = "since"


@dataclass(frozen=True, slots=True)
class BackfillPolicy:
    """`since` is required when mode is SINCE."""

    mode: BackfillMode = BackfillMode.UPCOMING
    since: datetime | None = None


# --------------------------------------------------------------------------------------------------
# Ledger mirror: what the ledger knows of the source rows, handed to the rules.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserState:
    """A user as the ledger knows it; `org_id` is its organization (None: the default org)."""

    user_id: str
    salesforce_user_id: str | None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class LinkState:
    """A link as the ledger knows it (mirror of the source row plus sync state)."""

    link_id: str
    link_type: str | None
    owner_user_id: str | None
    title: str | None
    description: str | None
    duration_minutes: int | None
    is_active: bool | None
    source_deleted: bool
    mogli_event_id: str | None
    state: str
    org_id: str | None = None  # the org its records go to (None: the default org)


@dataclass(frozen=True, slots=True)
class BookingState:
    """A booking as the ledger knows it (mirror of the source row)."""

    booking_id: str
    link_id: str | None
    assigned_user_id: str | None
    start_at: datetime | None
    end_at: datetime | None
    status: str | None
    related_record_id: str | None
    source_deleted: bool
    problems: tuple[str, ...] = ()
    org_id: str | None = None  # the org its Event goes to (None: the default org)


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """Source transactions to make durable in the ledger in one transaction, with the checkpoint.

    `quiet_booking_ids` are snapshot bookings the backfill policy excludes: stored, but not made work.
    `reordered`: the transactions are not a stretch of the stream but a choice from the read-ahead
    (pipeline/ingest_order.py), and `position` is the end of the stream's applied prefix once they are in
    (None: it does not move); the others are remembered as applied ahead of it. Otherwise the batch is a
    stretch of the stream and the checkpoint moves to its end.
    """

    transactions: tuple[SourceTransaction, ...]
    now: datetime
    quiet_booking_ids: frozenset[str] = frozenset()
    position: int | None = None
    reordered: bool = False

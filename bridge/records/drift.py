"""The records drift classification works on: snapshots of Salesforce records, the three-sided views of a
booking and a link, and the findings with their kind and repair. Frozen and free of behaviour.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bridge.records.ledger import ActivityRecord, LinkRecord
from bridge.records.source import BookingRow, LinkRow


class DriftKind(enum.StrEnum):
    """What kind of disagreement a finding is."""

    MISSING_IN_SALESFORCE = "missing_in_salesforce"  # no Event (live or deleted) for a synced booking
    LEDGER_POINTS_AT_DELETED = "ledger_points_at_deleted"  # the ledger's record id is in the recycle bin
    LEDGER_ID_MISMATCH = "ledger_id_mismatch"  # the live record is another one than the ledger's
    FIELD_MISMATCH = "field_mismatch"  # one Event field differs from what the rules write
    MOGLI_FIELD_MISMATCH = "mogli_field_mismatch"  # one Mogli Event field differs
    MOGLI_EVENT_MISSING = "mogli_event_missing"
    DUPLICATE_MOGLI_EVENT = "duplicate_mogli_event"
    DUPLICATE_EVENT = "duplicate_event"
    ORPHAN_EVENT = "orphan_event"  # an Event with a booking External ID unknown to scheduler and ledger
    ORPHAN_MOGLI_EVENT = "orphan_mogli_event"  # a Mogli Event with a link External ID nobody knows
    CANCELLED_EVENT_EXISTS = "cancelled_event_exists"  # the Event of a cancelled/deleted booking is live
    LEDGER_MISSING_BOOKING = "ledger_missing_booking"
    LEDGER_MISSING_LINK = "ledger_missing_link"
    LEDGER_BOOKING_STALE = "ledger_booking_stale"  # the ledger's mirror differs from the scheduler row
    LEDGER_LINK_STALE = "ledger_link_stale"
    LEDGER_USER_STALE = "ledger_user_stale"


class Repair(enum.StrEnum):
    """How a finding is repaired."""

    INGEST = "ingest"  # re-mirror the scheduler row through the ledger's ingest (queues the push)
    REQUEUE = "requeue"  # push the ledger row again (upsert by External ID)
    RELINK = "relink"  # forget the link's Mogli Event id, push the link and its bookings again
    DELETE = "delete"  # delete the Salesforce record
    MARK_DELETED = "mark_deleted"  # policy keeps a person's delete: the ledger records it, nothing is written
    ACCEPT_OWNER = "accept_owner"  # policy accepts a person's reassignment: the ledger records the owner


@dataclass(frozen=True, slots=True)
class RepairPolicy:
    """The `[sync]` policy rows reconciliation follows, so it never undoes what the inbound path accepts.

    A person's delete of an Event is kept (or the Event recreated); a deleted Mogli Event is recreated (or
    left deleted); a person's reassignment of an Event is accepted and recorded (with either owner policy:
    writing a round-robin owner back to the scheduler is the inbound path's, not reconciliation's).
    """

    on_activity_deleted: Literal["keep_deleted", "recreate"] = "keep_deleted"
    on_mogli_event_deleted: Literal["recreate", "keep_deleted"] = "recreate"


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """An Event as Salesforce holds it (queryAll: `deleted` when it is in the recycle bin)."""

    id: str
    booking_id: str | None
    deleted: bool
    created_at: str
    owner_id: str | None
    who_id: str | None
    what_id: str | None
    mogli_event_id: str | None
    subject: str | None
    description: str | None
    start_at: datetime | None
    end_at: datetime | None


@dataclass(frozen=True, slots=True)
class MogliSnapshot:
    """A Mogli Event as Salesforce holds it."""

    id: str
    link_id: str | None
    deleted: bool
    created_at: str
    name: str | None
    owner_id: str | None
    link_type: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement and how to repair it; `detail` holds ids, field names and values, no personal data."""

    kind: DriftKind
    repair: Repair
    link_id: str | None = None
    booking_id: str | None = None
    salesforce_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LedgerView:
    """What the ledger knows around a chunk: links by id and users' Salesforce ids by user id."""

    links: Mapping[str, LinkRecord]
    users: Mapping[str, str | None]
    relinked: frozenset[str] = frozenset()  # links whose Mogli Event this run re-creates


@dataclass(frozen=True, slots=True)
class LinkView:
    """One link on the three sides: the scheduler row (None: not there), the ledger row, its Mogli Events."""

    link_id: str
    source: LinkRow | None
    ledger: LinkRecord | None
    mogli_events: Sequence[MogliSnapshot] = ()


@dataclass(frozen=True, slots=True)
class BookingView:
    """One booking on the three sides: the scheduler row (None: not there), the ledger row, its Events."""

    booking_id: str
    source: BookingRow | None
    ledger: ActivityRecord | None
    events: Sequence[EventSnapshot] = ()

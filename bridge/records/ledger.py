"""Frozen records the ledger hands in and out, beyond the shared ones in bridge/records.py."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.records.source import IngestBatch

JsonObject = Mapping[str, Any]

__all__ = [
    "DEFAULT_ORG",
    "ActivityRecord",
    "ActivitySyncState",
    "Direction",
    "DriftItem",
    "FailureRecord",
    "Fence",
    "IngestBatch",
    "IngestSummary",
    "JournalEntry",
    "JsonObject",
    "LeaseRound",
    "LinkRecord",
    "LinkSyncState",
    "OrgRecord",
    "OrgState",
    "ReconciliationRun",
    "WorkerRecord",
]

# The `orgs` row of the default org of `[salesforce]`; everywhere else the default org's org_id is NULL.
DEFAULT_ORG = "default"

# The change stream's rows in `checkpoints`: the position up to which everything is applied, and the
# transactions applied ahead of it (ledger/checkpoints.py). Not an org's stream positions.
SOURCE_STREAM = "source"
SOURCE_AHEAD_STREAM = "source.ahead"
SOURCE_STREAMS = (SOURCE_STREAM, SOURCE_AHEAD_STREAM)


class LinkSyncState(enum.StrEnum):
    """Sync state of a link's Mogli Event."""

    UNBOOKED = "unbooked"
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    DELETED_IN_SALESFORCE = "deleted_in_salesforce"


class ActivitySyncState(enum.StrEnum):
    """Sync state of a booking's Event."""

    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED_IN_SALESFORCE = "deleted_in_salesforce"
    SKIPPED = "skipped"


class OrgState(enum.StrEnum):
    """Whether the bridge works for an org now (CONTRACT §9)."""

    ACTIVE = "active"  # connected, and its work goes out
    PAUSED = "paused"  # connected, but a cause (in `reason`) holds its work until it is gone
    DISCONNECTED = "disconnected"  # the source says disconnected: nothing is written, rows wait


@dataclass(frozen=True, slots=True)
class OrgRecord:
    """An `orgs` row: the connection as the source holds it and the bridge's state for the org."""

    org_id: str  # the organization id; DEFAULT_ORG for the default org of `[salesforce]`
    name: str | None
    login_url: str | None
    username: str | None
    connection: str | None  # the source's status: 'connected' | 'disconnected'
    salesforce_org_id: str | None
    instance_url: str | None
    state: str
    reason: str | None
    api_used: int | None
    api_limit: int | None
    state_since: datetime | None
    updated_at: datetime

    @property
    def ledger_org(self) -> str | None:
        """The org_id of this org in the other ledger tables (NULL for the default org)."""
        return None if self.org_id == DEFAULT_ORG else self.org_id


class Direction(enum.StrEnum):
    """Which way a journal entry points."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"
    RECONCILE = "reconcile"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What one batch did: changes applied per table, redelivered transactions skipped, work queued."""

    users: int = 0
    links: int = 0
    bookings: int = 0
    skipped_txns: int = 0
    pending_work: bool = False
    checkpoint: str | None = None
    # Tenancy: the orgs (None: the default org) that got new pending work, and whether any org's
    # organization or connection row changed (the daemon then re-reads the `orgs` table).
    orgs_with_work: frozenset[str | None] = frozenset()
    orgs_changed: bool = False


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A `links` row, for the `ledger` command and status."""

    link_id: str
    link_type: str | None
    owner_user_id: str | None
    owner_salesforce_id: str | None
    title: str | None
    description: str | None
    duration_minutes: int | None
    is_active: bool | None
    source_deleted: bool
    problems: tuple[str, ...]
    mogli_event_id: str | None
    state: str
    version: int
    synced_version: int | None
    attempts: int
    last_error: str | None
    error_code: str | None
    next_attempt_at: datetime | None
    first_booked_at: datetime | None
    synced_at: datetime | None
    updated_at: datetime
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class ActivityRecord:
    """An `activities` row, for the `ledger` command, status and invariant checks."""

    booking_id: str
    link_id: str | None
    activity_id: str | None
    owner_salesforce_id: str | None
    who_id: str | None
    what_id: str | None
    start_at: datetime | None
    end_at: datetime | None
    assigned_user_id: str | None
    status: str | None
    related_record_id: str | None
    problems: tuple[str, ...]
    source_deleted: bool
    state: str
    version: int
    synced_version: int | None
    attempts: int
    last_error: str | None
    error_code: str | None
    next_attempt_at: datetime | None
    source_lsn: int | None
    synced_at: datetime | None
    updated_at: datetime
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal row; `id` is None for an entry not yet written."""

    at: datetime
    direction: Direction
    entity: str
    entity_key: str
    action: str
    detail: JsonObject = field(default_factory=dict)
    id: int | None = None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """A failed link or activity, for `ledger failures`."""

    entity: str  # 'link' | 'activity'
    key: str
    link_id: str | None
    error_code: str | None
    last_error: str | None
    attempts: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReconciliationRun:
    """A `reconciliation_runs` row."""

    id: int
    requested_by: str
    scope: JsonObject
    dry_run: bool
    state: str
    started_at: datetime
    finished_at: datetime | None
    summary: JsonObject | None
    org_id: str | None = None  # the org it reconciled (NULL: the default org)


@dataclass(frozen=True, slots=True)
class DriftItem:
    """A `drift` row; `id` is None before it is written."""

    run_id: int
    kind: str
    link_id: str | None = None
    booking_id: str | None = None
    salesforce_id: str | None = None
    detail: JsonObject = field(default_factory=dict)
    repaired: bool = False
    id: int | None = None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A `workers` row (several workers, issue 14) with the orgs it holds under a lease not yet expired."""

    worker_id: str
    host: str
    pid: int
    reader: bool  # it holds the stream reader's lock and reads the change stream
    draining: bool  # it was asked to stop (SIGTERM): it takes no org and hands its orgs over
    started_at: datetime
    lease_until: datetime  # the database's time; past it, the worker counts as dead
    orgs: tuple[str, ...] = ()  # `orgs` keys ('default' for the default org), sorted


@dataclass(frozen=True, slots=True)
class Fence:
    """The fencing token of a worker's hold on one org: a fenced scoped ledger writes only while the
    org's lease row still names this worker at this epoch (a later take raises the epoch)."""

    worker_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class LeaseRound:
    """What one worker's lease round left it with.

    `held`: every org (`orgs` key) this worker holds, with its lease epoch (the fence of its runtime);
    `surplus`: held orgs above the share, to be drained and released so that a lighter worker takes them;
    `live_workers`: workers with a live lease that are not draining; `share`: ceil(orgs / live_workers),
    0 for a draining worker.
    """

    held: dict[str, int]
    surplus: tuple[str, ...]
    live_workers: int
    share: int

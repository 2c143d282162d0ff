"""The ports the pipeline's stages (and the admin app) drive: the change source, the ledger, Salesforce.

Each stage gets small Protocols that list only the members it calls, never a copy of an adapter's surface.
The adapters in `bridge/source/`, `bridge/ledger/` (its one `Ledger` implements every ledger port here) and
`bridge/salesforce/` implement these; `app.py` wires them together. Tests may pass hand-written fakes.

Over 400 lines on purpose: it is the one place every port is declared (a few lines each); splitting it by
stage would scatter the ledger's ports that one `Ledger` implements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from bridge.records.inbound import InboundBatch, KnownActivity, KnownLink
from bridge.records.ledger import (
    ActivityRecord,
    DriftItem,
    FailureRecord,
    IngestSummary,
    JsonObject,
    LinkRecord,
    OrgRecord,
    OrgState,
    ReconciliationRun,
)
from bridge.records.outbound import (
    ActivityOutcome,
    ActivityWork,
    ApiUsage,
    EventFields,
    LinkOutcome,
    LinkWork,
    MogliEventFields,
    WriteResult,
)
from bridge.records.source import (
    BookingRow,
    IngestBatch,
    LinkRow,
    SourceChange,
    SourceTransaction,
    UserRow,
)
from bridge.rules.drift import EventSnapshot, MogliSnapshot

BookingKey = tuple[str, str | None, str | None]  # booking id, link id, assigned user id
MirrorKey = tuple[str, str]  # journal entity ('user' | 'link' | 'activity'), row id


class ChangeSource(Protocol):
    """Committed source transactions, in commit order, and the acknowledgement of durable ones."""

    def transactions(self) -> AsyncIterator[SourceTransaction]:
        """Snapshot chunks first (first start only), then streamed transactions."""
        ...

    def acknowledge(self, lsn: int) -> None:
        """Everything up to `lsn` is durable in the ledger; the source may release it."""

    @property
    def behind(self) -> bool:
        """Whether the source is working through a backlog (more is waiting to be read right now)."""
        ...


class IngestLedger(Protocol):
    """The ledger calls the Ingestor makes."""

    async def link_orgs(self, link_ids: Collection[str]) -> dict[str, str | None]:
        """The org (None: the default org) of each of these links the ledger knows."""
        ...

    async def apply_source_batch(self, batch: IngestBatch) -> IngestSummary:
        """Make a batch of source transactions durable, with the checkpoint, in one transaction."""
        ...


class PushLedger(Protocol):
    """The ledger calls the Pusher makes."""

    async def claim_link_work(self, now: datetime, limit: int) -> list[LinkWork]:
        """Links whose Mogli Event must be written."""
        ...

    async def claim_activity_work(
        self, now: datetime, limit: int, exclude: Collection[str] = ()
    ) -> list[ActivityWork]:
        """Bookings whose Event must be written or deleted."""
        ...

    async def record_link_outcomes(self, outcomes: Sequence[LinkOutcome], now: datetime) -> None:
        """Store what happened to Mogli Event writes."""

    async def record_activity_outcomes(self, outcomes: Sequence[ActivityOutcome], now: datetime) -> None:
        """Store what happened to Event writes and deletes."""


class InboundLedger(Protocol):
    """The ledger calls the Inbound stage makes."""

    async def find_inbound_activities(
        self, salesforce_ids: Collection[str], booking_ids: Collection[str] = ()
    ) -> list[KnownActivity]:
        """Activities by Event id or booking id."""
        ...

    async def activities_of_people(self, who_ids: Collection[str]) -> list[KnownActivity]:
        """Activities last written with these WhoIds."""
        ...

    async def find_inbound_links(
        self, salesforce_ids: Collection[str], link_ids: Collection[str] = ()
    ) -> list[KnownLink]:
        """Links by Mogli Event id or link id."""
        ...

    async def user_for_salesforce_id(self, salesforce_user_id: str) -> str | None:
        """The scheduler user connected to a Salesforce user."""
        ...

    async def apply_inbound(self, batch: InboundBatch) -> None:
        """Commit effects and position in one transaction."""

    async def recreate_deleted_links(self) -> list[str]:
        """Queue again the deleted Mogli Events that have a new booking."""
        ...

    async def has_deleted_links(self) -> bool:
        """Whether a link whose Mogli Event was deleted in Salesforce still waits for a new booking."""
        ...


class ReconcileLedger(Protocol):
    """The reconciliation runs the Reconciler opens and closes."""

    async def start_reconciliation(self, requested_by: str, scope: JsonObject, dry_run: bool) -> int:
        """Open a run."""
        ...

    async def finish_reconciliation(self, run_id: int, state: str, summary: JsonObject) -> None:
        """Close a run."""
        ...

    async def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """One run."""
        ...


class ReconcileStorePort(Protocol):
    """The ledger reads and repairs of the Reconciler and its Repairer."""

    async def activity_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[BookingKey]:
        """Activities in scope."""
        ...

    async def link_ids(self) -> list[str]:
        """Every link id."""
        ...

    async def changed_ids(
        self, since: datetime, until: datetime | None
    ) -> tuple[list[BookingKey], list[str]]:
        """Activities and link ids whose ledger row changed in [since, until)."""
        ...

    async def links(self, ids: Collection[str]) -> dict[str, LinkRecord]:
        """Links by id."""
        ...

    async def activities(self, ids: Collection[str]) -> dict[str, ActivityRecord]:
        """Activities by booking id."""
        ...

    async def users(self, ids: Collection[str]) -> dict[str, str | None]:
        """User id -> Salesforce user id."""
        ...

    async def journal_mark(self) -> int:
        """The newest journal entry's id, taken before a re-mirror reads the scheduler."""
        ...

    async def remirror(self, changes: Sequence[SourceChange], mark: int) -> set[MirrorKey]:
        """Apply re-read scheduler rows through ingest, except rows streamed after `mark` (returned)."""
        ...

    async def requeue_drifted(
        self,
        *,
        booking_ids: Collection[str],
        link_ids: Collection[str],
        relink_ids: Collection[str],
        run_id: int,
    ) -> int:
        """Push rows again; returns how many were queued."""
        ...

    async def mark_deleted(self, salesforce_ids: Collection[str], run_id: int) -> int:
        """Record deletes the policy keeps; returns how many rows changed."""
        ...

    async def accept_owners(self, owners: Mapping[str, str], run_id: int) -> int:
        """Record owners the policy accepts; returns how many rows changed."""
        ...

    async def record_chunk(self, run_id: int, items: Sequence[DriftItem], summary: JsonObject) -> None:
        """Store a chunk's drift with the run's progress."""
        ...

    async def find_resumable(self, scope: JsonObject, dry_run: bool) -> ReconciliationRun | None:
        """An unfinished run with this scope."""
        ...

    async def resume(self, run_id: int) -> None:
        """Mark a run running again."""
        ...


class DriftTotalsView(Protocol):
    """Drift found and repaired over every reconciliation run."""

    @property
    def found(self) -> int:
        """Drift items found."""
        ...

    @property
    def repaired(self) -> int:
        """Drift items repaired."""
        ...


class AdminLedger(Protocol):
    """The ledger reads and the one write (requeue) the admin app and its probe make."""

    async def ping(self) -> None:
        """Raise when the ledger is unreachable."""

    async def counts(self) -> dict[str, int]:
        """Rows by state: 'activities.<state>' and 'links.<state>'."""
        ...

    async def requeue(
        self,
        booking_ids: Collection[str] | None = None,
        all_failed: bool = False,
        now: datetime | None = None,
        requested_by: str = "admin",
    ) -> int:
        """Failed rows back to pending; how many moved."""
        ...

    async def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """One run, or None."""
        ...

    async def list_reconciliations(self, limit: int = 10) -> list[ReconciliationRun]:
        """The newest runs first."""
        ...

    async def list_drift(
        self,
        run_id: int | None = None,
        link_id: str | None = None,
        booking_id: str | None = None,
        limit: int = 100,
    ) -> list[DriftItem]:
        """Drift items, newest first."""
        ...

    async def drift_totals(self) -> DriftTotalsView:
        """Drift found and repaired over every run."""
        ...

    async def list_failures(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[FailureRecord]:
        """Failed links and activities, newest first."""
        ...

    async def list_checkpoints(self) -> dict[str, str]:
        """Every stream position by stream name."""
        ...


class OrgCountsView(Protocol):
    """One org's links and activities by state (bridge.ledger.orgs.OrgCounts)."""

    @property
    def pending(self) -> int:
        """Waiting to be written."""
        ...

    @property
    def failed(self) -> int:
        """Failed."""
        ...

    @property
    def synced(self) -> int:
        """Written."""
        ...


class OrgStateLedger(Protocol):
    """The `orgs` table as an org's runtime keeps it: its row, state and reason, identity and API use."""

    async def get_org(self, org_id: str) -> OrgRecord | None:
        """One org ('default': the default org), or None."""
        ...

    async def set_org_state(self, org_id: str, state: OrgState, reason: str | None) -> bool:
        """Move the org to `state`; True (and journaled) only when state or reason changed."""
        ...

    async def record_org_identity(self, org_id: str, salesforce_org_id: str, instance_url: str) -> None:
        """Store the 00D id and instance URL a token named."""
        ...

    async def record_org_api(self, org_id: str, used: int, limit: int) -> None:
        """Store the daily API requests used and allowed (Sforce-Limit-Info)."""
        ...


class OrgFiguresLedger(Protocol):
    """Every org with its figures, for the `orgs` command, the admin API and the status page."""

    async def list_orgs(self) -> list[OrgRecord]:
        """Every `orgs` row, the default org first."""
        ...

    async def org_counts(self) -> Mapping[str, OrgCountsView]:
        """Pending, failed and synced rows by org key ('default' for the default org)."""
        ...

    async def org_positions(self) -> Mapping[str, Mapping[str, str]]:
        """Change-event positions by org key, then bare channel name."""
        ...


class SalesforceWriter(Protocol):
    """The Salesforce operations the pipeline needs."""

    async def upsert_mogli_events(self, items: Sequence[MogliEventFields]) -> list[WriteResult]:
        """Upsert Mogli Events by the link External ID; one result per item, in order."""
        ...

    async def upsert_events(self, items: Sequence[EventFields]) -> list[WriteResult]:
        """Upsert Events by the booking External ID; one result per item, in order."""
        ...

    async def delete_records(self, ids: Sequence[str]) -> list[WriteResult]:
        """Delete records; already-deleted ones count as success."""
        ...

    async def find_events_by_booking(self, booking_ids: Sequence[str]) -> dict[str, str]:
        """Booking id -> Event id for the Events that exist."""
        ...

    @property
    def usage(self) -> ApiUsage | None:
        """The last reported API usage."""
        ...


class SchedulerSnapshot(Protocol):
    """Read-only scheduler rows (SchedulerReader implements them)."""

    async def booking_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[BookingKey]:
        """Bookings in scope."""
        ...

    async def link_ids(self) -> list[str]:
        """Every link id."""
        ...

    async def user_ids(self) -> list[str]:
        """Every user id."""
        ...

    async def bookings(self, ids: Sequence[str]) -> dict[str, BookingRow]:
        """Bookings by id."""
        ...

    async def links(self, ids: Sequence[str]) -> dict[str, LinkRow]:
        """Links by id."""
        ...

    async def users(self, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users by id."""
        ...


class SalesforceSnapshot(Protocol):
    """Salesforce reads and deletes (SalesforceReads implements them)."""

    async def events_by_booking(self, booking_ids: Sequence[str]) -> list[EventSnapshot]:
        """Events (deleted ones too) by booking External ID."""
        ...

    async def mogli_events_by_link(self, link_ids: Sequence[str]) -> list[MogliSnapshot]:
        """Mogli Events (deleted ones too) by link External ID."""
        ...

    async def booking_keys(self, since: datetime | None, until: datetime | None) -> set[str]:
        """Booking External IDs of live Events."""
        ...

    async def booking_keys_of_links(self, mogli_event_ids: Sequence[str]) -> set[str]:
        """Booking External IDs of live Events on these Mogli Events."""
        ...

    async def link_keys(self) -> set[str]:
        """Link External IDs of live Mogli Events."""
        ...

    async def changed_keys(self, since: datetime, until: datetime | None) -> tuple[set[str], set[str]]:
        """Booking and link External IDs of Events and Mogli Events (deleted too) changed in the window."""
        ...

    async def delete(self, ids: Sequence[str]) -> set[str]:
        """Delete records; returns the ids now gone."""
        ...

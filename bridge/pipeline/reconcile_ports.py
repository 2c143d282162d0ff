"""The ports reconciliation drives: the ledger, the scheduler's rows and Salesforce's records, read-only
except for the repairs. The adapters are `AsyncLedger` + `ledger.reconciliation.ReconcileStore`,
`source.reader_sql.SchedulerReader` and `salesforce.reads.SalesforceReads`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from bridge.records.ledger import ActivityRecord, DriftItem, JsonObject, LinkRecord, ReconciliationRun
from bridge.records.source import BookingRow, LinkRow, SourceChange, UserRow
from bridge.rules.drift import EventSnapshot, MogliSnapshot

BookingKey = tuple[str, str | None, str | None]  # booking id, link id, assigned user id
MirrorKey = tuple[str, str]  # journal entity ('user' | 'link' | 'activity'), row id


class ReconcileLedger(Protocol):
    """The shared ledger calls reconciliation makes (AsyncLedger implements them)."""

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
    """Reconciliation's own ledger reads and writes (ReconcileStore implements them)."""

    def now(self) -> datetime:
        """The ledger's clock."""
        ...

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

    async def requeue(
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

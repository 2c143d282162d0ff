"""The ports the sync pipeline drives: the change source, the ledger and Salesforce.

The adapters in `bridge/source/`, `bridge/ledger/` and `bridge/salesforce/` implement these; `app.py` wires
them together. Tests may pass hand-written fakes that implement the same Protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

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
from bridge.records.source import IngestBatch, SourceTransaction


class ChangeSource(Protocol):
    """Committed source transactions, in commit order, and the acknowledgement of durable ones."""

    def transactions(self) -> AsyncIterator[SourceTransaction]:
        """Snapshot chunks first (first start only), then streamed transactions."""
        ...

    def acknowledge(self, lsn: int) -> None:
        """Everything up to `lsn` is durable in the ledger; the source may release it."""


class Ledger(Protocol):
    """The ledger as the pipeline sees it (the async facade of the repository)."""

    async def read_checkpoint(self, stream: str) -> str | None:
        """The stored position of a stream, or None."""
        ...

    async def apply_source_batch(self, batch: IngestBatch) -> Any:
        """Make a batch of source transactions durable, with the checkpoint, in one transaction."""
        ...

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

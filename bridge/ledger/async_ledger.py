"""AsyncLedger: the repository's methods as coroutines, all run in one dedicated worker thread.

SQLite has one writer anyway, and a single thread keeps the blocking driver off the event loop while
serialising ledger transactions in the order the daemon issues them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from bridge.errors import LedgerUnavailable
from bridge.records.inbound import InboundBatch, KnownActivity, KnownLink
from bridge.records.ledger import (
    ActivityRecord,
    DriftItem,
    FailureRecord,
    IngestBatch,
    IngestSummary,
    JournalEntry,
    JsonObject,
    LinkRecord,
    ReconciliationRun,
)
from bridge.records.outbound import ActivityOutcome, ActivityWork, LinkOutcome, LinkWork

if TYPE_CHECKING:
    from bridge.ledger.reports import DriftTotals
    from bridge.ledger.repository import LedgerRepository

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncLedger:
    """Coroutine façade over LedgerRepository; same method names, one worker thread."""

    def __init__(self, repository: LedgerRepository) -> None:
        self.repository = repository
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # keep structlog's bound context in the worker
        call = functools.partial(context.run, fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._executor, call)
        except (OperationalError, InterfaceError) as exc:
            # Connection refused, server gone, database locked past the busy timeout: a transient state of
            # the ledger, not of the data. Integrity and programming errors stay what they are.
            raise LedgerUnavailable(
                f"ledger unavailable: {type(exc.orig).__name__ if exc.orig else exc}"
            ) from exc

    async def close(self) -> None:
        """Finish queued calls, stop the worker thread and close the engine's connections (idempotent)."""
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self.repository.dispose()

    async def ping(self) -> None:
        """Health check."""
        await self._run(self.repository.ping)

    async def read_checkpoint(self, stream: str) -> str | None:
        """See LedgerRepository.read_checkpoint."""
        return await self._run(self.repository.read_checkpoint, stream)

    async def write_checkpoint(self, stream: str, position: str) -> None:
        """See LedgerRepository.write_checkpoint."""
        await self._run(self.repository.write_checkpoint, stream, position)

    async def apply_source_batch(self, batch: IngestBatch) -> IngestSummary:
        """See LedgerRepository.apply_source_batch."""
        return await self._run(self.repository.apply_source_batch, batch)

    async def claim_link_work(self, now: datetime, limit: int) -> list[LinkWork]:
        """See LedgerRepository.claim_link_work."""
        return await self._run(self.repository.claim_link_work, now, limit)

    async def claim_activity_work(
        self, now: datetime, limit: int, exclude: Collection[str] = ()
    ) -> list[ActivityWork]:
        """See LedgerRepository.claim_activity_work."""
        return await self._run(self.repository.claim_activity_work, now, limit, exclude)

    async def record_link_outcomes(self, outcomes: Sequence[LinkOutcome], now: datetime) -> None:
        """See LedgerRepository.record_link_outcomes."""
        await self._run(self.repository.record_link_outcomes, outcomes, now)

    async def record_activity_outcomes(self, outcomes: Sequence[ActivityOutcome], now: datetime) -> None:
        """See LedgerRepository.record_activity_outcomes."""
        await self._run(self.repository.record_activity_outcomes, outcomes, now)

    async def requeue(
        self,
        booking_ids: Collection[str] | None = None,
        all_failed: bool = False,
        now: datetime | None = None,
        requested_by: str = "admin",
    ) -> int:
        """See LedgerRepository.requeue."""
        return await self._run(self.repository.requeue, booking_ids, all_failed, now, requested_by)

    async def mark_deleted_in_salesforce(
        self, salesforce_ids: Collection[str], now: datetime | None = None
    ) -> int:
        """See LedgerRepository.mark_deleted_in_salesforce."""
        return await self._run(self.repository.mark_deleted_in_salesforce, salesforce_ids, now)

    async def counts(self) -> dict[str, int]:
        """See LedgerRepository.counts."""
        return await self._run(self.repository.counts)

    async def list_links(
        self,
        link_id: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[LinkRecord]:
        """See LedgerRepository.list_links."""
        return await self._run(self.repository.list_links, link_id, state, since, limit)

    async def list_activities(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
    ) -> list[ActivityRecord]:
        """See LedgerRepository.list_activities."""
        return await self._run(self.repository.list_activities, link_id, booking_id, state, since, limit)

    async def list_journal(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        entity: str | None = None,
        key: str | None = None,
    ) -> list[JournalEntry]:
        """See LedgerRepository.list_journal."""
        return await self._run(self.repository.list_journal, link_id, booking_id, since, limit, entity, key)

    async def list_failures(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[FailureRecord]:
        """See LedgerRepository.list_failures."""
        return await self._run(self.repository.list_failures, link_id, booking_id, since, limit)

    async def get_link(self, link_id: str) -> LinkRecord | None:
        """See LedgerRepository.get_link."""
        return await self._run(self.repository.get_link, link_id)

    async def get_activity(self, booking_id: str) -> ActivityRecord | None:
        """See LedgerRepository.get_activity."""
        return await self._run(self.repository.get_activity, booking_id)

    async def mirror_state(self, booking_ids: Collection[str]) -> dict[str, ActivityRecord]:
        """See LedgerRepository.mirror_state."""
        return await self._run(self.repository.mirror_state, booking_ids)

    async def append_journal(self, entries: Sequence[JournalEntry]) -> None:
        """See LedgerRepository.append_journal."""
        await self._run(self.repository.append_journal, entries)

    async def start_reconciliation(self, requested_by: str, scope: JsonObject, dry_run: bool) -> int:
        """See LedgerRepository.start_reconciliation."""
        return await self._run(self.repository.start_reconciliation, requested_by, scope, dry_run)

    async def finish_reconciliation(self, run_id: int, state: str, summary: JsonObject) -> None:
        """See LedgerRepository.finish_reconciliation."""
        await self._run(self.repository.finish_reconciliation, run_id, state, summary)

    async def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """See LedgerRepository.get_reconciliation."""
        return await self._run(self.repository.get_reconciliation, run_id)

    async def add_drift(self, items: Sequence[DriftItem]) -> None:
        """See LedgerRepository.add_drift."""
        await self._run(self.repository.add_drift, items)

    async def list_drift(
        self,
        run_id: int | None = None,
        link_id: str | None = None,
        booking_id: str | None = None,
        limit: int = 100,
    ) -> list[DriftItem]:
        """See LedgerRepository.list_drift."""
        return await self._run(self.repository.list_drift, run_id, link_id, booking_id, limit)

    async def list_reconciliations(self, limit: int = 10) -> list[ReconciliationRun]:
        """See LedgerRepository.list_reconciliations."""
        return await self._run(self.repository.list_reconciliations, limit)

    async def drift_totals(self) -> DriftTotals:
        """See LedgerRepository.drift_totals."""
        return await self._run(self.repository.drift_totals)

    async def list_checkpoints(self) -> dict[str, str]:
        """See LedgerRepository.list_checkpoints."""
        return await self._run(self.repository.list_checkpoints)

    async def find_inbound_activities(
        self, salesforce_ids: Collection[str], booking_ids: Collection[str] = ()
    ) -> list[KnownActivity]:
        """See LedgerRepository.find_inbound_activities."""
        return await self._run(self.repository.find_inbound_activities, salesforce_ids, booking_ids)

    async def activities_of_people(self, who_ids: Collection[str]) -> list[KnownActivity]:
        """See LedgerRepository.activities_of_people."""
        return await self._run(self.repository.activities_of_people, who_ids)

    async def find_inbound_links(
        self, salesforce_ids: Collection[str], link_ids: Collection[str] = ()
    ) -> list[KnownLink]:
        """See LedgerRepository.find_inbound_links."""
        return await self._run(self.repository.find_inbound_links, salesforce_ids, link_ids)

    async def user_for_salesforce_id(self, salesforce_user_id: str) -> str | None:
        """See LedgerRepository.user_for_salesforce_id."""
        return await self._run(self.repository.user_for_salesforce_id, salesforce_user_id)

    async def apply_inbound(self, batch: InboundBatch) -> None:
        """See LedgerRepository.apply_inbound."""
        await self._run(self.repository.apply_inbound, batch)

    async def recreate_deleted_links(self) -> list[str]:
        """See LedgerRepository.recreate_deleted_links."""
        return await self._run(self.repository.recreate_deleted_links)

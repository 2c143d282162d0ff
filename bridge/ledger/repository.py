"""The ledger repository: every read and write the daemon and the CLI make, one transaction per call."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from bridge.ledger import checkpoints, inbound, ingest, journal, outbox, queries, reports, requeue, runs
from bridge.ledger.async_ledger import AsyncLedger
from bridge.ledger.engine import READ_ONLY, make_engine
from bridge.ledger.reports import DriftTotals
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

Clock = Callable[[], datetime]

__all__ = ["AsyncLedger", "Clock", "LedgerRepository", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class LedgerRepository:
    """Synchronous access to the ledger; each method is one database transaction."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, clock: Clock = utc_now) -> LedgerRepository:
        """A repository on a fresh engine for this URL."""
        return cls(make_engine(url), clock)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection.execution_options(**{READ_ONLY: True})

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def ping(self) -> None:
        """Run a trivial query (health check); raises when the ledger is unreachable."""
        with self._read() as connection:
            connection.execute(text("SELECT 1"))

    # ------------------------------------------------------------------ checkpoints and ingest

    def read_checkpoint(self, stream: str) -> str | None:
        """The stored position of a stream, or None."""
        with self._read() as connection:
            return checkpoints.read_position(connection, stream)

    def write_checkpoint(self, stream: str, position: str) -> None:
        """Store a stream position (e.g. a Salesforce channel's replay id)."""
        with self.engine.begin() as connection:
            checkpoints.write_position(connection, stream, position, self._clock())

    def apply_source_batch(self, batch: IngestBatch) -> IngestSummary:
        """Apply source transactions and advance the 'source' checkpoint, all in one transaction."""
        with self.engine.begin() as connection:
            return ingest.apply_batch(connection, batch)

    # ------------------------------------------------------------------ outbox

    def claim_link_work(self, now: datetime, limit: int) -> list[LinkWork]:
        """Links whose Mogli Event must be written."""
        with self._read() as connection:
            return outbox.claim_links(connection, now, limit)

    def claim_activity_work(
        self, now: datetime, limit: int, exclude: Collection[str] = ()
    ) -> list[ActivityWork]:
        """Activities ready to be written or deleted, skipping the booking ids in `exclude`."""
        with self._read() as connection:
            return outbox.claim_activities(connection, now, limit, exclude)

    def record_link_outcomes(self, outcomes: Sequence[LinkOutcome], now: datetime) -> None:
        """Record Mogli Event push outcomes (version-compared) and journal them."""
        if outcomes:
            with self.engine.begin() as connection:
                outbox.record_links(connection, outcomes, now)

    def record_activity_outcomes(self, outcomes: Sequence[ActivityOutcome], now: datetime) -> None:
        """Record Event push outcomes (version-compared) and journal them."""
        if outcomes:
            with self.engine.begin() as connection:
                outbox.record_activities(connection, outcomes, now)

    def requeue(
        self,
        booking_ids: Collection[str] | None = None,
        all_failed: bool = False,
        now: datetime | None = None,
        requested_by: str = "admin",
    ) -> int:
        """Failed rows back to pending; returns how many rows moved."""
        with self.engine.begin() as connection:
            return requeue.requeue(connection, booking_ids, all_failed, now or self._clock(), requested_by)

    def mark_deleted_in_salesforce(self, salesforce_ids: Collection[str], now: datetime | None = None) -> int:
        """Rows whose Salesforce record was deleted there; returns how many rows changed."""
        with self.engine.begin() as connection:
            return requeue.mark_deleted_in_salesforce(connection, salesforce_ids, now or self._clock())

    # ------------------------------------------------------------------ reads

    def counts(self) -> dict[str, int]:
        """Rows by state: 'activities.<state>' and 'links.<state>'."""
        with self._read() as connection:
            return queries.counts(connection)

    def list_links(
        self,
        link_id: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> list[LinkRecord]:
        """Links, most recently changed first."""
        with self._read() as connection:
            return queries.list_links(connection, link_id=link_id, state=state, since=since, limit=limit)

    def list_activities(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        limit: int | None = queries.DEFAULT_LIMIT,
    ) -> list[ActivityRecord]:
        """Activities, most recently changed first (`limit=None`: all)."""
        with self._read() as connection:
            return queries.list_activities(
                connection, link_id=link_id, booking_id=booking_id, state=state, since=since, limit=limit
            )

    def list_journal(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = queries.DEFAULT_LIMIT,
        entity: str | None = None,
        key: str | None = None,
    ) -> list[JournalEntry]:
        """Journal entries, newest first."""
        with self._read() as connection:
            return journal.list_journal(
                connection,
                entity=entity,
                key=key,
                link_id=link_id,
                booking_id=booking_id,
                since=since,
                limit=limit,
            )

    def list_failures(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> list[FailureRecord]:
        """Failed links and activities, newest first."""
        with self._read() as connection:
            return queries.list_failures(
                connection, link_id=link_id, booking_id=booking_id, since=since, limit=limit
            )

    def get_link(self, link_id: str) -> LinkRecord | None:
        """One link, or None."""
        with self._read() as connection:
            return queries.get_link(connection, link_id)

    def get_activity(self, booking_id: str) -> ActivityRecord | None:
        """One activity, or None."""
        with self._read() as connection:
            return queries.get_activity(connection, booking_id)

    def mirror_state(self, booking_ids: Collection[str]) -> dict[str, ActivityRecord]:
        """The activities with these booking ids, keyed by booking id (for invariant checks)."""
        with self._read() as connection:
            return queries.activities_by_id(connection, booking_ids)

    def append_journal(self, entries: Sequence[JournalEntry]) -> None:
        """Append journal entries (inbound, reconcile, admin)."""
        if entries:
            with self.engine.begin() as connection:
                journal.append_journal(connection, entries)

    # ------------------------------------------------------------------ reconciliation

    def start_reconciliation(self, requested_by: str, scope: JsonObject, dry_run: bool) -> int:
        """Open a reconciliation run; returns its id."""
        with self.engine.begin() as connection:
            return runs.start_run(connection, requested_by, scope, dry_run, self._clock())

    def finish_reconciliation(self, run_id: int, state: str, summary: JsonObject) -> None:
        """Close a reconciliation run."""
        with self.engine.begin() as connection:
            runs.finish_run(connection, run_id, state, summary, self._clock())

    def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """One reconciliation run, or None."""
        with self._read() as connection:
            return runs.get_run(connection, run_id)

    def add_drift(self, items: Sequence[DriftItem]) -> None:
        """Store what a run found."""
        if items:
            with self.engine.begin() as connection:
                runs.add_drift(connection, items)

    def list_drift(
        self,
        run_id: int | None = None,
        link_id: str | None = None,
        booking_id: str | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> list[DriftItem]:
        """Drift items, newest first."""
        with self._read() as connection:
            return runs.list_drift(
                connection, run_id=run_id, link_id=link_id, booking_id=booking_id, limit=limit
            )

    # ------------------------------------------------------------------ operator reports

    def list_reconciliations(self, limit: int = 10) -> list[ReconciliationRun]:
        """The newest reconciliation runs first."""
        with self._read() as connection:
            return reports.list_runs(connection, limit)

    def drift_totals(self) -> DriftTotals:
        """Drift items found and repaired over every run."""
        with self._read() as connection:
            return reports.drift_totals(connection)

    def list_checkpoints(self) -> dict[str, str]:
        """Every stream position by stream name."""
        with self._read() as connection:
            return reports.list_checkpoints(connection)

    # ------------------------------------------------------------------ inbound (Salesforce changes)

    def find_inbound_activities(
        self, salesforce_ids: Collection[str], booking_ids: Collection[str] = ()
    ) -> list[KnownActivity]:
        """Activities by Event id or booking id (see ledger/inbound.py)."""
        with self._read() as connection:
            return inbound.find_activities(connection, salesforce_ids, booking_ids)

    def activities_of_people(self, who_ids: Collection[str]) -> list[KnownActivity]:
        """Activities last written with one of these WhoIds."""
        with self._read() as connection:
            return inbound.activities_of_people(connection, who_ids)

    def find_inbound_links(
        self, salesforce_ids: Collection[str], link_ids: Collection[str] = ()
    ) -> list[KnownLink]:
        """Links by Mogli Event id or link id."""
        with self._read() as connection:
            return inbound.find_links(connection, salesforce_ids, link_ids)

    def user_for_salesforce_id(self, salesforce_user_id: str) -> str | None:
        """The scheduler user connected to this Salesforce user, or None."""
        with self._read() as connection:
            return inbound.user_for_salesforce_id(connection, salesforce_user_id)

    def apply_inbound(self, batch: InboundBatch) -> None:
        """Write the effects of one Salesforce change with its channel position, in one transaction."""
        with self.engine.begin() as connection:
            inbound.apply_batch(connection, batch, self._clock())

    def recreate_deleted_links(self) -> list[str]:
        """Links whose Mogli Event was deleted in Salesforce and that have a new booking: queued again."""
        with self.engine.begin() as connection:
            return inbound.recreate_deleted_links(connection, self._clock())

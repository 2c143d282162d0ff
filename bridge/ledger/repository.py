"""The ledger repository: every read and write the daemon, the commands and reconciliation make.

One class, one declaration per operation. Each operation is a coroutine that runs one function of a topic
module (`ledger/<topic>.py`, functions on a SQLAlchemy Connection: the SQL lives there, once) in one
transaction, in one dedicated worker thread. SQLite has one writer anyway, and a single thread keeps the
blocking driver off the event loop while serialising ledger transactions in the order they are issued.

To add an operation: write the function in its topic module, then one short method here. Synchronous
callers (commands, hooks that must not wait on the loop) use `Ledger.call` / `Ledger.call_read` with a
topic function.

Over 400 lines on purpose: it is the one list of the ledger's ~55 operations, each a few lines that name a
topic function; splitting it would bring back the second declaration this module exists to remove.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError

from bridge.errors import LedgerUnavailable
from bridge.ledger import (
    checkpoints,
    inbound,
    ingest,
    journal,
    orgs,
    outbox,
    queries,
    reconciliation,
    reports,
    runs,
    workers,
)
from bridge.ledger import requeue as requeues
from bridge.ledger.engine import READ_ONLY, make_engine, unavailable_reason
from bridge.ledger.lanes import EVERY_LANE, FairExecutor
from bridge.ledger.orgs import OrgCounts
from bridge.ledger.reconciliation import MirrorKey
from bridge.ledger.reports import DriftTotals
from bridge.ledger.scope import EVERY_ORG, ORG_SCOPE, OrgScope, ledger_org
from bridge.records.inbound import InboundBatch, KnownActivity, KnownLink
from bridge.records.ledger import (
    ActivityRecord,
    DriftItem,
    FailureRecord,
    Fence,
    IngestBatch,
    IngestSummary,
    JournalEntry,
    JsonObject,
    LeaseRound,
    LinkRecord,
    OrgRecord,
    OrgState,
    ReconciliationRun,
    WorkerRecord,
)
from bridge.records.outbound import ActivityOutcome, ActivityWork, LinkOutcome, LinkWork, OutcomeState
from bridge.records.source import SourceChange

Clock = Callable[[], datetime]
# Told, after the commit, which push outcomes the ledger now holds: ('link' | 'activity', their states).
OutcomeObserver = Callable[[str, Sequence[OutcomeState]], None]
BookingKey = tuple[str, str | None, str | None]  # booking id, link id, assigned user id

_P = ParamSpec("_P")
_T = TypeVar("_T")

__all__ = ["BookingKey", "Clock", "Ledger", "OutcomeObserver", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@contextmanager
def _translated() -> Iterator[None]:
    """Raise a lost connection as LedgerUnavailable.

    Connection refused, server gone, database locked past the busy timeout: a transient state of the ledger,
    not of the data. Integrity and programming errors stay what they are.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise LedgerUnavailable(f"ledger unavailable: {unavailable_reason(exc)}") from exc


@dataclass(frozen=True, slots=True)
class _WriteJob:
    """A write for the worker thread: the topic function's call, and the scope it runs in (group commit
    locks the fenced scopes' lease rows in order before running the group)."""

    scope: OrgScope
    run: Callable[[Connection], Any]

    def __call__(self, connection: Connection) -> Any:
        return self.run(connection)


def _entered(connection: Connection, scope: OrgScope) -> Connection:
    """The connection of a write transaction, scoped, once the scope's fence (if any) was checked in it:
    the one place every write of a fenced view passes (LeaseLost rolls the transaction back)."""
    scoped = connection.execution_options(**{ORG_SCOPE: scope})
    workers.check_fence(scoped)
    return scoped


class Ledger:
    """The ledger's one repository: each operation is one transaction, run in one worker thread, where
    each org's operations take turns with the others' (lanes.py).

    Unscoped it sees every org; `scoped(org)` gives a view of one org's rows over the same engine, worker
    thread, clock and outcome observers (see ledger/scope.py).
    """

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = clock
        # the one worker thread: one lane per org, writes committed in groups (lanes.py)
        self._threads = FairExecutor(run_group=self._run_group)
        self._executor: Executor = self._threads
        self._lane = EVERY_LANE
        self._outcome_observers: list[OutcomeObserver] = []
        self._scope: OrgScope = EVERY_ORG
        self._owns_engine = True

    @classmethod
    def from_url(cls, url: str, clock: Clock = utc_now) -> Ledger:
        """A repository on a fresh engine for this URL."""
        return cls(make_engine(url), clock)

    def now(self) -> datetime:
        """The repository's clock."""
        return self._clock()

    def scoped(self, org_id: str | None, fence: Fence | None = None) -> Ledger:
        """A view of one org's rows (None or 'default': the default org) sharing this ledger's engine,
        worker thread, clock and outcome observers; closing the view leaves them to this ledger.

        With a `fence` (several workers) every write transaction of the view, claims included, first checks
        that this worker still holds the org's lease at that epoch, and raises LeaseLost (changing nothing)
        when it does not."""
        view = copy.copy(self)
        view._scope = OrgScope(ledger_org(org_id), fence=fence)
        view._lane = view._scope.key or EVERY_LANE
        view._executor = self._threads.lane(view._lane)
        view._owns_engine = False
        return view

    @property
    def org(self) -> str | None:
        """The org this ledger is restricted to ('default' for the default org); None: every org."""
        return self._scope.key

    def observe_outcomes(self, observer: OutcomeObserver) -> None:
        """Call `observer` with every batch of push outcomes once the ledger has committed them (metrics)."""
        self._outcome_observers.append(observer)

    # ------------------------------------------------------------------ the one way in

    def call(self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a topic function in one write transaction, in the calling thread, errors translated.

        The synchronous entry, for commands and tests that hold no event loop or must not wait on one;
        everything else awaits the methods below, which run the same topic functions in the worker thread.
        """
        with _translated(), self.engine.begin() as connection:
            return fn(_entered(connection, self._scope), *args, **kwargs)

    def call_read(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """`call` for a read: a read-only transaction (on SQLite it takes no write lock)."""
        with _translated(), self.engine.connect() as connection:
            options = {READ_ONLY: True, ORG_SCOPE: self._scope}
            return fn(connection.execution_options(**options), *args, **kwargs)

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # keep structlog's bound context in the worker
        call = functools.partial(context.run, fn, *args, **kwargs)
        with _translated():
            return await loop.run_in_executor(self._executor, call)

    async def _read(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        def read() -> _T:
            return self.call_read(fn, *args, **kwargs)

        return await self._run(read)

    async def _claim(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """A claim: a read, but one that hands out work, so a fenced view checks its lease first (in the
        same transaction) like a write: a worker that lost the org gets no more of its work."""
        scope = self._scope

        def claim() -> _T:
            with _translated(), self.engine.connect() as connection:
                options = {READ_ONLY: True, ORG_SCOPE: scope}
                entered = connection.execution_options(**options)
                workers.check_fence(entered)
                return fn(entered, *args, **kwargs)

        return await self._run(claim)

    async def _write(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run a topic function in the worker thread, in a write transaction it may share with the writes
        queued next (group commit, lanes.py); done once that transaction committed."""
        scope = self._scope

        def job(connection: Connection) -> _T:
            # Whatever must hold in the same transaction as the work is checked here, first.
            return fn(_entered(connection, scope), *args, **kwargs)

        context = contextvars.copy_context()  # keep structlog's bound context in the worker
        write = _WriteJob(scope, lambda connection: context.run(job, connection))
        future = self._threads.submit_write(self._lane, write)
        with _translated():
            return await asyncio.wrap_future(future)

    def _run_group(self, jobs: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        """Run write jobs in one transaction and one commit (in the worker thread). Several jobs each get a
        savepoint, so that one failing rolls back alone; a failure of the transaction fails them all."""
        with _translated(), self.engine.begin() as connection:
            # The fenced jobs' lease rows, locked first and in org order: each job's fence check would
            # otherwise lock them in job order, and a worker's lease round (which locks its rows in org order)
            # could deadlock with this transaction.
            fenced = {j.scope.key for j in jobs if isinstance(j, _WriteJob) and j.scope.fence is not None}
            workers.lock_leases(connection, sorted(k for k in fenced if k is not None))
            if len(jobs) == 1:
                return [(True, jobs[0](connection))]
            outcomes: list[tuple[bool, Any]] = []
            for job in jobs:
                try:
                    with connection.begin_nested():
                        outcomes.append((True, job(connection)))
                except (OperationalError, InterfaceError):
                    raise  # the transaction itself is in doubt
                except Exception as exc:
                    outcomes.append((False, exc))
            return outcomes

    async def close(self) -> None:
        """Finish queued calls, stop the worker thread and close the engine's connections (idempotent)."""
        await asyncio.get_running_loop().run_in_executor(None, self.dispose)

    def dispose(self) -> None:
        """Finish queued calls, stop the worker thread and close every pooled connection (idempotent; a
        scoped view leaves both to the ledger it came from)."""
        if not self._owns_engine:
            return
        self._threads.shutdown(wait=True)
        self.engine.dispose()

    async def ping(self) -> None:
        """Run a trivial query (health check); raises when the ledger is unreachable."""
        await self._read(lambda connection: connection.execute(text("SELECT 1")))

    # ------------------------------------------------------------------ checkpoints and ingest

    async def read_checkpoint(self, stream: str) -> str | None:
        """The stored position of a stream, or None."""
        return await self._read(checkpoints.read_position, stream)

    async def write_checkpoint(self, stream: str, position: str) -> None:
        """Store a stream position (e.g. a Salesforce channel's replay id)."""
        await self._write(checkpoints.write_position, stream, position, self._clock())

    async def apply_source_batch(self, batch: IngestBatch) -> IngestSummary:
        """Apply source transactions and advance the 'source' checkpoint, all in one transaction."""
        return await self._write(ingest.apply_batch, batch)

    async def link_orgs(self, link_ids: Collection[str]) -> dict[str, str | None]:
        """The org (None: the default org) of each of these links the ledger knows."""
        return await self._read(ingest.link_orgs, list(link_ids))

    # ------------------------------------------------------------------ outbox

    async def claim_link_work(self, now: datetime, limit: int) -> list[LinkWork]:
        """Links whose Mogli Event must be written."""
        return await self._claim(outbox.claim_links, now, limit)

    async def claim_activity_work(
        self, now: datetime, limit: int, exclude: Collection[str] = ()
    ) -> list[ActivityWork]:
        """Activities ready to be written or deleted, skipping the booking ids in `exclude`."""
        return await self._claim(outbox.claim_activities, now, limit, exclude)

    async def record_link_outcomes(self, outcomes: Sequence[LinkOutcome], now: datetime) -> None:
        """Record Mogli Event push outcomes (version-compared) and journal them (a view: its org's only)."""
        recorded = await self._write(outbox.record_links, outcomes, now) if outcomes else []
        self._observed("link", [o.state for o in recorded])

    async def record_activity_outcomes(self, outcomes: Sequence[ActivityOutcome], now: datetime) -> None:
        """Record Event push outcomes (version-compared) and journal them (a view: its org's only)."""
        recorded = await self._write(outbox.record_activities, outcomes, now) if outcomes else []
        self._observed("activity", [o.state for o in recorded])

    def _observed(self, entity: str, states: Sequence[OutcomeState]) -> None:
        for observer in self._outcome_observers:
            observer(entity, states)

    async def requeue(
        self,
        booking_ids: Collection[str] | None = None,
        all_failed: bool = False,
        now: datetime | None = None,
        requested_by: str = "admin",
    ) -> int:
        """Failed rows back to pending; returns how many rows moved."""
        when = now or self._clock()
        return await self._write(requeues.requeue, booking_ids, all_failed, when, requested_by)

    async def mark_deleted_in_salesforce(
        self, salesforce_ids: Collection[str], now: datetime | None = None
    ) -> int:
        """Rows whose Salesforce record was deleted there; returns how many rows changed."""
        return await self._write(requeues.mark_deleted_in_salesforce, salesforce_ids, now or self._clock())

    # ------------------------------------------------------------------ reads

    async def counts(self) -> dict[str, int]:
        """Rows by state: 'activities.<state>' and 'links.<state>'."""
        return await self._read(queries.counts)

    async def list_links(
        self,
        link_id: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> list[LinkRecord]:
        """Links, most recently changed first."""
        return await self._read(queries.list_links, link_id=link_id, state=state, since=since, limit=limit)

    async def list_activities(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        limit: int | None = queries.DEFAULT_LIMIT,
    ) -> list[ActivityRecord]:
        """Activities, most recently changed first (`limit=None`: all)."""
        return await self._read(
            queries.list_activities,
            link_id=link_id,
            booking_id=booking_id,
            state=state,
            since=since,
            limit=limit,
        )

    async def list_journal(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = queries.DEFAULT_LIMIT,
        entity: str | None = None,
        key: str | None = None,
    ) -> list[JournalEntry]:
        """Journal entries, newest first."""
        return await self._read(
            journal.list_journal,
            entity=entity,
            key=key,
            link_id=link_id,
            booking_id=booking_id,
            since=since,
            limit=limit,
        )

    async def list_failures(
        self,
        link_id: str | None = None,
        booking_id: str | None = None,
        since: datetime | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> list[FailureRecord]:
        """Failed links and activities, newest first."""
        return await self._read(
            queries.list_failures, link_id=link_id, booking_id=booking_id, since=since, limit=limit
        )

    async def get_link(self, link_id: str) -> LinkRecord | None:
        """One link, or None."""
        return await self._read(queries.get_link, link_id)

    async def get_activity(self, booking_id: str) -> ActivityRecord | None:
        """One activity, or None."""
        return await self._read(queries.get_activity, booking_id)

    async def mirror_state(self, booking_ids: Collection[str]) -> dict[str, ActivityRecord]:
        """The activities with these booking ids, keyed by booking id."""
        return await self._read(queries.activities_by_id, booking_ids)

    async def append_journal(self, entries: Sequence[JournalEntry]) -> None:
        """Append journal entries (inbound, reconcile, admin)."""
        if entries:
            await self._write(journal.append_journal, entries)

    # ------------------------------------------------------------------ reconciliation runs and reports

    async def start_reconciliation(self, requested_by: str, scope: JsonObject, dry_run: bool) -> int:
        """Open a reconciliation run; returns its id."""
        return await self._write(runs.start_run, requested_by, scope, dry_run, self._clock())

    async def finish_reconciliation(self, run_id: int, state: str, summary: JsonObject) -> None:
        """Close a reconciliation run."""
        await self._write(runs.finish_run, run_id, state, summary, self._clock())

    async def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """One reconciliation run, or None."""
        return await self._read(runs.get_run, run_id)

    async def unfinished_reconciliations(self, requested_by: str) -> list[ReconciliationRun]:
        """A requester's runs that stopped before their last chunk (paused, or left running), oldest first."""
        return await self._read(runs.unfinished_runs, requested_by)

    async def add_drift(self, items: Sequence[DriftItem]) -> None:
        """Store what a run found."""
        if items:
            await self._write(runs.add_drift, items)

    async def list_drift(
        self,
        run_id: int | None = None,
        link_id: str | None = None,
        booking_id: str | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> list[DriftItem]:
        """Drift items, newest first."""
        return await self._read(
            runs.list_drift, run_id=run_id, link_id=link_id, booking_id=booking_id, limit=limit
        )

    async def list_reconciliations(self, limit: int = 10) -> list[ReconciliationRun]:
        """The newest reconciliation runs first."""
        return await self._read(reports.list_runs, limit)

    async def drift_totals(self) -> DriftTotals:
        """Drift items found and repaired over every run."""
        return await self._read(reports.drift_totals)

    async def list_checkpoints(self) -> dict[str, str]:
        """Every stream position by stream name."""
        return await self._read(reports.list_checkpoints)

    # ------------------------------------------------------------------ reconciliation's reads and repairs

    async def activity_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[BookingKey]:
        """Activities in scope (see reconciliation.activity_ids)."""
        return await self._read(reconciliation.activity_ids, links, bookings, since, until)

    async def link_ids(self) -> list[str]:
        """Every link id the ledger knows, sorted."""
        return await self._read(reconciliation.link_ids)

    async def changed_ids(
        self, since: datetime, until: datetime | None
    ) -> tuple[list[BookingKey], list[str]]:
        """Activities and link ids whose ledger row changed in [since, until)."""
        return await self._read(reconciliation.changed_ids, since, until)

    async def links(self, ids: Collection[str]) -> dict[str, LinkRecord]:
        """The links with these ids."""
        return await self._read(reconciliation.links_by_id, ids)

    async def activities(self, ids: Collection[str]) -> dict[str, ActivityRecord]:
        """The activities with these booking ids."""
        return await self._read(queries.activities_by_id, ids)

    async def users(self, ids: Collection[str]) -> dict[str, str | None]:
        """User id -> Salesforce user id, for the users with these ids the ledger knows."""
        return await self._read(reconciliation.users_by_id, ids)

    async def journal_mark(self) -> int:
        """The newest journal entry's id, taken before a re-mirror reads the scheduler."""
        return await self._read(reconciliation.journal_mark)

    async def remirror(self, changes: Sequence[SourceChange], mark: int) -> set[MirrorKey]:
        """Apply re-read scheduler rows through ingest, except rows streamed after `mark` (returned)."""
        return await self._write(reconciliation.remirror, changes, mark, self._clock())

    async def requeue_drifted(
        self,
        *,
        booking_ids: Collection[str],
        link_ids: Collection[str],
        relink_ids: Collection[str],
        run_id: int,
    ) -> int:
        """Push drifted rows again (see reconciliation.requeue_drifted); returns how many were queued."""
        return await self._write(
            reconciliation.requeue_drifted,
            booking_ids=booking_ids,
            link_ids=link_ids,
            relink_ids=relink_ids,
            now=self._clock(),
            run_id=run_id,
        )

    async def mark_deleted(self, salesforce_ids: Collection[str], run_id: int) -> int:
        """Record deletes the policy keeps; returns how many rows changed."""
        return await self._write(reconciliation.mark_deleted, salesforce_ids, self._clock(), run_id)

    async def accept_owners(self, owners: Mapping[str, str], run_id: int) -> int:
        """Record Event owners the policy accepts; returns how many rows changed."""
        return await self._write(reconciliation.accept_owners, owners, self._clock(), run_id)

    async def record_chunk(self, run_id: int, items: Sequence[DriftItem], summary: JsonObject) -> None:
        """Store a chunk's drift with the run's progress, together."""
        await self._write(reconciliation.record_chunk, run_id, items, summary)

    async def find_resumable(self, scope: JsonObject, dry_run: bool) -> ReconciliationRun | None:
        """The newest run with this scope that stopped before its last chunk, or None."""
        return await self._read(reconciliation.find_resumable, scope, dry_run)

    async def resume(self, run_id: int) -> None:
        """Mark a paused run running again."""
        await self._write(reconciliation.resume_run, run_id)

    # ------------------------------------------------------------------ inbound (Salesforce changes)

    async def find_inbound_activities(
        self, salesforce_ids: Collection[str], booking_ids: Collection[str] = ()
    ) -> list[KnownActivity]:
        """Activities by Event id or booking id (see ledger/inbound.py)."""
        return await self._read(inbound.find_activities, salesforce_ids, booking_ids)

    async def activities_of_people(self, who_ids: Collection[str]) -> list[KnownActivity]:
        """Activities last written with one of these WhoIds."""
        return await self._read(inbound.activities_of_people, who_ids)

    async def find_inbound_links(
        self, salesforce_ids: Collection[str], link_ids: Collection[str] = ()
    ) -> list[KnownLink]:
        """Links by Mogli Event id or link id."""
        return await self._read(inbound.find_links, salesforce_ids, link_ids)

    async def user_for_salesforce_id(self, salesforce_user_id: str) -> str | None:
        """The scheduler user connected to this Salesforce user, or None."""
        return await self._read(inbound.user_for_salesforce_id, salesforce_user_id)

    async def apply_inbound(self, batch: InboundBatch) -> None:
        """Write the effects of one Salesforce change with its channel position, in one transaction."""
        await self._write(inbound.apply_batch, batch, self._clock())

    async def recreate_deleted_links(self) -> list[str]:
        """Links whose Mogli Event was deleted in Salesforce and that have a new booking: queued again."""
        return await self._write(inbound.recreate_deleted_links, self._clock())

    async def has_deleted_links(self) -> bool:
        """Whether a link whose Mogli Event was deleted in Salesforce still waits for a new booking."""
        return await self._read(inbound.has_deleted_links)

    # ------------------------------------------------------------------ orgs (every org, whatever the scope)

    async def list_orgs(self) -> list[OrgRecord]:
        """Every `orgs` row, the default org first."""
        return await self._read(orgs.list_orgs)

    async def get_org(self, org_id: str) -> OrgRecord | None:
        """One org ('default': the default org), or None."""
        return await self._read(orgs.get_org, org_id)

    async def set_org_state(self, org_id: str, state: OrgState, reason: str | None) -> bool:
        """Move an org to `state` with its reason; True (and a journal entry) only when that changed it."""
        return await self._write(orgs.set_state, org_id, state, reason, self._clock())

    async def record_org_identity(self, org_id: str, salesforce_org_id: str, instance_url: str) -> None:
        """Store the 00D id and instance URL a token named for the org."""
        await self._write(orgs.record_identity, org_id, salesforce_org_id, instance_url, self._clock())

    async def record_org_api(self, org_id: str, used: int, limit: int) -> None:
        """Store the org's daily API requests as its last Sforce-Limit-Info said."""
        await self._write(orgs.record_api, org_id, used, limit, self._clock())

    async def org_counts(self) -> dict[str, OrgCounts]:
        """Pending, failed and synced links and activities by org ('default' for the default org)."""
        return await self._read(orgs.org_counts)

    async def org_positions(self) -> dict[str, dict[str, str]]:
        """Change-event positions by org ('default' for the default org), then channel."""
        return await self._read(orgs.org_positions)

    # ------------------------------------------------------------------ several workers (unscoped ledger)

    async def heartbeat(
        self, worker_id: str, host: str, pid: int, *, reader: bool, draining: bool, lease_seconds: float
    ) -> None:
        """Upsert this worker's row, alive until the database's now() + lease."""
        await self._write(
            workers.heartbeat,
            worker_id,
            host,
            pid,
            reader=reader,
            draining=draining,
            lease_seconds=lease_seconds,
        )

    async def lease_round(self, worker_id: str, *, lease_seconds: float, draining: bool) -> LeaseRound:
        """Renew, take and name the surplus of this worker's org leases, in one transaction (workers.py)."""
        return await self._write(
            workers.lease_round, worker_id, lease_seconds=lease_seconds, draining=draining
        )

    async def release_leases(self, worker_id: str, org_ids: Collection[str]) -> None:
        """Give back these orgs' leases (those this worker holds; epochs kept)."""
        await self._write(workers.release_leases, worker_id, list(org_ids))

    async def leave(self, worker_id: str) -> None:
        """Release every lease of this worker and delete its row (after a drained stop)."""
        await self._write(workers.leave, worker_id)

    async def list_workers(self) -> list[WorkerRecord]:
        """Live and recently expired workers, each with the orgs it holds under a live lease."""
        return await self._read(workers.list_workers)

    async def org_workers(self) -> dict[str, str | None]:
        """Every org -> the worker holding a live lease on it (None: nobody)."""
        return await self._read(workers.org_workers)

"""Several workers on one PostgreSQL ledger (issue 14): membership, org leases, permits and the reader.

With tenancy on and a PostgreSQL ledger every `run` is a worker; PostgreSQL is the only coordinator (README,
"Several workers"). This module is the daemon's side of that protocol:

- `WorkerMembership` renews this worker's row and its org leases every `tenancy.worker_round_seconds`
  (`Ledger.heartbeat` + `Ledger.lease_round`, each one transaction on the database's clock), hands the fleet
  the orgs it holds with their epochs, and releases what it holds above its share once the fleet has drained
  those orgs. On stop it says it is draining (it takes nothing more, keeps renewing what it holds while the
  fleet drains) and then leaves: the others take its orgs at their next round.
- `Permits` answers "may this worker call Salesforce for this org now?" from its own monotonic clock only: the
  org is held with this epoch and the round that renewed it started less than the lease minus a margin ago.
  A worker paused by the OS or cut off from the ledger therefore stops its calls before its lease can expire
  in the database, and so before another worker can take the org.
- `ReaderElection` runs the change stream's ingest only while this worker holds the ledger's advisory lock
  (bridge/ledger/lock.py); the lock dies with its session, so another worker takes over when the reader dies.
  A reader that is paused by the OS or cut off keeps its session, and so the lock: its lock session carries
  the worker's id (`application_name`), and once that worker's row has expired in `workers` another worker
  ends the session (`pg_terminate_backend`, `end_expired_reader`) and takes the lock.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.aio import sleep_or_stop
from bridge.config import Settings
from bridge.errors import FatalError, LedgerUnavailable, TransientError

if TYPE_CHECKING:
    from bridge.ledger.lock import LockHealth
    from bridge.records.ledger import LeaseRound
    from bridge.source.reader import SourceStats

log = structlog.get_logger(__name__)

PERMIT_MARGIN_SECONDS = 2.0  # a permit ends this long before the lease the round renewed
READER_TRY_SECONDS = 1.0  # how often a worker that is not the reader tries the lock
READER_CHECK_SECONDS = 1.0  # how often the reader checks that its lock is still its own
EXPIRED_READER_CHECK_SECONDS = 5.0  # how often a worker that is not the reader looks for an expired one
READER_APPLICATION = "mb-reader:"  # application_name prefix of the reader lock's session
APPLICATION_NAME_BYTES = 63  # PostgreSQL cuts application_name to NAMEDATALEN - 1
LEAVE_WAIT_SECONDS = 18.0  # the fleet's drain (15 s at most) and a round, before leaving anyway
NOT_PERMITTED_RETRY_SECONDS = 1.0


class NotPermitted(TransientError):
    """This worker may not call Salesforce for the org now: it does not hold the org's lease, or the round
    that renewed it is too long ago (paused, or cut off from the ledger). Nothing is wrong with the data."""

    def __init__(self, org_id: str) -> None:
        super().__init__(
            f"org {org_id} is not this worker's to serve now (its lease is not held or not renewed in time)",
            retry_after=NOT_PERMITTED_RETRY_SECONDS,
        )
        self.org_id = org_id


def worker_mode(settings: Settings) -> bool:
    """Whether `run` is a worker among several: tenancy on and a PostgreSQL ledger."""
    from sqlalchemy.engine import make_url

    if not settings.tenancy.enabled:
        return False
    return make_url(settings.ledger.url).get_backend_name() in ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Who this worker is in `workers`: `worker_id` is unique even for a pid reused on one host."""

    worker_id: str
    host: str
    pid: int

    @classmethod
    def of_this_process(cls) -> WorkerIdentity:
        """The identity of the running process: '<host>-<pid>-<4 random hex>'."""
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}-{pid}-{secrets.token_hex(2)}", host, pid)


class Permits:
    """The orgs this worker may call Salesforce for, and until when, by its own monotonic clock."""

    def __init__(
        self,
        worker_id: str,
        lease_seconds: float,
        *,
        margin: float = PERMIT_MARGIN_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker_id = worker_id
        self._valid_for = max(lease_seconds - margin, 0.0)
        self._monotonic = monotonic
        self._held: dict[str, int] = {}
        self._until = float("-inf")

    @property
    def held(self) -> dict[str, int]:
        """The orgs held after the last round, with their epochs (a copy)."""
        return dict(self._held)

    def renewed(self, held: Mapping[str, int], started: float) -> None:
        """A round that started at `started` (monotonic, taken before the ledger was asked) renewed `held`:
        the database's lease runs from its own now(), which is later, so ours ends first."""
        self._held = dict(held)
        self._until = started + self._valid_for

    def drop(self, org_ids: Iterable[str]) -> None:
        """These orgs were released: no permit for them from now on."""
        for org_id in org_ids:
            self._held.pop(org_id, None)

    def clear(self) -> None:
        """This worker left: no permit for any org."""
        self._held = {}
        self._until = float("-inf")

    def epoch(self, org_id: str) -> int | None:
        """The epoch this worker holds the org at, if it holds it."""
        return self._held.get(org_id)

    def permit(self, org_id: str, epoch: int | None = None) -> bool:
        """True while the org is held (at `epoch`, when given) and the last renewal is recent enough."""
        held = self._held.get(org_id)
        if held is None or (epoch is not None and held != epoch):
            return False
        return self._monotonic() < self._until

    def check(self, org_id: str, epoch: int | None = None) -> None:
        """Raise NotPermitted unless `permit(org_id, epoch)`: the hook before every Salesforce request."""
        if not self.permit(org_id, epoch):
            raise NotPermitted(org_id)


class MembershipLedger(Protocol):
    """The ledger operations of membership (bridge.ledger.repository.Ledger, unscoped)."""

    async def heartbeat(
        self, worker_id: str, host: str, pid: int, *, reader: bool, draining: bool, lease_seconds: float
    ) -> None:
        """Upsert this worker's row; its lease runs until the database's now() + lease_seconds."""
        ...

    async def lease_round(self, worker_id: str, *, lease_seconds: float, draining: bool) -> LeaseRound:
        """Renew, take and report this worker's org leases (one transaction)."""
        ...

    async def release_leases(self, worker_id: str, org_ids: list[str]) -> None:
        """Give these orgs' leases up (their epochs stay)."""
        ...

    async def leave(self, worker_id: str) -> None:
        """Release every lease of the worker and delete its row."""
        ...


class Assignee(Protocol):
    """The fleet, as membership sees it."""

    def assign(self, held: Mapping[str, int]) -> None:
        """Serve exactly these orgs, each with a runtime of this epoch (does not wait for the change)."""
        ...

    def busy(self, org_id: str) -> bool:
        """The org still has a runtime, running or draining."""
        ...

    async def wait_stopped(self, seconds: float) -> bool:
        """Wait up to `seconds` for the fleet to have stopped every runtime; True when it has."""
        ...


class WorkerMembership:
    """This worker's row and org leases, renewed every round; the fleet serves what it holds."""

    def __init__(
        self,
        ledger: MembershipLedger,
        identity: WorkerIdentity,
        permits: Permits,
        fleet: Assignee,
        *,
        lease_seconds: float,
        round_seconds: float,
        is_reader: Callable[[], bool] = lambda: False,
        monotonic: Callable[[], float] = time.monotonic,
        leave_wait_seconds: float = LEAVE_WAIT_SECONDS,
    ) -> None:
        self._ledger = ledger
        self.identity = identity
        self._permits = permits
        self._fleet = fleet
        self._lease_seconds = lease_seconds
        self._round_seconds = round_seconds
        self._is_reader = is_reader
        self._monotonic = monotonic
        self._leave_wait_seconds = leave_wait_seconds
        self.draining = False
        self.rounds = 0  # rounds that reached the ledger

    @property
    def worker_id(self) -> str:
        """This worker's id in `workers` and `org_leases`."""
        return self.identity.worker_id

    async def run(self, stop: asyncio.Event) -> None:
        """A round every `round_seconds` until stop; then drain and leave."""
        log.info("workers.joined", worker=self.worker_id, host=self.identity.host, pid=self.identity.pid)
        try:
            while not stop.is_set():
                await self.round()
                if await sleep_or_stop(stop, self._round_seconds):
                    break
        finally:
            await self._drain_and_leave()

    async def round(self) -> LeaseRound | None:
        """One heartbeat and lease round; the fleet is told what to serve and surplus orgs drained by it
        are released. None when the ledger could not be reached (the permits then run out by themselves)."""
        started = self._monotonic()
        me = self.identity
        try:
            await self._ledger.heartbeat(
                me.worker_id,
                me.host,
                me.pid,
                reader=self._is_reader(),
                draining=self.draining,
                lease_seconds=self._lease_seconds,
            )
            leases = await self._ledger.lease_round(
                me.worker_id, lease_seconds=self._lease_seconds, draining=self.draining
            )
        except LedgerUnavailable as exc:
            log.warning("workers.round_failed", worker=me.worker_id, error=str(exc))
            return None
        self.rounds += 1
        before = self._permits.held
        self._permits.renewed(leases.held, started)
        surplus = set(leases.surplus)
        if not self.draining:
            self._fleet.assign({org: epoch for org, epoch in leases.held.items() if org not in surplus})
        await self._release([org for org in leases.surplus if not self._fleet.busy(org)])
        if before != leases.held:
            log.info(
                "workers.leases",
                worker=me.worker_id,
                orgs=len(leases.held),
                taken=sorted(set(leases.held) - set(before)),
                gone=sorted(set(before) - set(leases.held)),
                surplus=sorted(surplus),
                live_workers=leases.live_workers,
                share=leases.share,
            )
        return leases

    async def _release(self, org_ids: list[str]) -> None:
        """Give drained surplus orgs back (the fleet stopped their runtimes; no permit for them now)."""
        if not org_ids:
            return
        self._permits.drop(org_ids)
        try:
            await self._ledger.release_leases(self.worker_id, org_ids)
        except LedgerUnavailable as exc:  # they expire by themselves; nobody serves them here meanwhile
            log.warning("workers.release_failed", worker=self.worker_id, error=str(exc))
            return
        log.info("workers.released", worker=self.worker_id, orgs=sorted(org_ids))

    async def _drain_and_leave(self) -> None:
        """Say so (share 0: nothing more is taken), keep renewing what is held while the fleet drains its
        runtimes (calls in flight finish and are recorded under the lease), then leave."""
        self.draining = True
        log.info("workers.draining", worker=self.worker_id, orgs=len(self._permits.held))
        deadline = self._monotonic() + self._leave_wait_seconds
        while True:
            await self.round()
            if await self._fleet.wait_stopped(min(self._round_seconds, self._leave_wait_seconds)):
                break
            if self._monotonic() >= deadline:
                log.warning("workers.leave_before_drained", worker=self.worker_id)
                break
        self._permits.clear()
        try:
            await self._ledger.leave(self.worker_id)
        except LedgerUnavailable as exc:
            log.warning("workers.leave_failed", worker=self.worker_id, error=str(exc))
            return
        log.info("workers.left", worker=self.worker_id)


def reader_lock_url(url: str, worker_id: str) -> str:
    """The ledger URL of the reader lock's connection: its session named after the worker, so that the
    others can tell whose session holds the lock."""
    from bridge.ledger.engine import normalise_url

    name = (READER_APPLICATION + worker_id).encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore")
    parsed = normalise_url(url).update_query_dict({"application_name": name})
    return parsed.render_as_string(hide_password=False)


_EXPIRED_READER = """
SELECT a.pid, w.worker_id, pg_terminate_backend(a.pid) AS ended
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
JOIN workers w ON a.application_name = left(:prefix || w.worker_id, :name_bytes)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = :key
  AND w.lease_until < now()
"""


def end_expired_reader(url: str) -> list[str]:
    """End the session holding the reader lock when its worker's lease has expired in `workers` (a reader
    paused by the OS or cut off from the ledger keeps its session alive, and so the lock); PostgreSQL then
    releases the lock and the next try takes it. The ids of the workers whose session was ended."""
    import sqlalchemy as sa

    from bridge.ledger.engine import normalise_url
    from bridge.ledger.lock import ADVISORY_KEY

    engine = sa.create_engine(normalise_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(_EXPIRED_READER),
                {"prefix": READER_APPLICATION, "name_bytes": APPLICATION_NAME_BYTES, "key": ADVISORY_KEY},
            ).all()
    finally:
        engine.dispose()
    return [str(row.worker_id) for row in rows if row.ended]


class ReaderLock(Protocol):
    """The ledger's advisory lock (bridge.ledger.lock.InstanceLock); blocking calls, run in a thread."""

    def try_acquire(self) -> bool:
        """Take the lock if free; never blocks."""
        ...

    def verify(self) -> LockHealth:
        """Whether the lock is still this process's."""
        ...

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        ...


Ingest = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class ReaderElection:
    """Ingest the change stream only while this worker holds the lock; a reader that loses it stops ingesting
    and goes on as a worker (it tries again every READER_TRY_SECONDS, like every other worker)."""

    def __init__(
        self,
        lock: ReaderLock,
        ingest: Ingest,
        *,
        try_seconds: float = READER_TRY_SECONDS,
        check_seconds: float = READER_CHECK_SECONDS,
        end_expired: Callable[[], list[str]] | None = None,
        expired_check_seconds: float = EXPIRED_READER_CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = lock
        self._ingest = ingest  # one term of ingest: a fresh source from the stored position, until its stop
        self._try_seconds = try_seconds
        self._check_seconds = check_seconds
        self._end_expired = end_expired  # ends an expired reader's lock session (end_expired_reader)
        self._expired_check_seconds = expired_check_seconds
        self._monotonic = monotonic
        self._next_expired_check = float("-inf")
        self.reading = False
        self.terms = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Try the lock until stop; read the stream while it is held."""
        try:
            while not stop.is_set():
                if await self._try_lock():
                    try:
                        await self._term(stop)
                    except LedgerUnavailable as exc:  # e.g. its stored position could not be read
                        log.warning("workers.reader_ledger_unavailable", error=str(exc))
                        await asyncio.to_thread(self._lock.release)  # another worker may read meanwhile
                else:
                    await self._end_expired_reader()
                if await sleep_or_stop(stop, self._try_seconds):
                    return
        finally:
            await asyncio.to_thread(self._lock.release)

    async def _try_lock(self) -> bool:
        """One try of the lock; an unreachable ledger is a 'no' (nobody else can take it either)."""
        from sqlalchemy.exc import DBAPIError

        try:
            return await asyncio.to_thread(self._lock.try_acquire)
        except DBAPIError as exc:
            log.warning("workers.reader_lock_unreachable", error=type(exc.orig or exc).__name__)
            return False

    async def _end_expired_reader(self) -> None:
        """Now and then: end the lock session of a reader whose worker expired (paused, or cut off)."""
        from sqlalchemy.exc import DBAPIError

        if self._end_expired is None or self._monotonic() < self._next_expired_check:
            return
        self._next_expired_check = self._monotonic() + self._expired_check_seconds
        try:
            ended = await asyncio.to_thread(self._end_expired)
        except DBAPIError as exc:
            log.warning("workers.expired_reader_check_failed", error=type(exc.orig or exc).__name__)
            return
        for worker_id in ended:
            log.warning("workers.expired_reader_ended", expired_worker=worker_id)

    async def _term(self, stop: asyncio.Event) -> None:
        """Read until stop or until the lock is no longer this worker's."""
        from bridge.ledger.lock import LockHealth

        self.terms += 1
        self.reading = True
        log.info("workers.reader_elected", term=self.terms)
        term_stop = asyncio.Event()
        task = asyncio.create_task(self._ingest(term_stop), name="reader.ingest")
        lost: LockHealth | None = None
        stopped = asyncio.create_task(stop.wait(), name="reader.stop")
        try:
            while not task.done() and not stop.is_set():
                await asyncio.wait(
                    [task, stopped], timeout=self._check_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if task.done() or stop.is_set():
                    break
                health = await asyncio.to_thread(self._lock.verify)
                if health is not LockHealth.HELD:
                    lost = health
                    break
        finally:
            stopped.cancel()
            ended_by_itself = task.done()
            term_stop.set()
            try:
                await task
            finally:
                self.reading = False
        if lost is not None:
            log.warning("workers.reader_lost", term=self.terms, lock=lost.value)
            await asyncio.to_thread(self._lock.release)
        elif ended_by_itself and not stop.is_set():
            raise FatalError("the change stream's ingest ended unexpectedly")


class ReaderView:
    """The admin probe's view of the change stream as this worker reads it: the current term's source and
    ingestor while it is the reader, a stream not connected here otherwise."""

    def __init__(self) -> None:
        self.source: SourceLike | None = None
        self.ingestor: IngestorLike | None = None

    def reading(self, source: SourceLike | None, ingestor: IngestorLike | None) -> None:
        """A term began (both given) or ended (both None)."""
        self.source, self.ingestor = source, ingestor

    @property
    def stats(self) -> SourceStats:
        """The current term's counters; not connected while another worker reads."""
        from bridge.source.reader import SourceStats

        if self.source is not None:
            return self.source.stats
        return SourceStats(
            connected=False,
            last_received_lsn=0,
            acked_lsn=0,
            reconnects=0,
            last_commit_time=None,
            queue_depth=0,
            paused=False,
        )

    @property
    def applied_lsn(self) -> int | None:
        """The newest LSN this worker's ingest applied in its current term."""
        return self.ingestor.applied_lsn if self.ingestor is not None else None

    @property
    def last_commit_time(self) -> datetime | None:
        """The commit time of the newest transaction applied in the current term."""
        return self.ingestor.last_commit_time if self.ingestor is not None else None


class SourceLike(Protocol):
    """A replication source's counters (bridge.source.reader.ReplicationSource)."""

    @property
    def stats(self) -> SourceStats:
        """Current counters."""
        ...


class IngestorLike(Protocol):
    """The ingest's progress (bridge.pipeline.ingest.Ingestor)."""

    applied_lsn: int | None
    last_commit_time: datetime | None

"""Several workers on one PostgreSQL ledger (issue 14): membership, org leases and permits.

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

Which worker reads the change stream is bridge/tenancy/reader.py's business.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from bridge.aio import sleep_or_stop
from bridge.config import Settings
from bridge.errors import LedgerUnavailable, TransientError

if TYPE_CHECKING:
    from bridge.records.ledger import LeaseRound

log = structlog.get_logger(__name__)

PERMIT_MARGIN_SECONDS = 2.0  # a permit ends this long before the lease the round renewed
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

"""The fleet: one runtime per served org, started, stopped and restarted as the `orgs` table changes.

The ingest writes organizations and connections from the change stream into `orgs` in the same transaction
as the rest of the batch, and wakes the fleet (`wake`); the fleet then aligns its runtimes with the table: a
newly connected org gets a runtime, a disconnected one drains and stops, a changed login URL or integration
user restarts its runtime with a new token. Nothing needs a restart of the daemon. The default org of
`[salesforce]` is always served.

Several workers (issue 14). With `permits`, the fleet serves only the orgs membership assigns it (`assign`:
org -> epoch of this worker's lease, bridge/tenancy/workers.py): each runtime's ledger is fenced with
(worker, epoch), and each Salesforce request first asks the permit. A new epoch is a new runtime; a runtime
that ended because its lease was lost is not started again at that epoch.

Fairness. Every org has its own pusher with its own calls in flight (`tenancy.org_max_in_flight`), its own
retry and back-off state and its own API budget, so a backlog in one org is only ever a queue in that org: the
other orgs' pushers claim and write at the same time. What they share is the ledger's one worker thread, where
each org has at most a few statements waiting, and the HTTP connection pool (unbounded per host).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import structlog

from bridge.aio import next_or_stop
from bridge.config import Settings
from bridge.errors import LedgerUnavailable, SalesforceUnavailable
from bridge.records.ledger import DEFAULT_ORG, OrgRecord, OrgState
from bridge.records.outbound import ApiUsage
from bridge.tenancy.connect import OrgUnusable, org_settings, pause_reason
from bridge.tenancy.parts import OrgParts, Shared
from bridge.tenancy.runtime import OrgRuntime

if TYPE_CHECKING:
    from bridge.pipeline.gaps import TakingTurns
    from bridge.pipeline.reconcile import ReconcileOptions, ReconcileSummary
    from bridge.records.ledger import Fence
    from bridge.tenancy.workers import Permits

log = structlog.get_logger(__name__)

ALIGN_SECONDS = 30.0  # the `orgs` table is read at least this often, woken or not
STOP_SECONDS = 15.0  # a stopping runtime's parts drain within this, or are cancelled


@dataclass(slots=True)
class _Running:
    runtime: OrgRuntime
    task: asyncio.Task[None]
    stop: asyncio.Event
    connection: tuple[str | None, str | None]  # login_url, username it was started with
    epoch: int | None = None  # the lease epoch it serves under (several workers)


def serves(org: OrgRecord) -> bool:
    """Whether an org gets a runtime: the default org always, another while it is connected."""
    return org.org_id == DEFAULT_ORG or (org.connection == "connected" and org.state != "disconnected")


class OrgFleet:
    """Keeps one OrgRuntime per served org; routes new work to the org's pusher."""

    def __init__(
        self,
        settings: Settings,
        http: aiohttp.ClientSession,
        shared: Shared,
        *,
        idle_poll_seconds: float | None = None,
        permits: Permits | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._shared = shared
        self._idle_poll_seconds = idle_poll_seconds
        self._running: dict[str, _Running] = {}
        self._stopping: set[str] = set()  # orgs whose runtime is draining
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()  # every runtime stopped after `run` was told to stop
        self._permits = permits
        # Several workers: the orgs this worker holds, with their epochs (None: one daemon serves every org).
        self._assigned: dict[str, int] | None = {} if permits is not None else None
        self._lost: dict[str, int] = {}  # org -> the epoch whose runtime lost its lease
        self._drains: set[asyncio.Task[None]] = set()  # stops running in the background (several workers)

    def assign(self, held: Mapping[str, int]) -> None:
        """Serve exactly these orgs (org -> lease epoch) from the next alignment on, which this wakes."""
        self._assigned = dict(held)
        self._wake.set()

    def busy(self, org_id: str) -> bool:
        """The org has a runtime, running or draining."""
        return org_id in self._running or org_id in self._stopping

    def serves(self, org_id: str | None) -> bool:
        """Whether this process runs the org now."""
        return (org_id or DEFAULT_ORG) in self._running

    async def wait_stopped(self, seconds: float) -> bool:
        """Wait up to `seconds` until `run` has stopped every runtime; True when it has."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        return self._stopped.is_set()

    @property
    def runtimes(self) -> dict[str, OrgRuntime]:
        """The runtimes now, by org id ('default' for the org of `[salesforce]`)."""
        return {org_id: r.runtime for org_id, r in self._running.items()}

    def runtime(self, org_id: str | None) -> OrgRuntime | None:
        """The runtime of an org (None or 'default': the default org), if it has one."""
        running = self._running.get(org_id or DEFAULT_ORG)
        return running.runtime if running is not None else None

    def notify(self, orgs: Iterable[str | None]) -> None:
        """New work for these orgs (None: the default org)."""
        for org in orgs:
            runtime = self.runtime(org)
            if runtime is not None:
                runtime.notify()

    def notify_all(self) -> None:
        """New work may be pending in any org."""
        for running in self._running.values():
            running.runtime.notify()

    def wake(self) -> None:
        """An org's connection may have changed: align with `orgs` now."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Align with `orgs` on every wake (and every ALIGN_SECONDS) until stop; then stop every runtime."""
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._align()
                except LedgerUnavailable as exc:
                    log.warning("fleet.ledger_unavailable", error=str(exc))
                await next_or_stop(self._wake.wait(), stop, within=ALIGN_SECONDS)
        finally:
            self._assigned = {} if self._assigned is not None else None
            await self._stop_all(list(self._running))
            if self._drains:
                await asyncio.gather(*self._drains, return_exceptions=True)
            self._stopped.set()

    async def _align(self) -> None:
        orgs = {org.org_id: org for org in await self._shared.ledger.list_orgs()}
        wanted = {org_id: org for org_id, org in orgs.items() if serves(org)}
        assigned = self._assigned  # read after the await: the newest assignment
        if assigned is not None:
            wanted = {org_id: org for org_id, org in wanted.items() if org_id in assigned}
        stale = [
            org_id
            for org_id, running in self._running.items()
            if org_id not in wanted
            or running.task.done()
            or running.connection != (wanted[org_id].login_url, wanted[org_id].username)
            or (assigned is not None and running.epoch != assigned.get(org_id))
        ]
        for org_id in stale:
            log.info("fleet.org_stopping", org=org_id, reason=self._why_stopped(org_id, orgs.get(org_id)))
        if assigned is None:
            await self._stop_all(stale)
        else:
            self._stop_in_background(stale)  # orgs taken from a dead worker need not wait for a drain
        assigned = self._assigned  # the stops took time: the newest assignment again
        for org_id, org in wanted.items():
            if org_id in self._running or org_id in self._stopping:
                continue  # an org still draining starts again once drained (the drain wakes the fleet)
            epoch = assigned.get(org_id) if assigned is not None else None
            if assigned is not None and not self._may_start(org_id, epoch):
                continue
            await self._start(org, epoch)

    def _may_start(self, org_id: str, epoch: int | None) -> bool:
        """Several workers: the org is still assigned, not at an epoch whose lease was lost, and permitted."""
        if epoch is None or self._lost.get(org_id) == epoch:
            return False
        return self._permits is not None and self._permits.permit(org_id, epoch)

    def _why_stopped(self, org_id: str, org: OrgRecord | None) -> str:
        running = self._running[org_id]
        if org is None:
            return "gone from orgs"
        if running.task.done():
            return "its lease was lost" if running.runtime.lease_lost else "its runtime ended"
        if not serves(org):
            return "disconnected"
        if self._assigned is not None and running.epoch != self._assigned.get(org_id):
            return "served by another worker" if org_id not in self._assigned else "a new lease epoch"
        return "its connection changed"

    async def _start(self, org: OrgRecord, epoch: int | None = None) -> None:
        try:
            settings = org_settings(self._settings, org)
        except OrgUnusable as exc:
            reason = pause_reason(exc)
            if (org.state, org.reason) != (OrgState.PAUSED.value, reason):  # tried again at every alignment
                await self._shared.ledger.set_org_state(org.org_id, OrgState.PAUSED, reason)
            return
        fence, permit = self._fenced(org.org_id, epoch)
        runtime = OrgRuntime(
            org,
            settings,
            self._http,
            self._shared,
            idle_poll_seconds=self._idle_poll_seconds,
            fence=fence,
            permit=permit,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop), name=f"org-{org.org_id}")
        self._running[org.org_id] = _Running(runtime, task, stop, (org.login_url, org.username), epoch)
        log.info("fleet.org_started", org=org.org_id, epoch=epoch)

    def _fenced(self, org_id: str, epoch: int | None) -> tuple[Fence | None, Callable[[], None] | None]:
        """The fence and the permit check of a runtime at this epoch (none with one daemon)."""
        if self._permits is None or epoch is None:
            return None, None
        from bridge.records.ledger import Fence

        permits = self._permits
        return Fence(permits.worker_id, epoch), functools.partial(permits.check, org_id, epoch)

    def _stop_in_background(self, org_ids: list[str]) -> None:
        """Stop these runtimes without waiting for their drain; the fleet is woken once they stopped."""
        stopping = self._begin_stop(org_ids)
        if not stopping:
            return

        async def drain() -> None:
            try:
                await self._finish_stop(stopping)
            finally:
                self._wake.set()

        task = asyncio.create_task(drain(), name="fleet.drain")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _stop_all(self, org_ids: list[str]) -> None:
        await self._finish_stop(self._begin_stop(org_ids))

    def _begin_stop(self, org_ids: list[str]) -> list[_Running]:
        """Tell these runtimes to stop: from now on they are draining, no longer running."""
        stopping = [self._running.pop(org_id) for org_id in org_ids if org_id in self._running]
        for running in stopping:
            running.stop.set()
            if running.runtime.lease_lost and running.epoch is not None:
                self._lost[running.runtime.org_id] = running.epoch
        self._stopping |= {r.runtime.org_id for r in stopping}
        return stopping

    async def _finish_stop(self, stopping: list[_Running]) -> None:
        """Wait for their drain (cancelled after STOP_SECONDS)."""
        if not stopping:
            return
        try:
            await self._wait_stopped(stopping)
        finally:
            self._stopping -= {r.runtime.org_id for r in stopping}

    async def _wait_stopped(self, stopping: list[_Running]) -> None:
        tasks = [r.task for r in stopping]
        done, pending = await asyncio.wait(tasks, timeout=STOP_SECONDS)
        for task in pending:
            log.error("fleet.org_stop_deadline", org=task.get_name())
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("fleet.org_runtime_failed", org=task.get_name(), exc_info=task.exception())


class OrgRunner:
    """The admin API's reconciliation runner of one org: it runs on the org's runtime as it is when asked
    (a paused or unserved org refuses with its state and reason)."""

    def __init__(self, fleet: OrgFleet, org_id: str | None) -> None:
        self._fleet = fleet
        self._org_id = org_id or DEFAULT_ORG

    def _runner(self) -> TakingTurns:
        runtime = self._fleet.runtime(self._org_id)
        runner = runtime.runner() if runtime is not None else None
        if runner is None:
            state = f"{runtime.state}: {runtime.reason}" if runtime is not None else "not served"
            raise SalesforceUnavailable(f"org {self._org_id} cannot reconcile now ({state})")
        return runner

    async def start(self, options: ReconcileOptions) -> int:
        """Open the run on the org's ledger; its id."""
        return await self._runner().start(options)

    async def execute(self, run_id: int, options: ReconcileOptions) -> ReconcileSummary:
        """Run it on the org's runtime."""
        return await self._runner().execute(run_id, options)


class FleetView:
    """The admin probe's view of every org's pusher and the default org's client, summed where it counts."""

    def __init__(self, fleet: OrgFleet) -> None:
        self._fleet = fleet

    @property
    def pushed(self) -> int:
        """Bookings written or deleted, over every org."""
        return sum(
            r.pushed + (r.parts.pusher.pushed if r.parts else 0) for r in self._fleet.runtimes.values()
        )

    @property
    def failed(self) -> int:
        """Bookings failed, over every org."""
        return sum(
            r.failed + (r.parts.pusher.failed if r.parts else 0) for r in self._fleet.runtimes.values()
        )

    @property
    def waiting_reason(self) -> str | None:
        """Why the default org's pusher waits (the other orgs show theirs in `orgs`)."""
        runtime = self._fleet.runtime(None)
        return runtime.parts.pusher.waiting_reason if runtime is not None and runtime.parts else None

    def notify(self) -> None:
        """Wake every org's pusher."""
        self._fleet.notify_all()

    @property
    def usage(self) -> ApiUsage | None:
        """The default org's API usage."""
        runtime = self._fleet.runtime(None)
        return runtime.client.usage if runtime is not None else None

    @property
    def calls(self) -> int:
        """REST requests sent, over every org."""
        return sum(r.client.calls for r in self._fleet.runtimes.values())

    def default_parts(self) -> OrgParts | None:
        """The default org's parts while it is served."""
        runtime = self._fleet.runtime(None)
        return runtime.parts if runtime is not None else None

    def org_runner(self, org_id: str | None) -> TakingTurns | None:
        """The admin API's runner of an org while it is served (None: paused, disconnected or unknown)."""
        runtime = self._fleet.runtime(org_id)
        return runtime.runner() if runtime is not None else None

    def runner(self, org_id: str | None = None) -> OrgRunner:
        """The reconciliation runner of an org (None: the default org)."""
        return OrgRunner(self._fleet, org_id)

    async def limits(self) -> ApiUsage:
        """The default org's allocation, fetched now."""
        runtime = self._fleet.runtime(None)
        if runtime is None:
            raise SalesforceUnavailable("the default org is not served yet")
        return await runtime.client.limits()

"""The composition root: builds every component from Settings, supervises the tasks, shuts down.

Only this module wires adapters (source, ledger, salesforce) to the pipeline: the `salesforce_client`,
`build_pusher` and `build_reconciler` factories serve the daemon and the commands alike; which change stream
the daemon subscribes to is chosen in `subscription.py`; `supervisor.py` runs the components. (Over 400
lines: the daemon's whole wiring reads in one place, in the order it is built.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import aiohttp
import structlog

from bridge.aio import sleep_or_stop
from bridge.config import SalesforceSettings, Settings, redacted_url, validate_for_run
from bridge.errors import BridgeError, ConfigurationError, FatalError
from bridge.ledger.checkpoints import SOURCE_STREAM
from bridge.ledger.lock import InstanceLock, LockHealth
from bridge.metrics import BridgeMetrics
from bridge.pipeline.echo import EchoFilter
from bridge.pipeline.ingest import Ingestor
from bridge.supervisor import Component, ComponentState, StartsUp, supervise
from bridge.tenancy.parts import OrgParts, Shared, build_pusher, build_reconciler, mapping_options

__all__ = ["Daemon", "build_pusher", "build_reconciler", "mapping_options", "run", "salesforce_client"]

if TYPE_CHECKING:
    from bridge.admin import AdminServer
    from bridge.admin.ports import PusherView, ReconcileRunner, SalesforceView
    from bridge.admin.workers import ThisWorker
    from bridge.ledger.repository import Ledger
    from bridge.pipeline.reconcile import ReconcileOptions
    from bridge.records.ledger import IngestSummary
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.rest import SalesforceClient
    from bridge.source.reader import ReplicationSource
    from bridge.source.writeback import SchedulerWriter
    from bridge.tenancy.fleet import FleetView, OrgFleet
    from bridge.tenancy.reader import ReaderElection
    from bridge.tenancy.workers import Permits, WorkerMembership

log = structlog.get_logger(__name__)


LOCK_CHECK_SECONDS = 2.0
# With tenancy an org's pusher is woken by its new work; its idle poll (retries coming due) is at least this,
# so a thousand idle orgs cost the ledger a few claims a second, not thousands.
ORG_IDLE_POLL_SECONDS = 5.0


def utcnow() -> datetime:
    """The wall clock, in UTC (the one clock the daemon injects everywhere)."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------- factories
# The only wiring: the daemon and the commands (reconcile, setup) build their parts here.


@contextlib.asynccontextmanager
async def salesforce_client(
    settings: Settings, connections: int = 100
) -> AsyncIterator[tuple[TokenManager, SalesforceClient]]:
    """One aiohttp session (trusting `salesforce.ca_bundle`), the one TokenManager over it (REST and
    streaming share the token) and the REST client: how every process reaches Salesforce."""
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.rest import SalesforceClient

    sf = settings.salesforce
    async with http_session(settings, connections) as http:
        tokens = TokenManager(http, sf)
        yield tokens, SalesforceClient(http, tokens, sf)


@contextlib.asynccontextmanager
async def http_session(settings: Settings, connections: int) -> AsyncIterator[aiohttp.ClientSession]:
    """The aiohttp session every Salesforce call of a process goes through (`connections` 0: no limit)."""
    from bridge.salesforce.auth import make_ssl_context

    connector = aiohttp.TCPConnector(ssl=make_ssl_context(settings.salesforce.ca_bundle), limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


# ------------------------------------------------------------------------------------------- run


class Daemon:
    """The long-lived process: ingest from the source, push to Salesforce, until told to stop."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.stop_event = asyncio.Event()
        self.states: dict[str, ComponentState] = {}
        self.parts: OrgParts | None = None  # the single org's components, once built
        self.fleet: OrgFleet | None = None  # with tenancy: every org's runtime
        self.membership: WorkerMembership | None = None  # one of several workers: its leases
        self.reader: ReaderElection | None = None  # one of several workers: whether it reads the stream
        self._lock: InstanceLock | None = None
        self._writer: SchedulerWriter | None = None  # with tenancy: the write-back all orgs share

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        if not self.stop_event.is_set():
            log.info("daemon.stop_requested")
            self.stop_event.set()

    @contextlib.asynccontextmanager
    async def _ledger(self, *, check: bool = True, url: str | None = None) -> AsyncIterator[Ledger]:
        """A Ledger on its own engine and thread (at `url`: the configured one with options, e.g. its
        sessions' name); `check`: refuse an old schema, warn when not durable."""
        from bridge.ledger.engine import durability_problems
        from bridge.ledger.migrate import current_revision, head_revision
        from bridge.ledger.repository import Ledger

        if check and current_revision(self.settings.ledger.url) != head_revision():
            raise ConfigurationError(
                "the ledger is not at the current schema: run `mogli-bridge setup` first", "ledger.url"
            )
        ledger = Ledger.from_url(url or self.settings.ledger.url, clock=self.clock)
        for problem in durability_problems(ledger.engine) if check else ():
            log.warning("ledger.not_durable", problem=problem)
        try:
            yield ledger
        finally:
            await ledger.close()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        sf = self.settings.salesforce
        validate_for_run(self.settings)  # a bad setting ends `run` now, not after waiting for the lock
        from bridge.tenancy.workers import worker_mode

        if worker_mode(self.settings):
            return await self._run_workers()  # every process a worker: none waits as a standby
        lock = InstanceLock(self.settings.ledger.url)
        try:
            if not await self._become_active(lock):
                return 0
            self._lock = lock
            if self.settings.tenancy.enabled:
                return await self._run_fleet()
            return await self._run_active(sf)
        finally:
            lock.release()

    async def _watch_lock(self, stop: asyncio.Event) -> None:
        """Stop at once if another process took the ledger while its database was unreachable."""
        warned = False
        while not stop.is_set():
            if await sleep_or_stop(stop, LOCK_CHECK_SECONDS) or self._lock is None:
                return
            health = await asyncio.to_thread(self._lock.verify)
            if health is LockHealth.LOST:
                raise FatalError(
                    "another mogli-bridge process took over the ledger while its database was unreachable; "
                    "this one stops so that only one works (it is safe to start it again as a standby)"
                )
            if health is LockHealth.UNREACHABLE and not warned:
                log.warning("daemon.ledger_lock_unreachable")
            warned = health is LockHealth.UNREACHABLE

    async def _become_active(self, lock: InstanceLock) -> bool:
        """Wait as a standby until this process owns the ledger; False if told to stop first."""
        announced = False
        while not await asyncio.to_thread(lock.try_acquire):
            if not announced:
                log.info(
                    "daemon.standby", reason="another mogli-bridge process owns this ledger", pid=os.getpid()
                )
                announced = True
            if await sleep_or_stop(self.stop_event, 1.0):
                return False
        if announced:
            log.info("daemon.active", reason="took over the ledger")
        return True

    async def _run_active(self, sf: SalesforceSettings) -> int:
        """The daemon's work, once it owns the ledger."""
        from bridge.source.reader import ReplicationSource
        from bridge.source.writeback import SchedulerWriter

        async with (
            self._ledger() as ledger,
            salesforce_client(self.settings, sf.max_in_flight * 2) as (
                tokens,
                client,
            ),
        ):
            checkpoint = await ledger.read_checkpoint(SOURCE_STREAM)
            resume = int(checkpoint) if checkpoint else None
            source = ReplicationSource(self.settings.source, resume_lsn=resume)
            metrics = BridgeMetrics()
            ledger.observe_outcomes(metrics.observe)  # push outcomes counted once the ledger holds them
            writer = (
                SchedulerWriter(self.settings.source.dsn, self.settings.source.schema)
                if self.settings.sync.streaming
                else None
            )
            parts = OrgParts(
                self.settings, ledger, tokens, client, Shared(ledger, metrics, self.clock, writer)
            )
            pusher = parts.pusher
            ingestor = Ingestor(
                EchoFilter(source),  # the bridge's own write-backs are not new work
                ledger,
                backfill=self.settings.source.backfill_policy(),
                clock=self.clock,
                on_work=pusher.notify,
                tenancy=False,
            )
            log.info(
                "daemon.started",
                resume_lsn=resume,
                ledger=redacted_url(self.settings.ledger.url),
                pid=os.getpid(),
            )
            admin = self._admin_server(ledger, source, parts, ingestor, metrics)
            components: dict[str, Component | StartsUp] = {
                "ingest": ingestor.run,
                "admin": StartsUp(admin.run),
                "lock": self._watch_lock,
                **await parts.components(),
            }
            self.parts = parts
            try:
                await supervise(components, self.stop_event, self.states)
            finally:
                await source.close()
                if writer is not None:
                    await asyncio.to_thread(writer.close)
        log.info("daemon.stopped")
        return 0

    async def _run_fleet(self) -> int:
        """With tenancy: one change stream, ingested once, and one runtime per served org (tenancy/)."""
        from bridge.tenancy.fleet import FleetView

        async with self._ledger() as ledger, http_session(self.settings, 0) as http:
            fleet, metrics = self._fleet(ledger, http)
            source, ingestor, resume = await self._ingest_term(ledger, fleet)
            log.info(
                "daemon.started",
                resume_lsn=resume,
                ledger=redacted_url(self.settings.ledger.url),
                tenancy=True,
                pid=os.getpid(),
            )
            view = FleetView(fleet)
            admin = self._admin_server(ledger, source, view, ingestor, metrics)
            components: dict[str, Component | StartsUp] = {
                "ingest": ingestor.run,
                "orgs": fleet.run,
                "admin": StartsUp(admin.run),
                "lock": self._watch_lock,
            }
            try:
                await supervise(components, self.stop_event, self.states)
            finally:
                await source.close()
                await self._close_writer()
        log.info("daemon.stopped")
        return 0

    async def _run_workers(self) -> int:
        """Tenancy on a PostgreSQL ledger: one worker among several (tenancy/workers.py). The worker holding
        the ledger's advisory lock reads the change stream; each serves the orgs it holds leases of."""
        from bridge.admin.workers import LiveWorker
        from bridge.tenancy.fleet import FleetView
        from bridge.tenancy.reader import (
            ReaderElection,
            ReaderView,
            end_expired_sessions,
            end_expired_sessions_now_and_then,
            reader_lock_url,
            worker_session_url,
        )
        from bridge.tenancy.wakeup import Wakeups
        from bridge.tenancy.workers import Permits, WorkerIdentity, WorkerMembership

        tenancy = self.settings.tenancy
        identity = WorkerIdentity.of_this_process()
        permits = Permits(identity.worker_id, tenancy.worker_lease_seconds)
        named = worker_session_url(self.settings.ledger.url, identity.worker_id)  # its sessions tell who
        async with (
            self._ledger(url=named) as ledger,
            self._ledger(check=False, url=named) as rounds,  # own connections and thread: never behind orgs
            http_session(self.settings, 0) as http,
        ):
            fleet, metrics = self._fleet(ledger, http, permits)
            stream = ReaderView()

            def missed() -> None:
                fleet.notify_all()
                fleet.wake()

            wakeups = Wakeups(
                self.settings.ledger.url, on_work=fleet.notify, on_orgs=fleet.wake, on_missed=missed
            )

            async def read_stream(stop: asyncio.Event) -> None:
                """One term as the reader: a source from the stored position, ingested until stop."""
                await self._end_slot_consumer()
                source, ingestor, resume = await self._ingest_term(ledger, fleet, wakeups.post)
                stream.reading(source, ingestor)
                log.info("workers.reading", worker=identity.worker_id, resume_lsn=resume)
                try:
                    await ingestor.run(stop)
                finally:
                    stream.reading(None, None)
                    await source.close()

            url = self.settings.ledger.url
            reader = ReaderElection(InstanceLock(reader_lock_url(url, identity.worker_id)), read_stream)
            membership = WorkerMembership(
                rounds,
                identity,
                permits,
                fleet,
                lease_seconds=tenancy.worker_lease_seconds,
                round_seconds=tenancy.worker_round_seconds,
                is_reader=lambda: reader.reading,
            )
            log.info(
                "daemon.started",
                ledger=redacted_url(self.settings.ledger.url),
                tenancy=True,
                worker=identity.worker_id,
                pid=os.getpid(),
            )
            self.membership, self.reader = membership, reader
            view = FleetView(fleet)
            source_view = cast("ReplicationSource", stream)
            this = LiveWorker(
                identity.worker_id,
                identity.host,
                identity.pid,
                is_reading=lambda: reader.reading,
                orgs=lambda: fleet.runtimes.keys(),
            )
            admin = self._admin_server(ledger, source_view, view, cast("Ingestor", stream), metrics, this)
            components: dict[str, Component | StartsUp] = {
                "reader": reader.run,
                "workers": membership.run,
                "wakeup": wakeups.run,
                "expired": functools.partial(
                    end_expired_sessions_now_and_then, functools.partial(end_expired_sessions, url)
                ),
                "orgs": fleet.run,
                "admin": StartsUp(admin.run),
            }
            try:
                await supervise(components, self.stop_event, self.states)
            finally:
                await self._close_writer()
        log.info("daemon.stopped")
        return 0

    async def _end_slot_consumer(self) -> None:
        """A new reader first ends a predecessor's replication session still holding the slot."""
        import psycopg2

        from bridge.tenancy.reader import end_slot_consumer

        src = self.settings.source
        try:
            pid = await asyncio.to_thread(end_slot_consumer, src.dsn, src.slot)
        except psycopg2.Error as exc:  # the source's own retries find the slot free sooner or later
            log.warning("workers.slot_consumer_not_ended", error=type(exc).__name__)
            return
        if pid is not None:
            log.warning("workers.slot_consumer_ended", slot=src.slot, pid=pid)

    def _fleet(
        self, ledger: Ledger, http: aiohttp.ClientSession, permits: Permits | None = None
    ) -> tuple[OrgFleet, BridgeMetrics]:
        """The fleet of org runtimes (fenced and permitted when `permits`), and the metrics they report."""
        from bridge.source.writeback import SchedulerWriter
        from bridge.tenancy.fleet import OrgFleet

        metrics = BridgeMetrics()
        ledger.observe_outcomes(metrics.observe)
        self._writer = (
            SchedulerWriter(self.settings.source.dsn, self.settings.source.schema)
            if self.settings.sync.streaming
            else None
        )
        fleet = OrgFleet(
            self.settings,
            http,
            Shared(ledger, metrics, self.clock, self._writer),
            idle_poll_seconds=max(self.settings.sync.idle_poll_seconds, ORG_IDLE_POLL_SECONDS),
            permits=permits,
        )
        self.fleet = fleet
        return fleet, metrics

    async def _close_writer(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None

    async def _ingest_term(
        self,
        ledger: Ledger,
        fleet: OrgFleet,
        post: Callable[[Iterable[str | None], bool], None] | None = None,
    ) -> tuple[ReplicationSource, Ingestor, int | None]:
        """A replication source from the stored position (also returned), and the ingest that routes work
        to the fleet (and, as one of several workers, to every worker through `post`)."""
        from bridge.source.reader import ReplicationSource

        checkpoint = await ledger.read_checkpoint(SOURCE_STREAM)
        resume = int(checkpoint) if checkpoint else None
        source = ReplicationSource(self.settings.source, resume_lsn=resume)

        def after_batch(summary: IngestSummary) -> None:
            fleet.notify(summary.orgs_with_work)
            if summary.orgs_changed:
                fleet.wake()
            if post is not None and (summary.orgs_with_work or summary.orgs_changed):
                post(summary.orgs_with_work, summary.orgs_changed)

        ingestor = Ingestor(
            EchoFilter(source),
            ledger,
            backfill=self.settings.source.backfill_policy(),
            clock=self.clock,
            on_work=lambda: None,  # the batch's summary names the orgs with work (after_batch)
            on_summary=after_batch,
        )
        return source, ingestor, resume

    def _admin_server(
        self,
        ledger: Ledger,
        source: ReplicationSource,
        parts: OrgParts | FleetView,
        ingestor: Ingestor,
        metrics: BridgeMetrics,
        worker: ThisWorker | None = None,
    ) -> AdminServer[ReconcileOptions]:
        """The admin app, reading the live components; it runs reconciliations on request. With tenancy, it
        reads every org's pushers summed and the default org's client, stream and runner; as one of several
        workers, `worker` is this process read live (whether it reads the stream, the orgs it runs)."""
        from bridge.admin import AdminServer, DaemonProbe, ping_postgres
        from bridge.admin.health import Thresholds
        from bridge.pipeline.reconcile import ReconcileOptions
        from bridge.source.status import slot_status

        src = self.settings.source
        salesforce: SalesforceView
        pusher: PusherView
        org_runner: Callable[[str | None], ReconcileRunner[ReconcileOptions] | None] | None = None
        if isinstance(parts, OrgParts):
            single = parts
            salesforce, pusher = parts.client, parts.pusher
            runner: ReconcileRunner[ReconcileOptions] = parts.runner()
            current: Callable[[], OrgParts | None] = functools.partial(_same, single)
        else:
            salesforce = parts
            pusher = cast("PusherView", parts)  # its counters are read-only sums over every org
            runner = parts.runner()
            current = parts.default_parts
            org_runner = parts.org_runner

        def streaming() -> dict[str, str]:
            now = current()
            return {name: line() for name, line in now.streaming_lines.items()} if now is not None else {}

        def subscribed() -> bool | None:
            now = current()
            return (
                now.stream.subscribed.all_subscribed if now is not None and now.stream is not None else None
            )

        probe = DaemonProbe(
            slot=src.slot,
            states=self.states,
            ledger=ledger,
            source=source,
            salesforce=salesforce,
            pusher=pusher,
            ingestor=ingestor,
            ping_scheduler=functools.partial(ping_postgres, src.dsn),
            read_slot=functools.partial(slot_status, src.dsn, src.slot),
            streaming=streaming,
            subscribed=subscribed,
            clock=self.clock,
        )
        return AdminServer(
            self.settings.admin,
            probe=probe,
            ledger=ledger,
            metrics=metrics,
            notify_pusher=pusher.notify,
            runner=runner,
            org_runner=org_runner,
            worker=worker,
            make_options=ReconcileOptions,
            # degraded before the pusher stops at its reserve
            thresholds=Thresholds(
                api_remaining_fraction=min(2 * self.settings.salesforce.api_reserve_fraction, 1.0)
            ),
        )


def _same(value: OrgParts) -> OrgParts | None:
    return value


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def run(settings: Settings) -> int:
    """`mogli-bridge run`: the daemon in the foreground; 0 after a clean stop, 1 fatal, 2 configuration."""
    try:
        return asyncio.run(Daemon(settings).run())
    except (BaseExceptionGroup, BridgeError) as exc:
        leaves = _leaves(exc)
    code = 1
    for leaf in leaves:
        if isinstance(leaf, ConfigurationError):
            log.error("daemon.configuration_error", error=str(leaf), key=leaf.key)
            print(f"configuration error: {leaf}", file=sys.stderr)
            code = 2
        elif isinstance(leaf, BridgeError):
            log.error("daemon.fatal", error=str(leaf), error_type=type(leaf).__name__)
            print(f"fatal: {leaf}", file=sys.stderr)
        else:
            log.error("daemon.crashed", error_type=type(leaf).__name__, exc_info=leaf)
            print(f"fatal: unexpected {type(leaf).__name__}: {leaf}", file=sys.stderr)
    return code

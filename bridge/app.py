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
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

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
from bridge.pipeline.push import Pusher, PushSettings
from bridge.rules.mapping import MappingOptions
from bridge.supervisor import Component, ComponentState, StartsUp, supervise

if TYPE_CHECKING:
    from bridge.admin import AdminServer
    from bridge.ledger.repository import Ledger
    from bridge.pipeline.allocation import AllocationWatch
    from bridge.pipeline.gaps import GapReconciler
    from bridge.pipeline.inbound import Inbound
    from bridge.pipeline.ports import PushLedger
    from bridge.pipeline.reconcile import ReconcileOptions, Reconciler
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.pubsub import PubSubStream
    from bridge.salesforce.rest import SalesforceClient
    from bridge.salesforce.streaming import ChangeStream
    from bridge.source.reader import ReplicationSource
    from bridge.source.writeback import SchedulerWriter

log = structlog.get_logger(__name__)


LOCK_CHECK_SECONDS = 2.0


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
    from bridge.salesforce.auth import TokenManager, make_ssl_context
    from bridge.salesforce.rest import SalesforceClient

    sf = settings.salesforce
    connector = aiohttp.TCPConnector(ssl=make_ssl_context(sf.ca_bundle), limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        tokens = TokenManager(http, sf)
        yield tokens, SalesforceClient(http, tokens, sf)


def mapping_options(settings: Settings) -> MappingOptions:
    """The mapping rules' options from `[sync]`."""
    return MappingOptions(on_cancel=settings.sync.on_cancel, multiday_events=settings.sync.multiday_events)


def build_pusher(
    settings: Settings, ledger: PushLedger, client: SalesforceClient, clock: Callable[[], datetime]
) -> Pusher:
    """The pusher: ledger work to Salesforce writes, with `[sync]`'s batching, retries and waits."""
    sf, sync = settings.salesforce, settings.sync
    return Pusher(
        ledger,
        client,
        options=mapping_options(settings),
        settings=PushSettings(
            batch_size=sync.batch_size,
            max_in_flight=sf.max_in_flight,
            retry_base_seconds=sync.retry_base_seconds,
            retry_max_seconds=sync.retry_max_seconds,
            max_attempts=sync.max_attempts,
            idle_poll_seconds=sync.idle_poll_seconds,
            api_limit_wait_seconds=sync.api_limit_wait_seconds,
        ),
        clock=clock,
    )


def build_reconciler(
    settings: Settings,
    ledger: Ledger,
    client: SalesforceClient,
    *,
    after_repair: Callable[[], Awaitable[None]] | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Reconciler:
    """A Reconciler over the scheduler (read directly), the ledger and Salesforce; `after_repair` runs once a
    repairing run requeued rows (the daemon wakes its pusher, the command drains them itself)."""
    from bridge.pipeline.reconcile import Reconciler
    from bridge.rules.drift import RepairPolicy
    from bridge.salesforce.reads import SalesforceReads
    from bridge.source.reader_sql import SchedulerReader

    sync = settings.sync
    return Reconciler(
        ledger=ledger,
        store=ledger,
        scheduler=SchedulerReader(settings.source.dsn, settings.source.schema),
        salesforce=SalesforceReads(client, settings.salesforce.objects),
        options=mapping_options(settings),
        policy=RepairPolicy(sync.on_activity_deleted, sync.on_mogli_event_deleted),
        chunk_size=sync.batch_size,
        after_repair=after_repair,
        progress=progress,
    )


# ------------------------------------------------------------------------------------------- run


class Daemon:
    """The long-lived process: ingest from the source, push to Salesforce, until told to stop."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.stop_event = asyncio.Event()
        self.states: dict[str, ComponentState] = {}
        self.streaming_lines: dict[str, Callable[[], str]] = {}  # status lines of the inbound stream
        self.stream: ChangeStream | PubSubStream | None = None  # the transport `sync.transport` chose
        self.gaps: GapReconciler | None = None  # the daemon's own gap reconciliations
        self._lock: InstanceLock | None = None

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        if not self.stop_event.is_set():
            log.info("daemon.stop_requested")
            self.stop_event.set()

    @contextlib.asynccontextmanager
    async def _ledger(self) -> AsyncIterator[Ledger]:
        from bridge.ledger.engine import durability_problems
        from bridge.ledger.migrate import current_revision, head_revision
        from bridge.ledger.repository import Ledger

        url = self.settings.ledger.url
        if current_revision(url) != head_revision():
            raise ConfigurationError(
                "the ledger is not at the current schema: run `mogli-bridge setup` first", "ledger.url"
            )
        ledger = Ledger.from_url(url, clock=self.clock)
        for problem in durability_problems(ledger.engine):
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
        lock = InstanceLock(self.settings.ledger.url)
        try:
            if not await self._become_active(lock):
                return 0
            self._lock = lock
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
            pusher = build_pusher(self.settings, ledger, client, self.clock)
            ingestor = Ingestor(
                EchoFilter(source),  # the bridge's own write-backs are not new work
                ledger,
                backfill=self.settings.source.backfill_policy(),
                clock=self.clock,
                on_work=pusher.notify,
            )
            log.info(
                "daemon.started",
                resume_lsn=resume,
                ledger=redacted_url(self.settings.ledger.url),
                pid=os.getpid(),
            )
            admin = self._admin_server(ledger, source, client, pusher, ingestor, metrics)
            components: dict[str, Component | StartsUp] = {
                "ingest": ingestor.run,
                "push": pusher.run,
                "admin": StartsUp(admin.run),
                "lock": self._watch_lock,
            }
            components["gaps"] = self._gaps(ledger, client, pusher).run
            inbound, writer = await self._inbound(ledger, tokens, client, pusher)
            if inbound is not None:
                components["inbound"] = inbound.run
                assert self.stream is not None  # built by _inbound
                self.stream.subscribed.observe(metrics.observe_subscription)
                components["allocation"] = self._allocation_watch(ledger, client, pusher, metrics).run
            try:
                await supervise(components, self.stop_event, self.states)
            finally:
                await source.close()
                if writer is not None:
                    await asyncio.to_thread(writer.close)
        log.info("daemon.stopped")
        return 0

    async def _inbound(
        self, ledger: Ledger, tokens: TokenManager, client: SalesforceClient, pusher: Pusher
    ) -> tuple[Inbound | None, SchedulerWriter | None]:
        """The inbound component (Salesforce change events), unless `sync.streaming` is off."""
        from bridge.pipeline.inbound import Inbound
        from bridge.rules.policy import PolicyOptions
        from bridge.salesforce.changes import ChangeReader
        from bridge.source.writeback import SchedulerWriter
        from bridge.subscription import change_stream, choose_channels, stored_positions

        sf, sync = self.settings.salesforce, self.settings.sync
        if not sync.streaming:
            return None, None
        channels, line = await choose_channels(self.settings, client, tokens, ledger)
        self.streaming_lines["channel"] = lambda: line
        positions = await stored_positions(self.settings, ledger, channels)
        stream, transport = await change_stream(self.settings, tokens, positions, channels)
        self.streaming_lines["transport"] = lambda: transport
        writer = SchedulerWriter(self.settings.source.dsn, self.settings.source.schema)
        options = PolicyOptions(
            client_name=sf.client_name,
            on_activity_deleted=sync.on_activity_deleted,
            on_time_changed=sync.on_time_changed,
            on_owner_changed=sync.on_owner_changed,
            on_mogli_event_deleted=sync.on_mogli_event_deleted,
        )
        reconcile = self._window_reconciler(ledger, client, pusher)
        inbound = Inbound(
            stream,
            ledger,
            ChangeReader(client, sf.objects),
            writer,
            options,
            on_work=pusher.notify,
            reconcile=reconcile,
            identity=tokens.user_id,
        )
        self.stream = stream
        return inbound, writer

    def _allocation_watch(
        self, ledger: Ledger, client: SalesforceClient, pusher: Pusher, metrics: BridgeMetrics
    ) -> AllocationWatch:
        """The delivered-event allocation watch of the stream: metric, status line, reconciliation."""
        from bridge.pipeline.allocation import AllocationSettings, AllocationWatch

        sync = self.settings.sync
        assert self.stream is not None  # built by _inbound
        watch = AllocationWatch(
            client,
            self.stream,
            clock=self.clock,
            reconcile=self._window_reconciler(ledger, client, pusher),
            on_reading=lambda reading: metrics.observe_event_allocation(reading.limit, reading.remaining),
            settings=AllocationSettings(
                check_seconds=sync.delivered_events_check_seconds,
                warn_fraction=sync.delivered_events_warn_fraction,
            ),
        )
        self.streaming_lines["delivered_events"] = lambda: watch.status
        return watch

    def _reconciler(self, ledger: Ledger, client: SalesforceClient, pusher: Pusher) -> Reconciler:
        """A Reconciler on the daemon's ledger and Salesforce client; repairs wake the pusher."""

        async def after_repair() -> None:
            pusher.notify()

        return build_reconciler(self.settings, ledger, client, after_repair=after_repair)

    def _gaps(self, ledger: Ledger, client: SalesforceClient, pusher: Pusher) -> GapReconciler:
        """The daemon's own gap reconciliations (built once): durable, one at a time, a paused one resumed
        after a back-off from the API budget's recheck interval; status line `gap_reconciliation`."""
        from bridge.pipeline.gaps import GapReconciler, GapSettings

        if self.gaps is None:
            recheck = self.settings.salesforce.api_budget_recheck_seconds
            gaps = GapReconciler(
                self._reconciler(ledger, client, pusher), ledger, settings=GapSettings(recheck, recheck * 8)
            )
            self.streaming_lines["gap_reconciliation"] = lambda: gaps.status
            self.gaps = gaps
        return self.gaps

    def _window_reconciler(
        self, ledger: Ledger, client: SalesforceClient, pusher: Pusher
    ) -> Callable[[datetime, str], Awaitable[None]]:
        """A targeted reconciliation of what changed since a point in time, for lost change events: the
        request returns once the run is open in the ledger; the gap reconciler executes it."""
        return self._gaps(ledger, client, pusher).request

    def _admin_server(
        self,
        ledger: Ledger,
        source: ReplicationSource,
        client: SalesforceClient,
        pusher: Pusher,
        ingestor: Ingestor,
        metrics: BridgeMetrics,
    ) -> AdminServer[ReconcileOptions]:
        """The admin app, reading the live components; it runs reconciliations on request."""
        from bridge.admin import AdminServer, DaemonProbe, ping_postgres
        from bridge.admin.health import Thresholds
        from bridge.pipeline.gaps import TakingTurns
        from bridge.pipeline.reconcile import ReconcileOptions
        from bridge.source.status import slot_status

        src = self.settings.source
        probe = DaemonProbe(
            slot=src.slot,
            states=self.states,
            ledger=ledger,
            source=source,
            salesforce=client,
            pusher=pusher,
            ingestor=ingestor,
            ping_scheduler=functools.partial(ping_postgres, src.dsn),
            read_slot=functools.partial(slot_status, src.dsn, src.slot),
            streaming=lambda: {name: line() for name, line in self.streaming_lines.items()},
            subscribed=lambda: self.stream.subscribed.all_subscribed if self.stream is not None else None,
            clock=self.clock,
        )
        return AdminServer(
            self.settings.admin,
            probe=probe,
            ledger=ledger,
            metrics=metrics,
            notify_pusher=pusher.notify,
            runner=TakingTurns(
                self._reconciler(ledger, client, pusher), self._gaps(ledger, client, pusher).turn
            ),
            make_options=ReconcileOptions,
            # degraded before the pusher stops at its reserve
            thresholds=Thresholds(
                api_remaining_fraction=min(2 * self.settings.salesforce.api_reserve_fraction, 1.0)
            ),
        )


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

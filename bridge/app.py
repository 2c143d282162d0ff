"""The composition root: builds every component from Settings, supervises the tasks, shuts down.

Only this module wires adapters (source, ledger, salesforce) to the sync pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import structlog

from bridge.config import SalesforceSettings, Settings, require_salesforce_credentials, validate_for_run
from bridge.errors import BridgeError, ConfigurationError, FatalError, TransientError
from bridge.ledger.async_ledger import AsyncLedger
from bridge.ledger.lock import InstanceLock, LockHealth
from bridge.metrics import BridgeMetrics, CountingLedger
from bridge.pipeline.echo import EchoFilter
from bridge.pipeline.ingest import Ingestor
from bridge.pipeline.push import Pusher, PushSettings
from bridge.rules.mapping import MappingOptions

if TYPE_CHECKING:
    from bridge.admin import AdminServer
    from bridge.pipeline.allocation import AllocationWatch
    from bridge.pipeline.inbound import Inbound
    from bridge.pipeline.reconcile import ReconcileOptions, Reconciler
    from bridge.records.inbound import ReplayPosition
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.pubsub import PubSubStream
    from bridge.salesforce.rest import SalesforceClient
    from bridge.salesforce.streaming import ChangeStream
    from bridge.source.reader import ReplicationSource
    from bridge.source.writeback import SchedulerWriter

log = structlog.get_logger(__name__)

SCHEMA_SQL = Path(__file__).parent / "schema" / "scheduler_schema.sql"
SOURCE_CHECKPOINT = "source"
SHUTDOWN_GRACE_SECONDS = 20.0
LOCK_CHECK_SECONDS = 2.0


def utcnow() -> datetime:
    """The wall clock, in UTC (the one clock the daemon injects everywhere)."""
    return datetime.now(UTC)


class ComponentState(enum.StrEnum):
    """Life cycle of a supervised component."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


# ------------------------------------------------------------------------------------------- setup


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the `setup` report."""

    component: str
    ok: bool
    message: str


def _ledger_checks(settings: Settings, reset_source: bool) -> list[Check]:
    """Migrate the ledger (and forget the source position), only while no daemon holds it."""
    lock = InstanceLock(settings.ledger.url)
    if not lock.try_acquire():
        return _ledger_checks_behind_daemon(settings, reset_source)
    try:
        return _ledger_writes(settings, reset_source)
    finally:
        lock.release()


def _ledger_checks_behind_daemon(settings: Settings, reset_source: bool) -> list[Check]:
    """A running daemon holds the ledger: report its schema, write nothing."""
    from bridge.ledger.migrate import current_revision, head_revision

    holder = "a running mogli-bridge daemon holds the ledger"
    revision = current_revision(settings.ledger.url)
    if revision != head_revision():
        checks = [Check("ledger", False, f"{holder}; stop it, then run setup to migrate (at {revision})")]
    else:
        checks = [Check("ledger", True, f"at revision {revision} ({holder})")]
    if reset_source:
        checks.append(Check("ledger", False, f"{holder}; stop it before --reset-source"))
    return checks


def _ledger_writes(settings: Settings, reset_source: bool) -> list[Check]:
    from bridge.ledger.migrate import upgrade_to_head
    from bridge.ledger.repository import LedgerRepository

    revision = upgrade_to_head(settings.ledger.url)
    checks = [Check("ledger", True, f"migrated to revision {revision} ({_safe_url(settings.ledger.url)})")]
    if reset_source:
        repository = LedgerRepository.from_url(settings.ledger.url)
        try:
            repository.write_checkpoint(SOURCE_CHECKPOINT, "")
        finally:
            repository.dispose()
        checks.append(Check("ledger", True, "source position forgotten: the next run re-reads the tables"))
    return checks


def _source_checks(settings: Settings, create_demo_schema: bool, reset_source: bool) -> list[Check]:
    from bridge.source.setup import check_source, drop_slot, ensure_publication, ensure_slot

    src = settings.source
    checks: list[Check] = []
    if create_demo_schema:
        created = _create_demo_schema(src.dsn, src.schema)
        checks.append(
            Check("source", True, "reference schema created" if created else "schema already present")
        )
    if reset_source and drop_slot(src.dsn, src.slot):
        checks.append(Check("source", True, f"replication slot {src.slot} dropped"))
    pub = ensure_publication(src.dsn, src.schema, src.publication)
    checks.append(Check("source", True, f"publication {src.publication} {'created' if pub else 'present'}"))
    slot = ensure_slot(src.dsn, src.slot)
    checks.append(Check("source", True, f"replication slot {src.slot} {'created' if slot else 'present'}"))
    report = check_source(src.dsn, src.schema, src.slot, src.publication)
    checks.extend(Check("source", False, problem) for problem in report.problems)
    if settings.sync.streaming:
        from bridge.source.writeback import check_origin

        checks.append(Check("source", *check_origin(src.dsn)))
    return checks


def _create_demo_schema(dsn: str, schema: str) -> bool:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'bookings'",
                (schema,),
            )
            if cur.fetchone():
                return False
            cur.execute(
                SCHEMA_SQL.read_text()
                .replace("scheduler.", f"{schema}.")
                .replace("SCHEMA IF NOT EXISTS scheduler", f"SCHEMA IF NOT EXISTS {schema}")
            )
        conn.commit()
        return True
    finally:
        conn.close()


async def _salesforce_checks(settings: Settings) -> list[Check]:
    from bridge.salesforce.auth import TokenManager, make_ssl_context
    from bridge.salesforce.rest import SalesforceClient

    sf = settings.salesforce
    require_salesforce_credentials(sf)
    connector = aiohttp.TCPConnector(ssl=make_ssl_context(sf.ca_bundle))
    async with aiohttp.ClientSession(connector=connector) as http:
        tokens = TokenManager(http, sf)
        client = SalesforceClient(http, tokens, sf)
        await tokens.get()
        checks = [Check("salesforce", True, f"logged in ({sf.auth}) at {sf.login_url}")]
        names = sf.objects
        wanted = {
            names.mogli_event_object: (
                names.link_external_id_field,
                names.link_type_field,
                names.mogli_description_field,
            ),
            "Event": (names.booking_external_id_field, names.event_mogli_event_field),
        }
        for sobject, fields in wanted.items():
            try:
                desc = await client.describe(sobject)
            except BridgeError as exc:
                checks.append(Check("salesforce", False, f"object {sobject}: {exc}"))
                continue
            missing = [f for f in fields if f.lower() not in {n.lower() for n in desc.fields}]
            if missing:
                checks.append(
                    Check(
                        "salesforce",
                        False,
                        f"object {sobject} lacks fields {', '.join(missing)} "
                        "(salesforce.objects.* names them)",
                    )
                )
            else:
                checks.append(Check("salesforce", True, f"object {sobject} and its fields present"))
        if settings.sync.streaming and settings.sync.channel != "standard":
            checks.append(await _channel_check(settings, client, tokens))
        return checks


async def _channel_check(settings: Settings, client: SalesforceClient, tokens: TokenManager) -> Check:
    """Create or update the filtered custom channel; under `auto` a refusal only means standard channels."""
    from bridge.salesforce.channels import ensure_channel

    sf, sync = settings.salesforce, settings.sync
    fallback = sync.channel == "auto"
    user = await tokens.user_id()
    if user is None:
        return Check("salesforce", fallback, "custom channel: the token response names no user (no `id` URL)")
    try:
        done = await ensure_channel(client, sf.objects, sync.channel_name, user)
    except BridgeError as exc:
        if fallback:
            return Check(
                "salesforce",
                True,
                f"custom channel {sync.channel_name} refused ({exc}); the daemon uses the standard channels "
                "(sync.channel = auto)",
            )
        return Check("salesforce", False, f"custom channel {sync.channel_name} refused: {exc} (sync.channel)")
    return Check("salesforce", True, f"custom channel {sync.channel_name}: {'; '.join(done)}")


def setup(
    settings: Settings,
    *,
    create_demo_schema: bool = False,
    reset_source: bool = False,
    check_salesforce: bool = True,
) -> int:
    """`mogli-bridge setup`: idempotent preparation of ledger, source and Salesforce; prints a report."""
    checks: list[Check] = []
    steps: tuple[tuple[str, Callable[[], list[Check]]], ...] = (
        ("ledger", lambda: _ledger_checks(settings, reset_source)),
        ("source", lambda: _source_checks(settings, create_demo_schema, reset_source)),
    )
    for name, step in steps:
        try:
            checks.extend(step())
        except ConfigurationError:
            raise
        except Exception as exc:
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    if check_salesforce:
        try:
            checks.extend(asyncio.run(_salesforce_checks(settings)))
        except ConfigurationError as exc:
            checks.append(Check("salesforce", False, str(exc)))
        except Exception as exc:
            checks.append(Check("salesforce", False, f"{type(exc).__name__}: {exc}"))
    for check in checks:
        print(f"{'ok ' if check.ok else 'NOT'}  {check.component:<10} {check.message}")
    ready = all(c.ok for c in checks)
    print("ready" if ready else "not ready: fix the lines marked NOT and run setup again")
    return 0 if ready else 1


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable url)"


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
        self._lock: InstanceLock | None = None

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        if not self.stop_event.is_set():
            log.info("daemon.stop_requested")
            self.stop_event.set()

    @contextlib.asynccontextmanager
    async def _ledger(self) -> AsyncIterator[AsyncLedger]:
        from bridge.ledger.engine import durability_problems
        from bridge.ledger.migrate import current_revision, head_revision
        from bridge.ledger.repository import LedgerRepository

        url = self.settings.ledger.url
        if current_revision(url) != head_revision():
            raise ConfigurationError(
                "the ledger is not at the current schema: run `mogli-bridge setup` first", "ledger.url"
            )
        repository = LedgerRepository.from_url(url, clock=self.clock)
        for problem in durability_problems(repository.engine):
            log.warning("ledger.not_durable", problem=problem)
        ledger = AsyncLedger(repository)
        try:
            yield ledger
        finally:
            await ledger.close()
            repository.dispose()

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LOCK_CHECK_SECONDS)
            if stop.is_set() or self._lock is None:
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=1.0)
            if self.stop_event.is_set():
                return False
        if announced:
            log.info("daemon.active", reason="took over the ledger")
        return True

    async def _run_active(self, sf: SalesforceSettings) -> int:
        """The daemon's work, once it owns the ledger."""
        from bridge.salesforce.auth import TokenManager, make_ssl_context
        from bridge.salesforce.rest import SalesforceClient
        from bridge.source.reader import ReplicationSource

        connector = aiohttp.TCPConnector(ssl=make_ssl_context(sf.ca_bundle), limit=sf.max_in_flight * 2)
        async with self._ledger() as ledger, aiohttp.ClientSession(connector=connector) as http:
            checkpoint = await ledger.read_checkpoint(SOURCE_CHECKPOINT)
            resume = int(checkpoint) if checkpoint else None
            source = ReplicationSource(self.settings.source, resume_lsn=resume)
            tokens = TokenManager(http, sf)  # one token for REST and streaming
            client = SalesforceClient(http, tokens, sf)
            sync = self.settings.sync
            metrics = BridgeMetrics()
            pusher = Pusher(
                CountingLedger(ledger, metrics),
                client,
                options=MappingOptions(on_cancel=sync.on_cancel, multiday_events=sync.multiday_events),
                settings=PushSettings(
                    batch_size=sync.batch_size,
                    max_in_flight=sf.max_in_flight,
                    retry_base_seconds=sync.retry_base_seconds,
                    retry_max_seconds=sync.retry_max_seconds,
                    max_attempts=sync.max_attempts,
                    idle_poll_seconds=sync.idle_poll_seconds,
                    api_limit_wait_seconds=sync.api_limit_wait_seconds,
                ),
                clock=self.clock,
            )
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
                ledger=_safe_url(self.settings.ledger.url),
                pid=os.getpid(),
            )
            admin = self._admin_server(ledger, source, client, pusher, ingestor, metrics)
            components: dict[str, Callable[[asyncio.Event], Awaitable[None]]] = {
                "ingest": ingestor.run,
                "push": pusher.run,
                "admin": admin.run,
                "lock": self._watch_lock,
            }
            inbound, writer = await self._inbound(ledger, tokens, client, pusher)
            if inbound is not None:
                components["inbound"] = inbound.run
                components["allocation"] = self._allocation_watch(ledger, client, pusher, metrics).run
            try:
                await self._supervise(components)
            finally:
                await source.close()
                if writer is not None:
                    await asyncio.to_thread(writer.close)
        log.info("daemon.stopped")
        return 0

    async def _inbound(
        self, ledger: AsyncLedger, tokens: TokenManager, client: SalesforceClient, pusher: Pusher
    ) -> tuple[Inbound | None, SchedulerWriter | None]:
        """The inbound component (Salesforce change events), unless `sync.streaming` is off."""
        from bridge.pipeline.inbound import Inbound
        from bridge.rules.policy import PolicyOptions
        from bridge.salesforce.changes import ChangeReader
        from bridge.source.writeback import SchedulerWriter

        sf, sync = self.settings.salesforce, self.settings.sync
        if not sync.streaming:
            return None, None
        channels, line = await self._channels(client, tokens, ledger)
        self.streaming_lines["channel"] = lambda: line
        positions = await self._positions(ledger, channels)
        stream = await self._change_stream(tokens, positions, channels)
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

    async def _change_stream(
        self, tokens: TokenManager, positions: dict[str, ReplayPosition], channels: tuple[str, ...]
    ) -> ChangeStream | PubSubStream:
        """The transport `sync.transport` names; both trust what REST trusts and yield the same items."""
        from bridge.salesforce.auth import make_ssl_context
        from bridge.salesforce.pubsub import PubSubStream, channel_credentials
        from bridge.salesforce.streaming import ChangeStream, StreamTiming

        sf, sync = self.settings.salesforce, self.settings.sync
        if sync.transport == "cometd":
            self.streaming_lines["transport"] = lambda: "cometd"
            log.info("streaming.transport", transport="cometd")
            return ChangeStream(
                tokens,
                sf,
                positions,
                channels=channels,
                timing=StreamTiming(stall_seconds=sync.streaming_stall_seconds),
                ssl_context=make_ssl_context(sf.ca_bundle),
            )
        org_id = await tokens.org_id()
        if org_id is None:
            raise ConfigurationError(
                "sync.transport is pubsub, but the token response names no org (no `id` URL) for `tenantid`",
                "sync.transport",
            )
        security = "plaintext" if sync.pubsub_plaintext else "TLS"
        line = f"pubsub at {sync.pubsub_endpoint} ({security})"
        self.streaming_lines["transport"] = lambda: line
        log.info("streaming.transport", transport="pubsub", endpoint=sync.pubsub_endpoint, security=security)
        return PubSubStream(
            tokens,
            sf,
            positions,
            channels=channels,
            target=sync.pubsub_endpoint,
            tenant_id=org_id,
            credentials=None if sync.pubsub_plaintext else channel_credentials(sf.ca_bundle),
        )

    async def _positions(self, ledger: AsyncLedger, channels: tuple[str, ...]) -> dict[str, ReplayPosition]:
        """The stored positions of the channels. On a first run on them (the custom channel after the standard
        ones, or back), the time of the other channels' last positions: the window since is reconciled."""
        from bridge.records.inbound import ReplayPosition
        from bridge.salesforce.streaming import default_channels

        stored = {}
        custom = f"/data/{self.settings.sync.channel_name}"
        for channel in {*channels, *default_channels(self.settings.salesforce), custom}:
            position = ReplayPosition.decode(await ledger.read_checkpoint(channel))
            if position is not None:
                stored[channel] = position
        positions = {c: p for c, p in stored.items() if c in channels}
        earlier = [p.commit_time for c, p in stored.items() if c not in channels and p.commit_time]
        if positions or not earlier:
            return positions
        return {channel: ReplayPosition(-1, min(earlier)) for channel in channels}

    async def _channels(
        self, client: SalesforceClient, tokens: TokenManager, ledger: AsyncLedger
    ) -> tuple[tuple[str, ...], str]:
        """The channels to subscribe to and a status line saying why: the custom channel when `setup`
        created it (`sync.channel` auto or custom), else the standard ones. A check that fails for a passing
        reason (Salesforce down, the API allocation spent) keeps the channel the ledger has positions of:
        flipping channels at every restart would leave windows only a reconciliation could cover."""
        from bridge.salesforce.channels import ChannelCheck, check_channel
        from bridge.salesforce.streaming import default_channels

        sf, sync = self.settings.salesforce, self.settings.sync
        if sync.channel == "standard":
            return default_channels(sf), "standard channels (sync.channel = standard)"
        try:
            user = await tokens.user_id()
            found = (
                await check_channel(client, sf.objects, sync.channel_name, user)
                if user
                else ChannelCheck(None, "the token response names no user")
            )
        except BridgeError as exc:
            if sync.channel == "custom":
                raise
            reason = f"the custom channel could not be checked ({type(exc).__name__})"
            custom = f"/data/{sync.channel_name}"
            if isinstance(exc, TransientError) and await ledger.read_checkpoint(custom) is not None:
                log.warning("streaming.custom_channel_kept", channel=custom, error_type=type(exc).__name__)
                return (custom,), f"{reason}; kept, as the ledger has its position"
            found = ChannelCheck(None, reason)
        if found.path is not None:
            log.info("streaming.custom_channel", channel=found.path)
            return (found.path,), found.reason
        if sync.channel == "custom":
            raise ConfigurationError(f"sync.channel is custom but {found.reason}", "sync.channel")
        log.warning("streaming.standard_channels", reason=found.reason)
        return default_channels(sf), f"standard channels: {found.reason}"

    def _allocation_watch(
        self, ledger: AsyncLedger, client: SalesforceClient, pusher: Pusher, metrics: BridgeMetrics
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

    def _reconciler(self, ledger: AsyncLedger, client: SalesforceClient, pusher: Pusher) -> Reconciler:
        """A Reconciler on the daemon's ledger and Salesforce client; repairs wake the pusher."""
        from bridge.ledger.reconciliation import ReconcileStore
        from bridge.pipeline.reconcile import Reconciler
        from bridge.rules.drift import RepairPolicy
        from bridge.salesforce.reads import SalesforceReads
        from bridge.source.reader_sql import SchedulerReader

        sync = self.settings.sync

        async def after_repair() -> None:
            pusher.notify()

        return Reconciler(
            ledger=ledger,
            store=ReconcileStore(ledger.repository.engine, self.clock),
            scheduler=SchedulerReader(self.settings.source.dsn, self.settings.source.schema),
            salesforce=SalesforceReads(client, self.settings.salesforce.objects),
            options=MappingOptions(on_cancel=sync.on_cancel, multiday_events=sync.multiday_events),
            policy=RepairPolicy(sync.on_activity_deleted, sync.on_mogli_event_deleted),
            chunk_size=sync.batch_size,
            after_repair=after_repair,
        )

    def _window_reconciler(
        self, ledger: AsyncLedger, client: SalesforceClient, pusher: Pusher
    ) -> Callable[[datetime, str], Awaitable[None]]:
        """A targeted reconciliation of what changed since a point in time, for lost change events."""
        from bridge.pipeline.reconcile import ReconcileOptions

        reconciler = self._reconciler(ledger, client, pusher)

        async def reconcile(since: datetime, reason: str) -> None:
            options = ReconcileOptions(changed_since=since, requested_by="streaming")  # by change time
            run_id = await reconciler.start(options)
            summary = await reconciler.execute(run_id, options)
            log.warning("inbound.reconciled", run_id=run_id, reason=reason, state=summary.state)

        return reconcile

    def _admin_server(
        self,
        ledger: AsyncLedger,
        source: ReplicationSource,
        client: SalesforceClient,
        pusher: Pusher,
        ingestor: Ingestor,
        metrics: BridgeMetrics,
    ) -> AdminServer[ReconcileOptions]:
        """The admin app, reading the live components; it runs reconciliations on request."""
        from bridge.admin import AdminServer, DaemonProbe, ping_postgres
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
            clock=self.clock,
        )
        return AdminServer(
            self.settings.admin,
            probe=probe,
            ledger=ledger,
            metrics=metrics,
            notify_pusher=pusher.notify,
            runner=self._reconciler(ledger, client, pusher),
            make_options=ReconcileOptions,
        )

    async def _supervise(self, components: dict[str, Callable[[asyncio.Event], Awaitable[None]]]) -> None:
        """Run every component in one TaskGroup; the first failure stops them all."""

        async def guarded(name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
            self.states[name] = ComponentState.RUNNING
            try:
                await run(self.stop_event)
                self.states[name] = ComponentState.STOPPED
            except BaseException:
                self.states[name] = ComponentState.FAILED
                raise
            if not self.stop_event.is_set():
                raise FatalError(f"component {name} ended unexpectedly")

        async def deadline() -> None:
            await self.stop_event.wait()
            await asyncio.sleep(SHUTDOWN_GRACE_SECONDS)
            running = [n for n, s in self.states.items() if s is ComponentState.RUNNING]
            log.error("daemon.shutdown_deadline", still_running=running)
            raise FatalError(f"components did not stop within {SHUTDOWN_GRACE_SECONDS:.0f}s: {running}")

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(guarded(n, r), name=n) for n, r in components.items()]
            killer = tg.create_task(deadline(), name="deadline")
            await asyncio.wait(tasks)
            killer.cancel()


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

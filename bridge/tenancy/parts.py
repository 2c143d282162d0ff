"""The components that serve one org: its pusher, gap reconciler, change-event stream and allocation watch.

The single-org daemon builds one `OrgParts` for the org of `[salesforce]`; with tenancy on, every org's
runtime builds its own over `ledger.scoped(org)` (so its claims, positions and runs are that org's alone)
and its own token and REST client. What all orgs share is passed in: the ledger's worker thread, the HTTP
session, the scheduler write-back connection (one replication origin, so one connection) and the metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from bridge.config import Settings
from bridge.metrics import BridgeMetrics
from bridge.pipeline.ports import BookingKey, SchedulerSnapshot
from bridge.pipeline.push import Pusher, PushSettings
from bridge.records.source import BookingRow, LinkRow, UserRow
from bridge.rules.mapping import MappingOptions
from bridge.supervisor import Component

if TYPE_CHECKING:
    from bridge.ledger.repository import Ledger
    from bridge.pipeline.allocation import AllocationWatch
    from bridge.pipeline.gaps import GapReconciler, TakingTurns
    from bridge.pipeline.inbound import Inbound, SchedulerWriteBack
    from bridge.pipeline.ports import PushLedger
    from bridge.pipeline.reconcile import Reconciler
    from bridge.salesforce.auth import TokenManager
    from bridge.salesforce.channels import ChannelCheck
    from bridge.salesforce.pubsub import PubSubStream
    from bridge.salesforce.rest import SalesforceClient
    from bridge.salesforce.streaming import ChangeStream
    from bridge.source.writeback import SchedulerWriter


def mapping_options(settings: Settings) -> MappingOptions:
    """The mapping rules' options from `[sync]`."""
    return MappingOptions(on_cancel=settings.sync.on_cancel, multiday_events=settings.sync.multiday_events)


ORG_IDLE_POLL_MAX_SECONDS = 30.0  # an idle org's claims: at least every 30 s (new work wakes it at once)


def build_pusher(
    settings: Settings,
    ledger: PushLedger,
    client: SalesforceClient,
    clock: Callable[[], datetime],
    *,
    idle_poll_seconds: float | None = None,
) -> Pusher:
    """The pusher: ledger work to Salesforce writes, with `[sync]`'s batching, retries and waits. With
    `idle_poll_seconds` (an org of the fleet) its idle poll backs off up to ORG_IDLE_POLL_MAX_SECONDS while
    there is nothing to do: a thousand idle orgs would otherwise each claim every few seconds."""
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
            idle_poll_seconds=sync.idle_poll_seconds if idle_poll_seconds is None else idle_poll_seconds,
            idle_poll_max_seconds=None if idle_poll_seconds is None else ORG_IDLE_POLL_MAX_SECONDS,
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
    if settings.tenancy.enabled and ledger.org is None:
        ledger = ledger.scoped(None)  # with tenancy, a reconciliation without an org is the default org's
    reader = SchedulerReader(settings.source.dsn, settings.source.schema)
    scheduler: SchedulerSnapshot = (
        reader.scoped(ledger.org) if ledger.org is not None else WithoutOrganizations(reader)
    )
    return Reconciler(
        ledger=ledger,
        store=ledger,
        scheduler=scheduler,
        salesforce=SalesforceReads(client, settings.salesforce.objects),
        options=mapping_options(settings),
        policy=RepairPolicy(sync.on_activity_deleted, sync.on_mogli_event_deleted),
        chunk_size=sync.batch_size,
        after_repair=after_repair,
        progress=progress,
    )


class WithoutOrganizations:
    """The scheduler as the single-org bridge reads it (tenancy off): every user the default org's."""

    def __init__(self, reader: SchedulerSnapshot) -> None:
        self._reader = reader

    async def booking_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[BookingKey]:
        """Bookings in scope."""
        return await self._reader.booking_ids(links, bookings, since, until)

    async def link_ids(self) -> list[str]:
        """Every link id."""
        return await self._reader.link_ids()

    async def user_ids(self) -> list[str]:
        """Every user id."""
        return await self._reader.user_ids()

    async def bookings(self, ids: Sequence[str]) -> dict[str, BookingRow]:
        """Bookings by id."""
        return await self._reader.bookings(ids)

    async def links(self, ids: Sequence[str]) -> dict[str, LinkRow]:
        """Links by id."""
        return await self._reader.links(ids)

    async def users(self, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users by id, none of them in an organization."""
        rows = await self._reader.users(ids)
        return {key: replace(row, organization_id=None) for key, row in rows.items()}


@dataclass(frozen=True, slots=True)
class Shared:
    """What every org's parts share: the ledger (scoped per org by the parts), the metrics, the clock and the
    scheduler write-back (one replication origin session, hence one connection for all orgs)."""

    ledger: Ledger
    metrics: BridgeMetrics
    clock: Callable[[], datetime]
    writer: SchedulerWriter | None


class OrgParts:
    """One org's Salesforce-side components, built once per run of the org (`components()`)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        tokens: TokenManager,
        client: SalesforceClient,
        shared: Shared,
        *,
        idle_poll_seconds: float | None = None,
        observe_subscription: bool = True,
        permit: Callable[[], None] | None = None,
        channel: ChannelCheck | None = None,
    ) -> None:
        self.settings = settings
        self._channel = channel  # the custom channel as the runtime just ensured it (not checked again)
        # Several workers: asked before each scheduler write-back too (the client asks it before requests).
        self._permit = permit
        self.ledger = ledger
        self.tokens = tokens
        self.client = client
        self._shared = shared
        self._observe_subscription = observe_subscription
        self.pusher = build_pusher(
            settings, ledger, client, shared.clock, idle_poll_seconds=idle_poll_seconds
        )
        self.streaming_lines: dict[str, Callable[[], str]] = {}  # status lines of the inbound stream
        self.stream: ChangeStream | PubSubStream | None = None  # the transport `sync.transport` chose
        self._gaps: GapReconciler | None = None

    async def components(self) -> dict[str, Component]:
        """push, gaps and (unless `sync.streaming` is off) inbound and allocation, ready to supervise."""
        components: dict[str, Component] = {"push": self.pusher.run, "gaps": self.gaps().run}
        inbound = await self._inbound()
        if inbound is not None:
            components["inbound"] = inbound.run
            assert self.stream is not None  # built by _inbound
            if self._observe_subscription:
                self.stream.subscribed.observe(self._shared.metrics.observe_subscription)
            components["allocation"] = self._allocation_watch().run
        return components

    def reconciler(self) -> Reconciler:
        """A Reconciler on this org's ledger and Salesforce client; repairs wake its pusher."""

        async def after_repair() -> None:
            self.pusher.notify()

        return build_reconciler(self.settings, self.ledger, self.client, after_repair=after_repair)

    def gaps(self) -> GapReconciler:
        """The org's own gap reconciliations (built once): durable, one at a time, a paused one resumed
        after a back-off from the API budget's recheck interval; status line `gap_reconciliation`."""
        from bridge.pipeline.gaps import GapReconciler, GapSettings

        if self._gaps is None:
            recheck = self.settings.salesforce.api_budget_recheck_seconds
            gaps = GapReconciler(self.reconciler(), self.ledger, settings=GapSettings(recheck, recheck * 8))
            self.streaming_lines["gap_reconciliation"] = lambda: gaps.status
            self._gaps = gaps
        return self._gaps

    def runner(self) -> TakingTurns:
        """The admin API's reconciliation runner for this org: its runs take the gap runs' turn."""
        from bridge.pipeline.gaps import TakingTurns

        return TakingTurns(self.reconciler(), self.gaps().turn)

    async def _inbound(self) -> Inbound | None:
        """The inbound component (Salesforce change events), unless `sync.streaming` is off."""
        from bridge.pipeline.inbound import Inbound
        from bridge.rules.policy import PolicyOptions
        from bridge.salesforce.changes import ChangeReader
        from bridge.subscription import change_stream, choose_channels, stored_positions

        sf, sync = self.settings.salesforce, self.settings.sync
        if not sync.streaming or self._shared.writer is None:
            return None
        channels, line = await choose_channels(
            self.settings, self.client, self.tokens, self.ledger, known=self._channel
        )
        self.streaming_lines["channel"] = lambda: line
        positions = await stored_positions(self.settings, self.ledger, channels)
        stream, transport = await change_stream(self.settings, self.tokens, positions, channels)
        self.streaming_lines["transport"] = lambda: transport
        options = PolicyOptions(
            client_name=sf.client_name,
            on_activity_deleted=sync.on_activity_deleted,
            on_time_changed=sync.on_time_changed,
            on_owner_changed=sync.on_owner_changed,
            on_mogli_event_deleted=sync.on_mogli_event_deleted,
        )
        writer: SchedulerWriteBack = self._shared.writer
        if self._permit is not None:
            writer = PermittedWriteBack(writer, self._permit)
        inbound = Inbound(
            stream,
            self.ledger,
            ChangeReader(self.client, sf.objects),
            writer,
            options,
            on_work=self.pusher.notify,
            reconcile=self.gaps().request,
            identity=self.tokens.user_id,
        )
        self.stream = stream
        return inbound

    def _allocation_watch(self) -> AllocationWatch:
        """The delivered-event allocation watch of the stream: metric, status line, reconciliation."""
        from bridge.pipeline.allocation import AllocationSettings, AllocationWatch

        sync = self.settings.sync
        assert self.stream is not None  # built by _inbound
        metrics = self._shared.metrics
        observe = self._observe_subscription
        watch = AllocationWatch(
            self.client,
            self.stream,
            clock=self._shared.clock,
            reconcile=self.gaps().request,
            on_reading=lambda r: metrics.observe_event_allocation(r.limit, r.remaining) if observe else None,
            settings=AllocationSettings(
                check_seconds=sync.delivered_events_check_seconds,
                warn_fraction=sync.delivered_events_warn_fraction,
            ),
        )
        self.streaming_lines["delivered_events"] = lambda: watch.status
        return watch


class PermittedWriteBack:
    """The scheduler write-back of one org as one of several workers: nothing is written once this worker
    may no longer serve the org (the permit raises NotPermitted, which the inbound retries as transient, its
    position uncommitted: the org's new worker carries the change out)."""

    def __init__(self, writer: SchedulerWriteBack, permit: Callable[[], None]) -> None:
        self._writer = writer
        self._permit = permit

    async def set_times(self, booking_id: str, start_at: datetime, end_at: datetime) -> bool:
        """Move a booking."""
        self._permit()
        return await self._writer.set_times(booking_id, start_at, end_at)

    async def set_related_record(self, booking_id: str, related_record_id: str) -> bool:
        """Re-point a booking."""
        self._permit()
        return await self._writer.set_related_record(booking_id, related_record_id)

    async def set_assigned_user(self, booking_id: str, user_id: str) -> bool:
        """Reassign a booking."""
        self._permit()
        return await self._writer.set_assigned_user(booking_id, user_id)


def with_salesforce(settings: Settings, **changes: object) -> Settings:
    """`settings` with `[salesforce]` changed (an org's connection)."""
    return replace(settings, salesforce=replace(settings.salesforce, **changes))  # type: ignore[arg-type]

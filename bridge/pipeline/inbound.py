"""Inbound: Salesforce change events become decisions (sync/policy.py), carried out in order.

For each change: look up what the ledger knows of the records it names, decide, write back to the
scheduling database (first: a crash before the ledger commit replays the event and repeats an idempotent
UPDATE), then commit the ledger effects together with the channel's replay position, then tell the stream
the position may be used for resubscription. Ignored changes (echoes, value-equal events) write nothing;
their positions are committed in bulk every `flush_every` events and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import structlog

from bridge.aio import Interrupted, next_or_stop, sleep_or_stop
from bridge.errors import PermanentError, TransientError
from bridge.pipeline.ports import InboundLedger
from bridge.records.inbound import (
    ActivityChange,
    Cascade,
    ChangeEntity,
    Heartbeat,
    InboundBatch,
    LinkChange,
    ReplayPosition,
    SalesforceChange,
    WindowLost,
)
from bridge.rules.policy import Decision, Known, PolicyOptions, Reread, RereadKind, WriteBack, decide

log = structlog.get_logger(__name__)

Note = tuple[str, str, str, tuple[tuple[str, str], ...]]
Reconcile = Callable[[datetime, str], Awaitable[None]]
StreamItem = SalesforceChange | WindowLost | Heartbeat
Identity = Callable[[], Awaitable[str | None]]


class ChangeFeed(Protocol):
    """Decoded changes from the watched channels (bridge.salesforce.streaming.ChangeStream)."""

    def changes(self) -> AsyncIterator[StreamItem]:
        """Changes forever, across reconnects."""
        ...

    def committed(self, channel: str, replay_id: int) -> None:
        """The change's effect is durable."""


class RecordReader(Protocol):
    """Re-reads of records as changes (bridge.salesforce.changes.ChangeReader)."""

    async def read_events(self, ids: Sequence[str], commit_time: datetime) -> list[SalesforceChange]:
        """Events by id."""
        ...

    async def read_mogli_events(self, ids: Sequence[str], commit_time: datetime) -> list[SalesforceChange]:
        """Mogli Events by id."""
        ...


class SchedulerWriteBack(Protocol):
    """Writes to bookings (bridge.source.writeback.SchedulerWriter)."""

    async def set_times(self, booking_id: str, start_at: datetime, end_at: datetime) -> bool:
        """Move a booking."""
        ...

    async def set_related_record(self, booking_id: str, related_record_id: str) -> bool:
        """Re-point a booking."""
        ...

    async def set_assigned_user(self, booking_id: str, user_id: str) -> bool:
        """Reassign a booking."""
        ...


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """Pacing of the inbound component."""

    sweep_seconds: float = 2.0  # how often deleted Mogli Events with new bookings are queued again
    # With no link waiting, the sweep asks the ledger only this often (a deletion this inbound applies wakes
    # it at once; one a reconciliation marks is found at the latest then).
    sweep_idle_seconds: float = 60.0
    flush_every: int = 200  # ignored changes between position writes
    retry_base_seconds: float = 1.0  # first wait after a transient failure (ledger, Salesforce, scheduler)
    retry_max_seconds: float = 60.0


@dataclass
class _Effects:
    """What one change (and its re-reads) amounts to."""

    activities: list[ActivityChange] = field(default_factory=list)
    links: list[LinkChange] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


class Inbound:
    """Consumes the change feed and carries out the policy's decisions."""

    def __init__(
        self,
        feed: ChangeFeed,
        ledger: InboundLedger,
        reader: RecordReader,
        writer: SchedulerWriteBack,
        options: PolicyOptions,
        *,
        on_work: Callable[[], None],
        reconcile: Reconcile | None = None,
        identity: Identity | None = None,
        settings: InboundSettings = InboundSettings(),
    ) -> None:
        self._feed = feed
        self._ledger = ledger
        self._reader = reader
        self._writer = writer
        self._options = options
        self._on_work = on_work
        self._reconcile = reconcile
        self._identity = identity  # the integration user's id (commitUser of the bridge's own changes)
        self._settings = settings
        self._unflushed: dict[str, ReplayPosition] = {}
        self._replayable: set[str] = set()  # channels with a delivered event's id: heartbeats are moot
        self._lock = asyncio.Lock()  # one change or one position flush at a time
        self._links_deleted = True  # whether a deleted Mogli Event may wait for a booking (unknown at start)
        self._next_idle_sweep = 0.0
        self._ignored_since_flush = 0
        self.ignored: Counter[str] = Counter()
        self.applied = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume changes and sweep until `stop` is set; the change in hand is finished first."""
        async with asyncio.TaskGroup() as tg:
            sweeper = tg.create_task(self._sweep(stop), name="inbound-sweep")
            try:
                await self._consume(stop)
            finally:
                sweeper.cancel()
        log.info("inbound.stopped", applied=self.applied, ignored=dict(self.ignored))

    async def _consume(self, stop: asyncio.Event) -> None:
        changes = self._feed.changes()
        try:
            while not stop.is_set():
                item = await self._next_or_stop(changes, stop)
                if item is None:
                    break
                await asyncio.shield(self._handle_until_done(item, stop))
        finally:
            with contextlib.suppress(Exception):
                await changes.aclose()  # type: ignore[attr-defined]
            await self._flush()

    @staticmethod
    async def _next_or_stop(changes: AsyncIterator[StreamItem], stop: asyncio.Event) -> StreamItem | None:
        item = await next_or_stop(anext(changes), stop)
        return None if isinstance(item, Interrupted) else item

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Deleted Mogli Events whose link got a new booking are written again (policy `recreate`)."""
        while not stop.is_set():
            await sleep_or_stop(stop, self._settings.sweep_seconds)
            try:
                await self._sweep_once(stop)
            except TransientError as exc:  # the ledger is away; the next tick tries again
                log.warning("inbound.sweep_failed", error_type=type(exc).__name__, error=str(exc)[:300])

    async def _sweep_once(self, stop: asyncio.Event) -> None:
        if self._unflushed:
            await self._flush()
        if self._options.on_mogli_event_deleted != "recreate" or stop.is_set():
            return
        now = asyncio.get_running_loop().time()
        if not self._links_deleted and now < self._next_idle_sweep:
            return  # no link waits for a new booking: an idle org costs the ledger nothing every 2 s
        recreated = await self._ledger.recreate_deleted_links()
        if recreated:
            log.info("inbound.mogli_events_recreated", links=len(recreated))
            self._on_work()
        self._links_deleted = await self._ledger.has_deleted_links()
        self._next_idle_sweep = now + self._settings.sweep_idle_seconds

    # ------------------------------------------------------------------------------ one change

    async def _handle_until_done(self, item: StreamItem, stop: asyncio.Event) -> None:
        """Handle one change; transient failures retry it (its position is not committed until it is done)."""
        delay = self._settings.retry_base_seconds
        while True:
            try:
                await self.handle(item)
                return
            except TransientError as exc:
                log.warning("inbound.retry", error_type=type(exc).__name__, error=str(exc)[:300], delay=delay)
            except PermanentError as exc:
                # Nothing to retry (e.g. a re-read the org refuses): skip it, visible in the log and journal.
                log.error("inbound.change_failed", error_type=type(exc).__name__, error=str(exc)[:300])
                note = ("source", "salesforce", "inbound.change_failed", (("error", str(exc)[:300]),))
                await self._ledger.apply_inbound(InboundBatch(notes=(note,)))
                return
            if await sleep_or_stop(stop, delay):
                return  # not committed: the change is delivered again after the restart
            delay = min(delay * 2, self._settings.retry_max_seconds)

    async def handle(self, item: StreamItem) -> None:
        """Decide on one change and carry the decision out."""
        async with self._lock:
            await self._handle(item)

    async def _handle(self, item: StreamItem) -> None:
        if isinstance(item, WindowLost):
            await self._window_lost(item)
            return
        if isinstance(item, Heartbeat):
            self._note_seen(item)
            if item.first:  # where a new channel started: not left to the next flush
                await self._write_positions()
            return
        await self._learn_identity()
        decision = decide(item, await self._known(item), self._options)
        if decision.is_noop:
            self.ignored[str(decision.ignored)] += 1
            await self._note_position(item)
            return
        effects = await self._carry_out(item, decision, depth=0)
        position = ReplayPosition(item.replay_id, item.commit_time) if item.replay_id is not None else None
        self._unflushed.pop(item.channel, None)
        await self._ledger.apply_inbound(
            InboundBatch(
                activities=tuple(effects.activities),
                links=tuple(effects.links),
                checkpoint_stream=item.channel if position else None,
                checkpoint_position=position.encode() if position else None,
                notes=tuple(effects.notes),
            )
        )
        if any(link.cascade is Cascade.MARK_DELETED for link in effects.links):
            self._links_deleted = True  # its link waits for a new booking: the sweep looks every 2 s again
        if item.replay_id is not None:
            self._replayable.add(item.channel)
            self._feed.committed(item.channel, item.replay_id)
        self.applied += 1
        log.info(
            "inbound.change_applied",
            entity=item.entity.value,
            change_type=item.change_type.value,
            actions=sorted({a.action for a in effects.activities} | {n[2] for n in effects.notes}),
            links=len(effects.links),
        )
        if effects.links or any(a.requeue for a in effects.activities):
            self._on_work()

    async def _learn_identity(self) -> None:
        """Once: the integration user's id, so that its changes are recognised by commitUser."""
        if self._identity is None or self._options.integration_user_id is not None:
            return
        user_id = await self._identity()  # a Salesforce outage is transient: the change is retried
        if user_id is None:
            log.warning("inbound.integration_user_unknown", hint="the token response named no identity")
            self._identity = None
            return
        self._options = replace(self._options, integration_user_id=user_id)
        log.info("inbound.integration_user", user_id=user_id)

    async def _known(self, change: SalesforceChange) -> Known:
        keys = [change.external_id] if change.external_id else []
        if change.entity is ChangeEntity.EVENT:
            found = await self._ledger.find_inbound_activities(change.record_ids, keys)
            return Known(
                activities_by_sfid={a.activity_id: a for a in found if a.activity_id},
                activities_by_booking={a.booking_id: a for a in found},
            )
        if change.entity is ChangeEntity.MOGLI_EVENT:
            links = await self._ledger.find_inbound_links(change.record_ids, keys)
            return Known(
                links_by_sfid={link.mogli_event_id: link for link in links if link.mogli_event_id},
                links_by_link_id={link.link_id: link for link in links},
            )
        return Known()

    async def _carry_out(self, change: SalesforceChange, decision: Decision, depth: int) -> _Effects:
        effects = _Effects(list(decision.activities), list(decision.links))
        for write_back in decision.write_backs:
            await self._write_back(write_back, effects)
        if decision.reread is not None and depth == 0:
            await self._reread(decision.reread, change.commit_time, effects)
        if decision.reconcile is not None:
            entity = decision.reconcile.entity.value
            await self._request_reconcile(decision.reconcile.since, f"overflow:{entity}", effects)
        return effects

    async def _write_back(self, write_back: WriteBack, effects: _Effects) -> None:
        """Carry one change to the scheduling database (under the writer's replication origin)."""
        booking = write_back.booking_id
        found = True
        if write_back.start_at is not None and write_back.end_at is not None:
            found = await self._writer.set_times(booking, write_back.start_at, write_back.end_at)
            effects.notes.append(("activity", booking, "writeback.booking_time", ()))
        if write_back.related_record_id is not None:
            found = await self._writer.set_related_record(booking, write_back.related_record_id)
            effects.notes.append(("activity", booking, "writeback.related_record", ()))
        if write_back.assigned_salesforce_user_id is not None:
            user = await self._ledger.user_for_salesforce_id(write_back.assigned_salesforce_user_id)
            if user is None:
                effects.notes.append(("activity", booking, "writeback.owner_not_mapped", ()))
            else:
                found = await self._writer.set_assigned_user(booking, user)
                effects.activities.append(
                    ActivityChange(booking, "writeback.assigned_user", assigned_user_id=user)
                )
        if not found:
            effects.notes.append(("activity", booking, "writeback.booking_missing", ()))

    async def _reread(self, reread: Reread, commit_time: datetime, effects: _Effects) -> None:
        """Read the records again and decide on what they look like now."""
        ids: Sequence[str] = reread.record_ids
        if reread.kind is RereadKind.EVENTS_OF_LEADS:
            people = await self._ledger.activities_of_people(reread.record_ids)
            ids = sorted({a.activity_id for a in people if a.activity_id})
        if reread.kind is RereadKind.MOGLI_EVENTS:
            current = await self._reader.read_mogli_events(ids, commit_time)
        else:
            current = await self._reader.read_events(ids, commit_time) if ids else []
        detail = (("kind", reread.kind.value), ("records", str(len(ids))))
        effects.notes.append(("source", "salesforce", "salesforce.reread", detail))
        for change in current:
            decision = decide(change, await self._known(change), self._options)
            if not decision.is_noop:
                more = await self._carry_out(change, decision, depth=1)
                effects.activities += more.activities
                effects.links += more.links
                effects.notes += more.notes

    async def _request_reconcile(self, since: datetime, reason: str, effects: _Effects) -> None:
        """A targeted reconciliation from `since`; without a reconciler, a journal entry asks for one."""
        detail = (("since", since.isoformat()), ("reason", reason))
        if self._reconcile is None:
            log.warning("inbound.reconcile_needed", since=since.isoformat(), reason=reason)
            effects.notes.append(("source", "salesforce", "reconcile_needed", detail))
            return
        try:
            await self._reconcile(since, reason)  # returns once the run is open in the ledger, not when done
            effects.notes.append(("source", "salesforce", "reconcile_requested", detail))
        except TransientError:
            raise  # not yet durable: the change is retried, its position uncommitted
        except Exception as exc:  # the reconciler's own failures must not stop the stream
            log.error("inbound.reconcile_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            effects.notes.append(("source", "salesforce", "reconcile_needed", detail))

    async def _window_lost(self, lost: WindowLost) -> None:
        """The channel was resubscribed with -1: reconcile, by change time, the window that was missed."""
        effects = _Effects()
        detail = (("channel", lost.channel),)
        effects.notes.append(("source", lost.channel, f"streaming.{lost.reason}", detail))
        if lost.since is not None:
            await self._request_reconcile(lost.since, f"{lost.reason}:{lost.channel}", effects)
        await self._ledger.apply_inbound(InboundBatch(notes=tuple(effects.notes)))
        self._on_work()

    # ------------------------------------------------------------------------------ positions

    def _note_seen(self, beat: Heartbeat) -> None:
        """A channel without a replay id was seen until then: stored as `-1;<time>` with the next flush."""
        if beat.channel not in self._replayable:
            self._unflushed[beat.channel] = ReplayPosition(-1, beat.seen_until)

    async def _note_position(self, change: SalesforceChange) -> None:
        if change.replay_id is None:
            return
        self._replayable.add(change.channel)
        self._unflushed[change.channel] = ReplayPosition(change.replay_id, change.commit_time)
        self._feed.committed(change.channel, change.replay_id)
        self._ignored_since_flush += 1
        if self._ignored_since_flush >= self._settings.flush_every:
            await self._write_positions()

    async def _flush(self) -> None:
        """Store the positions of ignored changes (nothing else depends on them)."""
        async with self._lock:
            await self._write_positions()

    async def _write_positions(self) -> None:
        pending, self._unflushed = self._unflushed, {}
        self._ignored_since_flush = 0
        for channel, position in pending.items():
            await self._ledger.apply_inbound(
                InboundBatch(checkpoint_stream=channel, checkpoint_position=position.encode())
            )

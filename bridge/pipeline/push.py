"""Push: pending ledger rows become Salesforce records, and their outcomes go back to the ledger.

Scheduling. Up to `max_in_flight` calls run at once, each carrying one claimed batch (up to `batch_size`
rows). Part-filled batches of one kind (links or activities) may use only `max_partial_in_flight` of the
slots: at low load a booking goes out at once, and whatever arrives while those calls are in flight is
batched into the next call (no fixed linger); under load every slot carries a full batch. Mogli
Events are claimed before Events, and the ledger only offers an Event whose link already has its Mogli
Event, so Events of synced links never wait behind Mogli Events still on their way.

Invariants. The ids of rows in flight are excluded from later claims until their outcome is recorded, so no
booking or link is ever pushed twice at once. Outcomes carry the version claimed; the ledger marks a row
synced only if that version is still current. Writes are upserts by External ID, so a crash between a
Salesforce write and the ledger record is healed by writing again on restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import structlog

from bridge.aio import next_or_stop, sleep_or_stop
from bridge.errors import ApiLimitExhausted, LedgerUnavailable, TransientError
from bridge.pipeline.ports import PushLedger, SalesforceWriter
from bridge.records.outbound import (
    ActivityOutcome,
    ActivityWork,
    EventFields,
    LinkOutcome,
    LinkWork,
    OutcomeState,
)
from bridge.rules.mapping import DeleteEvent, MappingOptions, UpsertEvent
from bridge.rules.push_outcomes import (
    PushSettings,
    failure_outcome,
    link_outcome,
    plan_activities,
    plan_links,
    retry_delay,
    upsert_outcome,
)

__all__ = ["PushSettings", "Pusher", "retry_delay"]

log = structlog.get_logger(__name__)
_W = TypeVar("_W", LinkWork, ActivityWork)


@dataclass(frozen=True, slots=True)
class Claim:
    """One batch for one call: links or activities, and whether it fills a whole batch."""

    links: list[LinkWork] = field(default_factory=list)
    activities: list[ActivityWork] = field(default_factory=list)
    full: bool = False


@dataclass(slots=True)
class Flight:
    """A started claim: its rows stay busy until recorded; its slot frees as soon as Salesforce answered."""

    claim: Claim
    links: set[str]
    bookings: set[str]
    holds_slot: bool = True


class Pusher:
    """Claims pending work from the ledger, writes it to Salesforce and records the outcome."""

    def __init__(
        self,
        ledger: PushLedger,
        salesforce: SalesforceWriter,
        *,
        options: MappingOptions,
        settings: PushSettings,
        clock: Callable[[], datetime],
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self._ledger = ledger
        self._sf = salesforce
        self._options = options
        self._settings = settings
        self._clock = clock
        self._changed = asyncio.Event()  # new work was ingested, or a call finished
        # Whether a claim may find something the last one did not: the last claim was cut by its limit or
        # left rows behind, work was ingested, a Mogli Event was written (its Events became claimable), a
        # hold ended or the idle poll came (retries come due). A call that landed alone adds no work, so
        # an org with nothing more to do asks the ledger nothing (each claim is a turn of the shared thread).
        self._may_find = True
        self._tasks: set[asyncio.Task[None]] = set()  # calls and the ledger records that follow them
        self._sending = 0  # slots taken by calls waiting for Salesforce
        self._partial_links = 0  # part-filled calls in flight, per kind
        self._partial_activities = 0
        self._busy_links: set[str] = set()
        self._busy_bookings: set[str] = set()
        self._resume_at = 0.0  # loop time before which no call starts (Salesforce unavailable, API limit)
        self._idle_poll = settings.idle_poll_seconds  # grows while idle polls start nothing (PushSettings)
        self._retry_due: float | None = None  # loop time of the earliest retry this pusher scheduled
        self._error: BaseException | None = None
        self.pushed = 0
        self.failed = 0
        self.waiting_reason: str | None = None

    @property
    def in_flight(self) -> int:
        """Salesforce calls waiting for an answer now."""
        return self._sending

    def notify(self) -> None:
        """New work may be pending (called by the ingestor)."""
        self._may_find = True
        self._idle_poll = self._settings.idle_poll_seconds
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Push until `stop` is set; calls in flight are finished first."""
        try:
            while not stop.is_set():
                self._changed.clear()
                self._raise_error()
                try:
                    if await self.dispatch():
                        self._idle_poll = self._settings.idle_poll_seconds
                except LedgerUnavailable as exc:
                    self._ledger_away(exc)
                await self._wait(stop)
        finally:
            await self._finish_calls()
        self._raise_error()

    async def push_once(self) -> bool:
        """Start every call the ledger's work allows now and wait for them; True when any was started."""
        self._may_find = True
        started = await self.dispatch()
        await self._finish_calls()
        self._raise_error()
        return started > 0

    async def dispatch(self) -> int:
        """Claim work for every free slot and start those calls; returns how many started."""
        free = self._settings.max_in_flight - self._sending
        if free <= 0 or asyncio.get_running_loop().time() < self._resume_at or not self._may_find:
            return 0
        claims = await self._claim(free)
        for claim in claims:
            self._start(claim)
        return len(claims)

    async def _claim(self, free: int) -> list[Claim]:
        """Batches for up to `free` calls: links first, then activities, each kind in one ledger query.

        One query for several batches matters: a claim's cost grows with the pending backlog, not with
        its limit. Claims take no lock: rows in flight come back and are dropped here.
        """
        size = self._settings.batch_size
        now = self._clock()
        self._may_find = False
        busy_links = frozenset(self._busy_links)
        claimed = await self._ledger.claim_link_work(now, size * free + len(busy_links))
        links = [w for w in claimed if w.link.link_id not in busy_links][: size * free]
        claims = [
            Claim(links=part, full=full)
            for part, full in self._batches(links, self._partial_links < self._settings.max_partial_in_flight)
        ]
        left_behind = len(links) >= size * free or sum(len(c.links) for c in claims) < len(links)
        free -= len(claims)
        if free > 0:
            busy = frozenset(self._busy_bookings)
            activities = await self._ledger.claim_activity_work(now, size * free, busy)
            partial_ok = self._partial_activities < self._settings.max_partial_in_flight
            taken = [
                Claim(activities=part, full=full) for part, full in self._batches(activities, partial_ok)
            ]
            claims += taken
            full_claim = len(activities) >= size * free
            left_behind |= full_claim or sum(len(c.activities) for c in taken) < len(activities)
        else:
            left_behind = True  # the links took every slot: Events were not asked for
        self._may_find |= left_behind
        return claims

    def _batches(self, rows: list[_W], partial_ok: bool) -> list[tuple[list[_W], bool]]:
        """Full batches of `rows`, plus the part-filled rest when `partial_ok`; (batch, full) pairs."""
        size = self._settings.batch_size
        out = [(rows[i : i + size], len(rows) - i >= size) for i in range(0, len(rows), size)]
        if out and not out[-1][1] and not partial_ok:
            out.pop()
        return out

    def _start(self, claim: Claim) -> None:
        """Mark the claim's rows busy and run its call as a task."""
        links = {w.link.link_id for w in claim.links}
        bookings = {w.booking.booking_id for w in claim.activities}
        self._busy_links |= links
        self._busy_bookings |= bookings
        self._sending += 1
        self._count_partial(claim, 1)
        task = asyncio.create_task(self._call(Flight(claim, links, bookings)), name="push.call")
        self._tasks.add(task)

    def _land(self, flight: Flight) -> None:
        """Salesforce answered (or the call failed): free the slot for the next claim."""
        if flight.holds_slot:
            flight.holds_slot = False
            self._sending -= 1
            self._count_partial(flight.claim, -1)
            self._changed.set()

    async def _call(self, flight: Flight) -> None:
        """One call and its ledger record; releases the rows afterwards, whatever happened."""
        try:
            if flight.claim.links:
                await self._push_links(flight)
                self._may_find = True  # their Events can be claimed now
            else:
                await self._push_activities(flight)
            self.waiting_reason = None
        except LedgerUnavailable as exc:
            # The rows stay pending in the ledger and are written again (by External ID) once it is back.
            self._ledger_away(exc)
        except ApiLimitExhausted as exc:
            self.waiting_reason = "api_limit"
            limit = self._settings.api_limit_wait_seconds
            delay = min(exc.retry_after or limit, limit)
            log.warning("push.api_limit_wait", seconds=delay, reason=str(exc))
            self._hold(delay)
        except TransientError as exc:
            self.waiting_reason = "salesforce_unavailable"
            delay = exc.retry_after or self._settings.retry_base_seconds * 5
            log.warning(
                "push.salesforce_unavailable", seconds=delay, error=type(exc).__name__, reason=str(exc)
            )
            self._hold(delay)
        except Exception as exc:
            if self._error is None:
                self._error = exc
        finally:
            self._land(flight)
            self._busy_links -= flight.links
            self._busy_bookings -= flight.bookings
            current = asyncio.current_task()
            if current is not None:
                self._tasks.discard(current)
            self._changed.set()

    def _count_partial(self, claim: Claim, step: int) -> None:
        if claim.full:
            return
        if claim.links:
            self._partial_links += step
        else:
            self._partial_activities += step

    def _ledger_away(self, exc: LedgerUnavailable) -> None:
        """The ledger cannot be reached: start no call until it has had time to come back."""
        self.waiting_reason = "ledger_unavailable"
        delay = self._settings.retry_base_seconds * 5
        log.warning("push.ledger_unavailable", seconds=delay, reason=str(exc))
        self._hold(delay)

    def _hold(self, seconds: float) -> None:
        """Start no call for `seconds` (rows of the failed call stay pending and are claimed again)."""
        loop = asyncio.get_running_loop()
        self._resume_at = max(self._resume_at, loop.time() + seconds)

    def _raise_error(self) -> None:
        """Re-raise the first unexpected error of a call (the supervisor stops the daemon)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def _wait(self, stop: asyncio.Event) -> None:
        """Sleep until new work, a finished call, stop, or the idle poll (retries come due); during a hold
        only stop or the hold's end wake it."""
        loop = asyncio.get_running_loop()
        held = self._resume_at - loop.time()
        if held > 0:
            await sleep_or_stop(stop, held)
            self._may_find = True
        else:
            within = self._idle_poll
            if self._retry_due is not None:
                within = min(within, max(0.0, self._retry_due - loop.time()))
            await next_or_stop(self._changed.wait(), stop, within=within)
            if not self._changed.is_set():
                self._may_find = True  # the idle poll: retries may have come due
                if self._retry_due is not None and loop.time() >= self._retry_due:
                    self._retry_due = None
                ceiling = self._settings.idle_poll_max_seconds
                if ceiling is not None:
                    self._idle_poll = min(self._idle_poll * 2, max(ceiling, self._settings.idle_poll_seconds))

    def _note_retries(self, retry_times: Sequence[datetime | None]) -> None:
        """The earliest retry among outcomes just recorded: the idle poll comes no later."""
        due = [t for t in retry_times if t is not None]
        if not due:
            return
        at = asyncio.get_running_loop().time() + max(0.0, (min(due) - self._clock()).total_seconds())
        self._retry_due = at if self._retry_due is None else min(self._retry_due, at)

    async def _finish_calls(self) -> None:
        """Wait for every call in flight (a cancellation of the waiter does not cancel the calls)."""
        if self._tasks:
            await asyncio.shield(asyncio.gather(*self._tasks, return_exceptions=True))

    # ---------------------------------------------------------------- links

    async def _push_links(self, flight: Flight) -> None:
        now = self._clock()
        plan = plan_links(flight.claim.links)
        if plan.writes:
            results = await self._sf.upsert_mogli_events([fields for _, fields in plan.writes])
            for (item, fields), res in zip(plan.writes, results, strict=True):
                plan.outcomes.append(link_outcome(item, fields, res, now, self._settings))
        self._land(flight)
        await self._ledger.record_link_outcomes(plan.outcomes, self._clock())
        self._note_retries([o.retry_at for o in plan.outcomes])
        self._log_links(plan.outcomes)

    def _log_links(self, outcomes: Sequence[LinkOutcome]) -> None:
        for o in outcomes:
            log.info(
                "sync.link_" + o.state.value,
                link_id=o.link_id,
                mogli_event_id=o.mogli_event_id,
                error_code=o.error_code,
                error=o.error,
            )

    # ---------------------------------------------------------------- activities

    async def _push_activities(self, flight: Flight) -> None:
        now = self._clock()
        plan = plan_activities(flight.claim.activities, self._options, now, self._settings)
        if plan.upserts:
            plan.outcomes.extend(await self._write_events(plan.upserts, now))
        if plan.deletes:
            plan.outcomes.extend(await self._delete_events(plan.deletes, now))
        self._land(flight)
        await self._ledger.record_activity_outcomes(plan.outcomes, self._clock())
        self._note_retries([o.retry_at for o in plan.outcomes])
        self._log_activities(plan.outcomes)

    async def _write_events(
        self, upserts: list[tuple[ActivityWork, UpsertEvent]], now: datetime
    ) -> list[ActivityOutcome]:
        fields: list[EventFields] = [a.fields for _, a in upserts]
        results = await self._sf.upsert_events(fields)
        return [
            upsert_outcome(item, action, res, now, self._settings)
            for (item, action), res in zip(upserts, results, strict=True)
        ]

    async def _delete_events(
        self, deletes: list[tuple[ActivityWork, DeleteEvent]], now: datetime
    ) -> list[ActivityOutcome]:
        known = {item.booking.booking_id: item.activity_id for item, _ in deletes if item.activity_id}
        unknown = [item.booking.booking_id for item, _ in deletes if not item.activity_id]
        if unknown:
            # The ledger may not know an Event that a crash left unrecorded: look it up by External ID.
            known.update(await self._sf.find_events_by_booking(unknown))
        ids = sorted(set(known.values()))
        results = {r.key: r for r in await self._sf.delete_records(ids)} if ids else {}
        outcomes = []
        for item, action in deletes:
            booking_id = item.booking.booking_id
            event_id = known.get(booking_id)
            res = results.get(event_id) if event_id else None
            if res is None or res.ok:
                outcomes.append(
                    ActivityOutcome(
                        booking_id,
                        item.version,
                        OutcomeState.CANCELLED,
                        activity_id=event_id,
                        rule=action.reason,
                    )
                )
            else:
                outcomes.append(
                    failure_outcome(item, res.error, now, "Salesforce refused the delete", self._settings)
                )
        return outcomes

    def _log_activities(self, outcomes: Sequence[ActivityOutcome]) -> None:
        for o in outcomes:
            if o.state is OutcomeState.SYNCED or o.state is OutcomeState.CANCELLED:
                self.pushed += 1
            elif o.state is OutcomeState.FAILED:
                self.failed += 1
            log.info(
                "sync.activity_" + o.state.value,
                booking_id=o.booking_id,
                activity_id=o.activity_id,
                rule=o.rule,
                error_code=o.error_code,
                error=o.error,
            )

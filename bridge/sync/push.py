"""Push: pending ledger rows become Salesforce records, and their outcomes go back to the ledger.

Mogli Events are written before the Events that point at them. Writes are upserts by External ID, so a crash
between a Salesforce write and the ledger record is healed by writing again on restart.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from bridge.errors import ApiLimitExhausted, ErrorKind, TransientError
from bridge.records import (
    ActivityOutcome,
    ActivityWork,
    EventFields,
    LinkOutcome,
    LinkWork,
    MogliEventFields,
    OutcomeState,
    RecordError,
    WriteResult,
)
from bridge.sync.mapping import (
    DeleteEvent,
    FailureCode,
    MappingOptions,
    NothingToDo,
    RuleFailure,
    UpsertEvent,
    event_action,
    mogli_event_for,
)
from bridge.sync.ports import Ledger, SalesforceWriter

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PushSettings:
    """Pacing of the push worker."""

    batch_size: int = 200
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 20
    idle_poll_seconds: float = 1.0
    api_limit_wait_seconds: float = 300.0


def retry_delay(attempts: int, settings: PushSettings, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling: float = min(settings.retry_base_seconds * 2.0 ** min(attempts, 20), settings.retry_max_seconds)
    return max(settings.retry_base_seconds, ceiling * rand())


class Pusher:
    """Claims pending work from the ledger, writes it to Salesforce and records the outcome."""

    def __init__(
        self,
        ledger: Ledger,
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
        self._wake = asyncio.Event()
        self.pushed = 0
        self.failed = 0
        self.waiting_reason: str | None = None

    def notify(self) -> None:
        """New work may be pending (called by the ingestor)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Push until `stop` is set; a Salesforce call in flight is finished first."""
        while not stop.is_set():
            self._wake.clear()
            try:
                did_work = await asyncio.shield(self.push_once())
                self.waiting_reason = None
            except ApiLimitExhausted as exc:
                self.waiting_reason = "api_limit"
                delay = min(
                    exc.retry_after or self._settings.api_limit_wait_seconds,
                    self._settings.api_limit_wait_seconds,
                )
                log.warning("push.api_limit_wait", seconds=delay, reason=str(exc))
                await self._pause(stop, delay)
                continue
            except TransientError as exc:
                self.waiting_reason = "salesforce_unavailable"
                delay = exc.retry_after or self._settings.retry_base_seconds * 5
                log.warning(
                    "push.salesforce_unavailable", seconds=delay, error=type(exc).__name__, reason=str(exc)
                )
                await self._pause(stop, delay)
                continue
            if not did_work:
                await self._pause(stop, self._settings.idle_poll_seconds)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep until new work, stop, or the timeout."""
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def push_once(self) -> bool:
        """One round: Mogli Events first, then Events. True when anything was attempted."""
        links = await self._push_links()
        activities = await self._push_activities()
        return links or activities

    # ---------------------------------------------------------------- links

    async def _push_links(self) -> bool:
        now = self._clock()
        work = await self._ledger.claim_link_work(now, self._settings.batch_size)
        if not work:
            return False
        outcomes: list[LinkOutcome] = []
        to_write: list[tuple[LinkWork, MogliEventFields]] = []
        for item in work:
            result = mogli_event_for(item)
            if isinstance(result, RuleFailure):
                outcomes.append(
                    LinkOutcome(
                        item.link.link_id,
                        item.version,
                        OutcomeState.FAILED,
                        error_code=result.code.value,
                        error=result.message,
                    )
                )
            else:
                to_write.append((item, result))
        if to_write:
            results = await self._sf.upsert_mogli_events([fields for _, fields in to_write])
            for (item, fields), res in zip(to_write, results, strict=True):
                outcomes.append(self._link_outcome(item, fields, res, now))
        await self._ledger.record_link_outcomes(outcomes, self._clock())
        self._log_links(outcomes)
        return True

    def _link_outcome(
        self, item: LinkWork, fields: MogliEventFields, res: WriteResult, now: datetime
    ) -> LinkOutcome:
        key, version = item.link.link_id, item.version
        if res.ok:
            return LinkOutcome(
                key,
                version,
                OutcomeState.SYNCED,
                mogli_event_id=res.record_id,
                owner_salesforce_id=fields.owner_id,
                rule="owner=link owner",
            )
        return self._failure_outcome_link(item, res.error, now)

    def _failure_outcome_link(self, item: LinkWork, error: RecordError | None, now: datetime) -> LinkOutcome:
        assert error is not None
        if error.kind is ErrorKind.TRANSIENT and item.attempts + 1 < self._settings.max_attempts:
            retry_at = now + timedelta(seconds=retry_delay(item.attempts, self._settings))
            return LinkOutcome(
                item.link.link_id,
                item.version,
                OutcomeState.RETRY,
                error_code=error.code,
                error=error.message,
                retry_at=retry_at,
            )
        return LinkOutcome(
            item.link.link_id,
            item.version,
            OutcomeState.FAILED,
            error_code=error.code,
            error=f"Salesforce rejected the Mogli Event: {error.code}: {error.message}",
        )

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

    async def _push_activities(self) -> bool:
        now = self._clock()
        work = await self._ledger.claim_activity_work(now, self._settings.batch_size)
        if not work:
            return False
        outcomes: list[ActivityOutcome] = []
        upserts: list[tuple[ActivityWork, UpsertEvent]] = []
        deletes: list[tuple[ActivityWork, DeleteEvent]] = []
        for item in work:
            action = event_action(item, self._options)
            if isinstance(action, UpsertEvent):
                upserts.append((item, action))
            elif isinstance(action, DeleteEvent):
                deletes.append((item, action))
            elif isinstance(action, NothingToDo):
                outcomes.append(
                    ActivityOutcome(
                        item.booking.booking_id,
                        item.version,
                        OutcomeState.CANCELLED,
                        activity_id=item.activity_id,
                        rule=action.reason,
                    )
                )
            elif action.code is FailureCode.MOGLI_EVENT_PENDING:
                # The link's Mogli Event is on its way; try again shortly rather than fail the booking.
                retry_at = now + timedelta(seconds=self._settings.retry_base_seconds)
                outcomes.append(
                    ActivityOutcome(
                        item.booking.booking_id,
                        item.version,
                        OutcomeState.RETRY,
                        error_code=action.code.value,
                        error=action.message,
                        retry_at=retry_at,
                    )
                )
            else:
                outcomes.append(
                    ActivityOutcome(
                        item.booking.booking_id,
                        item.version,
                        OutcomeState.FAILED,
                        error_code=action.code.value,
                        error=action.message,
                    )
                )
        if upserts:
            outcomes.extend(await self._write_events(upserts, now))
        if deletes:
            outcomes.extend(await self._delete_events(deletes, now))
        await self._ledger.record_activity_outcomes(outcomes, self._clock())
        self._log_activities(outcomes)
        return True

    async def _write_events(
        self, upserts: list[tuple[ActivityWork, UpsertEvent]], now: datetime
    ) -> list[ActivityOutcome]:
        fields: list[EventFields] = [a.fields for _, a in upserts]
        results = await self._sf.upsert_events(fields)
        outcomes = []
        for (item, action), res in zip(upserts, results, strict=True):
            if res.ok:
                outcomes.append(
                    ActivityOutcome(
                        item.booking.booking_id,
                        item.version,
                        OutcomeState.SYNCED,
                        activity_id=res.record_id,
                        fields=action.fields,
                        rule=action.rule,
                    )
                )
            else:
                outcomes.append(self._failure_outcome(item, res.error, now, "Salesforce rejected the Event"))
        return outcomes

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
                outcomes.append(self._failure_outcome(item, res.error, now, "Salesforce refused the delete"))
        return outcomes

    def _failure_outcome(
        self, item: ActivityWork, error: RecordError | None, now: datetime, what: str
    ) -> ActivityOutcome:
        assert error is not None
        booking_id = item.booking.booking_id
        if error.kind is ErrorKind.TRANSIENT and item.attempts + 1 < self._settings.max_attempts:
            retry_at = now + timedelta(seconds=retry_delay(item.attempts, self._settings))
            return ActivityOutcome(
                booking_id,
                item.version,
                OutcomeState.RETRY,
                error_code=error.code,
                error=error.message,
                retry_at=retry_at,
            )
        return ActivityOutcome(
            booking_id,
            item.version,
            OutcomeState.FAILED,
            error_code=error.code,
            error=f"{what}: {error.code}: {error.message}",
        )

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

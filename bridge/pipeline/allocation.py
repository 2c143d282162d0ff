"""The delivered change-event allocation, watched: a reading for metrics and status, a warning before it runs
out, and, once it has run out, a reconciliation of the window the stream could not see after it resets.

Salesforce stops delivering change events to every subscriber of the org when the daily allocation
(`DailyDeliveredPlatformEvents`) is used up; events of that time may age out of retention before it resets.
`AllocationWatch` reads `/limits` every `check_seconds` and asks the stream whether CometD refused it.
While either says "exhausted" the bridge is blind; the first reading after that shows the allocation back,
and the window from the last good reading is reconciled by change time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from bridge.aio import sleep_or_stop
from bridge.errors import BridgeError
from bridge.records.inbound import EventAllocation

log = structlog.get_logger(__name__)

Reconcile = Callable[[datetime, str], Awaitable[None]]
REASON = "delivered_event_allocation_exhausted"


class AllocationReader(Protocol):
    """Reads the allocation (bridge.salesforce.rest.SalesforceClient)."""

    async def event_allocation(self) -> EventAllocation:
        """`DailyDeliveredPlatformEvents` now."""
        ...


class StreamRefusal(Protocol):
    """Whether CometD refused the stream for the allocation (bridge.salesforce.streaming.ChangeStream)."""

    @property
    def allocation_exhausted(self) -> bool:
        """True while Salesforce refuses the stream for the daily allocation."""
        ...


@dataclass(frozen=True, slots=True)
class AllocationSettings:
    """When to read and when to warn."""

    check_seconds: float = 300.0
    warn_fraction: float = 0.2  # warn when less than this share of the allocation is left


class AllocationWatch:
    """Watches the delivered-event allocation; reconciles what the stream missed while it was used up."""

    def __init__(
        self,
        reader: AllocationReader,
        stream: StreamRefusal,
        *,
        clock: Callable[[], datetime],
        reconcile: Reconcile | None = None,
        on_reading: Callable[[EventAllocation], None] = lambda _: None,
        settings: AllocationSettings = AllocationSettings(),
    ) -> None:
        self._reader = reader
        self._stream = stream
        self._clock = clock
        self._reconcile = reconcile
        self._on_reading = on_reading
        self._settings = settings
        self._last_seeing: datetime | None = None  # the last check that found the stream able to receive
        self._warned = False
        self.latest: EventAllocation | None = None
        self.blind_since: datetime | None = None  # set while the allocation is used up
        self.reconciliations = 0

    @property
    def status(self) -> str:
        """One line for the status output."""
        latest = self.latest
        figures = f"{latest.remaining} of {latest.limit} left" if latest else "not read yet"
        # The stream's refusal counts at once, before the next check marks the watch blind: the status
        # line never says "ok" after the stream's own error line.
        since = self.blind_since or (self._last_seeing if self._stream.allocation_exhausted else None)
        if since is not None or self._stream.allocation_exhausted:
            when = since.isoformat() if since else "the first check"
            return f"exhausted since {when} ({figures}); reconciliation after the reset"
        if latest is None:
            return "unknown: not read yet"
        return f"low: {figures}" if self._low(latest) else f"ok: {figures}"

    async def run(self, stop: asyncio.Event) -> None:
        """Check now and every `check_seconds` until `stop` is set."""
        while not stop.is_set():
            await self.check()
            await sleep_or_stop(stop, self._settings.check_seconds)

    async def check(self) -> None:
        """Read the allocation once and act on it."""
        try:
            reading: EventAllocation | None = await self._reader.event_allocation()
        except BridgeError as exc:  # advisory: an outage or a refused /limits never stops the daemon
            log.warning("streaming.allocation_unread", error_type=type(exc).__name__, error=str(exc)[:300])
            reading = None
        now = self._clock()
        if reading is not None:
            self.latest = reading
            self._on_reading(reading)
        exhausted = self._stream.allocation_exhausted or (reading is not None and reading.remaining <= 0)
        if exhausted:
            self._went_blind(now)
            return
        if reading is None:
            return  # unknown: neither blind nor confirmed back
        if self.blind_since is not None:
            await self._recovered(reading)
        self._last_seeing = now
        self._warn_if_low(reading)

    def _went_blind(self, now: datetime) -> None:
        if self.blind_since is not None:
            return
        self.blind_since = self._last_seeing or now
        latest = self.latest
        log.error(
            "streaming.allocation_exhausted",
            blind_since=self.blind_since.isoformat(),
            limit=latest.limit if latest else None,
            reason="no change events are delivered until the daily allocation resets; "
            "the missed window is reconciled then",
        )

    async def _recovered(self, reading: EventAllocation) -> None:
        since = self.blind_since
        assert since is not None
        log.warning(
            "streaming.allocation_restored",
            remaining=reading.remaining,
            limit=reading.limit,
            reconcile_since=since.isoformat(),
        )
        if self._reconcile is None:
            log.warning("streaming.reconcile_needed", since=since.isoformat(), reason=REASON)
        else:
            try:
                await self._reconcile(since, REASON)
                self.reconciliations += 1
            except Exception as exc:  # must not stop the daemon: the next check tries again
                log.error("streaming.reconcile_failed", error_type=type(exc).__name__, error=str(exc)[:300])
                return
        self.blind_since = None
        self._warned = False

    def _low(self, reading: EventAllocation) -> bool:
        return reading.remaining < self._settings.warn_fraction * reading.limit

    def _warn_if_low(self, reading: EventAllocation) -> None:
        """Warn once when the allocation falls below the threshold; again after it recovered and fell."""
        if not self._low(reading):
            self._warned = False
            return
        if not self._warned:
            self._warned = True
            log.warning(
                "streaming.allocation_low",
                remaining=reading.remaining,
                limit=reading.limit,
                warn_fraction=self._settings.warn_fraction,
            )

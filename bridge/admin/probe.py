"""DaemonProbe: gathers one `Readings` snapshot from the running components, with real pings.

Pings: the scheduling database (SELECT 1 on an ordinary connection, in a thread), the ledger (its own ping)
and Salesforce (a `/limits` call at most every `SALESFORCE_PING_SECONDS`; a failed ping is retried sooner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import psycopg2
import structlog

from bridge.admin.health import PUSHER_WAITING, SALESFORCE_WAITS
from bridge.admin.ports import IngestorView, PusherView, SalesforceView, SlotView, SourceView
from bridge.metrics import CheckResult, Readings, ReplicationReading
from bridge.pipeline.ports import AdminLedger
from bridge.records.ledger import SOURCE_STREAMS
from bridge.redact import describe

log = structlog.get_logger(__name__)

SALESFORCE_PING_SECONDS = 60.0
FAILED_PING_RETRY_SECONDS = 10.0
PING_TIMEOUT_SECONDS = 10.0


def ping_postgres(dsn: str) -> None:
    """SELECT 1 on a fresh ordinary connection; raises when the database does not answer."""
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    finally:
        conn.close()


def _error(exc: BaseException) -> str:
    """A one-line reason (the driver's first line), with anything password- or token-like masked: it is shown
    on the token-free status page and /readyz."""
    return describe(exc)


class DaemonProbe:
    """Reads the live components' counters and pings their dependencies."""

    def __init__(
        self,
        *,
        slot: str,
        states: Mapping[str, str],
        ledger: AdminLedger,
        source: SourceView,
        salesforce: SalesforceView,
        pusher: PusherView,
        ingestor: IngestorView,
        ping_scheduler: Callable[[], None],
        read_slot: Callable[[], SlotView | None],
        streaming: Callable[[], Mapping[str, str]] = dict,
        subscribed: Callable[[], bool | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = lambda: asyncio.get_running_loop().time(),
    ) -> None:
        self.slot = slot
        self.states = states
        self.ledger = ledger
        self.source = source
        self.salesforce = salesforce
        self.pusher = pusher
        self.ingestor = ingestor
        self._ping_scheduler = ping_scheduler
        self._read_slot = read_slot
        self._streaming = streaming
        self._subscribed = subscribed
        self._clock = clock
        self._monotonic = monotonic
        self._sf_check: CheckResult | None = None
        self._sf_checked_at = 0.0
        self._sf_lock = asyncio.Lock()

    async def readings(self) -> Readings:
        """One snapshot: pings, slot lag, ledger counts and the components' counters."""
        checks = await asyncio.gather(
            self._check_scheduler(), self._check_ledger(), self._salesforce_health()
        )
        slot = await self._slot()
        counts, totals, positions = await self._ledger_figures()
        usage = self.salesforce.usage
        return Readings(
            at=self._clock(),
            components={name: str(state) for name, state in self.states.items()},
            checks=tuple(checks),
            replication=self._replication(slot),
            api_used=usage.used if usage else None,
            api_limit=usage.limit if usage else None,
            api_calls=self.salesforce.calls,
            pushed=self.pusher.pushed,
            failed=self.pusher.failed,
            waiting_reason=self.pusher.waiting_reason,
            ledger_counts=counts,
            drift_found=totals[0],
            drift_repaired=totals[1],
            stream_positions={k: v for k, v in positions.items() if k not in SOURCE_STREAMS},
            streaming=dict(self._streaming()),
            stream_subscribed=self._subscribed(),
        )

    async def _ledger_figures(self) -> tuple[dict[str, int], tuple[int, int], dict[str, str]]:
        try:
            counts = await self.ledger.counts()
            totals = await self.ledger.drift_totals()
            positions = await self.ledger.list_checkpoints()
        except Exception as exc:
            log.warning("admin.ledger_read_failed", error=_error(exc))
            return {}, (0, 0), {}
        return counts, (totals.found, totals.repaired), positions

    async def _slot(self) -> SlotView | None:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._read_slot), PING_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning("admin.slot_read_failed", error=_error(exc))
            return None

    def _replication(self, slot: SlotView | None) -> ReplicationReading:
        stats = self.source.stats
        received, applied = stats.last_commit_time, self.ingestor.last_commit_time
        lag: float | None = None  # unknown while disconnected: the gap may be growing unseen
        if stats.connected:
            lag = max((received - applied).total_seconds(), 0.0) if received and applied else 0.0
        return ReplicationReading(
            slot=self.slot,
            connected=stats.connected,
            slot_exists=slot is not None,
            slot_active=slot.active if slot else None,
            wal_status=slot.wal_status if slot else None,
            lag_bytes=slot.unconfirmed_bytes if slot else None,
            retained_bytes=slot.retained_bytes if slot else None,
            lag_seconds=lag,
            applied_lsn=self.ingestor.applied_lsn,
            acked_lsn=stats.acked_lsn,
            last_commit_time=applied,
            queue_depth=stats.queue_depth,
            reconnects=stats.reconnects,
        )

    async def _check_scheduler(self) -> CheckResult:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._ping_scheduler), PING_TIMEOUT_SECONDS)
        except Exception as exc:
            return CheckResult("scheduler", False, _error(exc))
        return CheckResult("scheduler", True)

    async def _check_ledger(self) -> CheckResult:
        try:
            await asyncio.wait_for(self.ledger.ping(), PING_TIMEOUT_SECONDS)
        except Exception as exc:
            return CheckResult("ledger", False, _error(exc))
        return CheckResult("ledger", True)

    async def _salesforce_health(self) -> CheckResult:
        """The ping, failed also while the pusher waits after Salesforce failed it (a ping alone can pass
        while every write answers 503)."""
        ping = await self.check_salesforce()
        waiting = self.pusher.waiting_reason
        if ping.ok and waiting in SALESFORCE_WAITS:
            return CheckResult("salesforce", False, f"ping ok, but {PUSHER_WAITING[waiting]}")
        return ping

    async def check_salesforce(self) -> CheckResult:
        """The cached Salesforce ping; a fresh `/limits` call when the last one is too old."""
        async with self._sf_lock:
            age = self._monotonic() - self._sf_checked_at
            fresh = (
                SALESFORCE_PING_SECONDS if self._sf_check and self._sf_check.ok else FAILED_PING_RETRY_SECONDS
            )
            if self._sf_check is not None and age < fresh:
                return self._sf_check
            try:
                await asyncio.wait_for(self.salesforce.limits(), PING_TIMEOUT_SECONDS)
                self._sf_check = CheckResult("salesforce", True)
            except Exception as exc:
                self._sf_check = CheckResult("salesforce", False, _error(exc))
            self._sf_checked_at = self._monotonic()
            return self._sf_check

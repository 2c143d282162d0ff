"""Hand-written fakes of the daemon's live components, implementing the admin app's Protocols."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.ledger.repository import Ledger
from bridge.records.ledger import DriftItem
from bridge.records.outbound import ApiUsage

COMMIT_TIME = datetime(2026, 11, 24, 11, 59, 50, tzinfo=UTC)


@dataclass
class FakeStats:
    """SourceStats-shaped counters."""

    connected: bool = True
    acked_lsn: int = 5000
    reconnects: int = 0
    last_commit_time: datetime | None = COMMIT_TIME
    queue_depth: int = 2


@dataclass
class FakeSource:
    """A replication reader whose counters the test sets."""

    stats: FakeStats = field(default_factory=FakeStats)


@dataclass(frozen=True)
class FakeSlot:
    """A SlotStatus-shaped reading."""

    active: bool = True
    wal_status: str | None = "reserved"
    unconfirmed_bytes: int | None = 4096
    retained_bytes: int | None = 8192


class FakeSalesforce:
    """The client's usage counters; `limits()` answers or fails as told, and counts its calls."""

    def __init__(self) -> None:
        self.usage: ApiUsage | None = ApiUsage(used=1200, limit=15000)
        self.calls = 42
        self.limit_calls = 0
        self.down = False

    async def limits(self) -> ApiUsage:
        """The allocation, or a failure while `down`."""
        self.limit_calls += 1
        if self.down:
            raise ConnectionError("salesforce unreachable")
        assert self.usage is not None
        return self.usage


class FakePusher:
    """Push counters and a notify() that counts wake-ups."""

    def __init__(self) -> None:
        self.pushed = 7
        self.failed = 1
        self.waiting_reason: str | None = None
        self.notified = 0

    def notify(self) -> None:
        """Count the wake-up."""
        self.notified += 1


@dataclass
class FakeIngestor:
    """Ingest progress."""

    applied_lsn: int | None = 4800
    last_commit_time: datetime | None = datetime(2026, 11, 24, 11, 59, 40, tzinfo=UTC)


@dataclass(frozen=True)
class FakeOptions:
    """The reconcile options the fake runner takes (same fields as ReconcileOptions)."""

    links: tuple[str, ...] = ()
    bookings: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    requested_by: str = "cli"
    changed_since: datetime | None = None
    changed_until: datetime | None = None


class FakeRunner:
    """A ReconcileRunner over the real ledger: opens the run, records one drift item, closes it.

    With `block=True`, execute() waits until released, so tests can see a run in progress.
    """

    def __init__(self, ledger: Ledger, block: bool = False) -> None:
        self.ledger = ledger
        self.started: list[FakeOptions] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def start(self, options: FakeOptions) -> int:
        """Open the run row."""
        self.started.append(options)
        scope = {"links": list(options.links), "bookings": list(options.bookings)}
        return await self.ledger.start_reconciliation(options.requested_by, scope, options.dry_run)

    async def execute(self, run_id: int, options: FakeOptions) -> None:
        """Find one drift item, repair it unless dry run, close the run."""
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(run_id)
            raise
        item = DriftItem(run_id, "missing_in_salesforce", link_id="l1", repaired=not options.dry_run)
        await self.ledger.add_drift([item])
        await self.ledger.finish_reconciliation(run_id, "finished", {"found": 1})
        self.finished.append(run_id)

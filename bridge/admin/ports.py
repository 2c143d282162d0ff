"""What the admin app sees of the daemon: Protocols only (app.py wires the real components in).

The ledger's port, `AdminLedger`, sits with the other ledger ports in `bridge.pipeline.ports`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from bridge.pipeline.ports import AdminLedger
from bridge.records.ledger import OrgRecord, WorkerRecord
from bridge.records.outbound import ApiUsage

OptionsT = TypeVar("OptionsT", contravariant=True)


class ReconcileRunner(Protocol[OptionsT]):
    """Starts and executes reconciliation runs (bridge.pipeline.reconcile.Reconciler)."""

    async def start(self, options: OptionsT) -> int:
        """Create the run row; returns its id."""
        ...

    async def execute(self, run_id: int, options: OptionsT) -> Any:
        """Compare, record drift, repair unless dry run, and close the run row."""
        ...


class OrgCountsView(Protocol):
    """One org's rows by state (bridge.ledger's OrgCounts)."""

    @property
    def pending(self) -> int:
        """Links and activities waiting to be written."""
        ...

    @property
    def failed(self) -> int:
        """Links and activities that failed."""
        ...


class OrgLedger(AdminLedger, Protocol):
    """The admin ledger with its orgs: the `orgs` rows, figures by org, and a view of one org."""

    async def list_orgs(self) -> list[OrgRecord]:
        """Every `orgs` row."""
        ...

    async def get_org(self, org_id: str) -> OrgRecord | None:
        """One org ('default': the default org), or None."""
        ...

    async def org_counts(self) -> Mapping[str, OrgCountsView]:
        """Pending, failed and synced rows by org id."""
        ...

    async def org_positions(self) -> Mapping[str, Mapping[str, str]]:
        """Change-event positions by org id, then channel."""
        ...

    async def org_workers(self) -> Mapping[str, str | None]:
        """Org id -> the worker holding a live lease on it (None: nobody, and always without workers)."""
        ...

    async def list_workers(self) -> list[WorkerRecord]:
        """The workers' rows (live and recently expired), each with the orgs it holds."""
        ...

    def scoped(self, org_id: str | None) -> AdminLedger:
        """The same ledger restricted to one org (None: the default org)."""
        ...


class SourceStatsView(Protocol):
    """The replication reader's counters (bridge.source.reader.SourceStats)."""

    @property
    def connected(self) -> bool:
        """The replication stream is open."""
        ...

    @property
    def acked_lsn(self) -> int:
        """Newest LSN acknowledged to the server."""
        ...

    @property
    def reconnects(self) -> int:
        """Reconnections so far."""
        ...

    @property
    def last_commit_time(self) -> datetime | None:
        """Commit time of the newest transaction received."""
        ...

    @property
    def queue_depth(self) -> int:
        """Transactions read, not yet handed on."""
        ...


class SourceView(Protocol):
    """The replication reader."""

    @property
    def stats(self) -> SourceStatsView:
        """Current counters."""
        ...


class SlotView(Protocol):
    """One reading of the replication slot (bridge.source.status.SlotStatus)."""

    @property
    def active(self) -> bool:
        """A consumer is attached."""
        ...

    @property
    def wal_status(self) -> str | None:
        """reserved | extended | unreserved | lost."""
        ...

    @property
    def unconfirmed_bytes(self) -> int | None:
        """WAL not yet confirmed."""
        ...

    @property
    def retained_bytes(self) -> int | None:
        """WAL retained on the server."""
        ...


class SalesforceView(Protocol):
    """The Salesforce client's counters and its cheapest call."""

    @property
    def usage(self) -> ApiUsage | None:
        """Last API usage reading."""
        ...

    @property
    def calls(self) -> int:
        """REST requests sent."""
        ...

    async def limits(self) -> ApiUsage:
        """The daily allocation, fetched now."""
        ...


class PusherView(Protocol):
    """The push worker's counters and its wake-up call."""

    pushed: int
    failed: int
    waiting_reason: str | None

    def notify(self) -> None:
        """New work may be pending."""


class IngestorView(Protocol):
    """The ingest worker's progress."""

    applied_lsn: int | None
    last_commit_time: datetime | None


__all__: Sequence[str] = (
    "IngestorView",
    "OrgCountsView",
    "OrgLedger",
    "PusherView",
    "ReconcileRunner",
    "SalesforceView",
    "SlotView",
    "SourceStatsView",
    "SourceView",
)

"""The daemon's readings (one frozen snapshot of its health) and their Prometheus form.

`Readings` is what the admin app gathers on request; `BridgeMetrics` turns one into gauges on a private
`CollectorRegistry` (one per daemon, never the global registry). Outcome counters are fed as outcomes are
recorded: `app.py` registers `BridgeMetrics.observe` on the ledger (`Ledger.observe_outcomes`).

Metric names (all prefixed `mogli_bridge_`):

    replication_lag_bytes            WAL the slot has not confirmed (current LSN - confirmed_flush_lsn)
    replication_retained_bytes       WAL the slot keeps on the server's disk (current LSN - restart_lsn)
    replication_lag_seconds          commit-time gap between the newest transaction received and the newest
                                     one applied to the ledger; NaN (unknown) while the reader is disconnected
    replication_connected            1 while the replication stream is connected
    source_queue_depth               transactions read but not yet applied
    changes_total{entity,outcome}    push outcomes: synced, failed, retry, cancelled (entity link | activity)
    salesforce_api_calls_total       REST requests this daemon sent
    salesforce_api_used / _limit / _remaining   the org's daily allocation, from the last Sforce-Limit-Info
    ledger_records{entity,state}     ledger rows by state (pending and failed are the ones to alert on)
    reconciliation_drift_found / _repaired      drift items over every reconciliation run
    component_up{component}          1 while a supervised component runs
    dependency_up{dependency}        1 when the last ping of scheduler / ledger / salesforce succeeded
    stream_subscribed{channel}       1 while the change stream (CometD or Pub/Sub) is subscribed to it
    worker_orgs                      orgs this process serves now (a worker's leases; the one daemon's orgs)
    worker_reader                    1 while this process reads the change stream (one worker of several, or
                                     the one daemon); summed over every worker's scrape it is 1

Each worker answers its own /metrics, so the scrape target (Prometheus' `instance`) tells the workers
apart: the gauges carry no worker label (a worker id is new at every start, a label would leave a
series behind each restart).

Not exported: how far behind the change stream is (a change event carries its commit time, but a quiet
channel has no newest event to measure from); `stream_subscribed` and the status lines stand in for it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bridge.records.outbound import OutcomeState

PREFIX = "mogli_bridge_"
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one readiness ping."""

    name: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicationReading:
    """How far the daemon is behind the scheduling database."""

    slot: str
    connected: bool
    slot_exists: bool
    slot_active: bool | None
    wal_status: str | None
    lag_bytes: int | None
    retained_bytes: int | None
    lag_seconds: float | None  # None while the reader is disconnected: unknown, not 0
    applied_lsn: int | None
    acked_lsn: int
    last_commit_time: datetime | None
    queue_depth: int
    reconnects: int


@dataclass(frozen=True, slots=True)
class Readings:
    """One snapshot of the daemon's health, for /api/status, /readyz, /metrics and the status page."""

    at: datetime
    components: Mapping[str, str]
    checks: tuple[CheckResult, ...]
    replication: ReplicationReading
    api_used: int | None
    api_limit: int | None
    api_calls: int
    pushed: int
    failed: int
    waiting_reason: str | None
    ledger_counts: Mapping[str, int]
    drift_found: int
    drift_repaired: int
    stream_positions: Mapping[str, str] = field(default_factory=dict)
    streaming: Mapping[str, str] = field(default_factory=dict)  # status lines: channel mode, event allocation
    stream_subscribed: bool | None = None  # None: no change stream in this daemon, or not known

    def count(self, state: str) -> int:
        """Links plus activities in this ledger state."""
        return self.ledger_counts.get(f"activities.{state}", 0) + self.ledger_counts.get(f"links.{state}", 0)


class BridgeMetrics:
    """Prometheus metric objects on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._api_calls_seen = 0

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, labelnames=labels, registry=self.registry)

        self.changes = Counter(
            PREFIX + "changes",
            "Push outcomes by entity and outcome",
            labelnames=("entity", "outcome"),
            registry=self.registry,
        )
        self.api_calls = Counter(
            PREFIX + "salesforce_api_calls", "REST requests sent to Salesforce", registry=self.registry
        )
        self.lag_bytes = gauge("replication_lag_bytes", "WAL not yet confirmed by the slot")
        self.retained_bytes = gauge("replication_retained_bytes", "WAL the slot retains on the server")
        self.lag_seconds = gauge("replication_lag_seconds", "Commit-time gap between received and applied")
        self.connected = gauge("replication_connected", "1 while the replication stream is connected")
        self.queue_depth = gauge("source_queue_depth", "Transactions read but not yet applied")
        self.api_used = gauge("salesforce_api_used", "Daily API calls used (org-wide)")
        self.api_limit = gauge("salesforce_api_limit", "Daily API allocation (org-wide)")
        self.api_remaining = gauge("salesforce_api_remaining", "Daily API calls left (org-wide)")
        self.events_limit = gauge(
            "salesforce_delivered_events_limit", "Daily delivered change-event allocation (org-wide)"
        )
        self.events_remaining = gauge(
            "salesforce_delivered_events_remaining", "Delivered change events left today (org-wide)"
        )
        self.records = gauge("ledger_records", "Ledger rows by entity and state", ("entity", "state"))
        self.drift_found = gauge("reconciliation_drift_found", "Drift items found over every run")
        self.drift_repaired = gauge("reconciliation_drift_repaired", "Drift items repaired over every run")
        self.component_up = gauge("component_up", "1 while a component runs", ("component",))
        self.dependency_up = gauge(
            "dependency_up", "1 when the dependency's last ping succeeded", ("dependency",)
        )
        self.stream_subscribed = gauge(
            "stream_subscribed", "1 while the change stream is subscribed to the channel", ("channel",)
        )
        self.worker_orgs = gauge("worker_orgs", "Orgs this worker serves now")
        self.worker_reader = gauge("worker_reader", "1 while this worker reads the change stream")
        for entity in ("link", "activity"):
            for outcome in OutcomeState:
                self.changes.labels(entity, outcome.value)

    def observe_event_allocation(self, limit: int, remaining: int) -> None:
        """Set the delivered-event allocation gauges (DailyDeliveredPlatformEvents)."""
        self.events_limit.set(limit)
        self.events_remaining.set(remaining)

    def observe_subscription(self, channel: str, subscribed: bool) -> None:
        """Set the stream-subscribed gauge of one channel (the change stream calls this as it changes)."""
        self.stream_subscribed.labels(channel).set(1 if subscribed else 0)

    def observe_worker(self, orgs: int, reader: bool) -> None:
        """Set this worker's gauges: how many orgs it serves, whether it reads the change stream."""
        self.worker_orgs.set(orgs)
        self.worker_reader.set(1 if reader else 0)

    def observe(self, entity: str, states: Collection[OutcomeState]) -> None:
        """Count recorded push outcomes."""
        for state in states:
            self.changes.labels(entity, state.value).inc()

    def update(self, readings: Readings) -> None:
        """Set every gauge from one snapshot."""
        rep = readings.replication
        self.lag_bytes.set(rep.lag_bytes or 0)
        self.retained_bytes.set(rep.retained_bytes or 0)
        self.lag_seconds.set(math.nan if rep.lag_seconds is None else rep.lag_seconds)
        self.connected.set(1 if rep.connected else 0)
        self.queue_depth.set(rep.queue_depth)
        if readings.api_limit is not None and readings.api_used is not None:
            self.api_used.set(readings.api_used)
            self.api_limit.set(readings.api_limit)
            self.api_remaining.set(max(readings.api_limit - readings.api_used, 0))
        if readings.api_calls > self._api_calls_seen:
            self.api_calls.inc(readings.api_calls - self._api_calls_seen)
            self._api_calls_seen = readings.api_calls
        self.records.clear()
        for key, count in readings.ledger_counts.items():
            entity, _, state = key.partition(".")
            self.records.labels(entity, state).set(count)
        for entity in ("activities", "links"):
            for state in ("pending", "failed"):
                self.records.labels(entity, state).set(readings.ledger_counts.get(f"{entity}.{state}", 0))
        self.drift_found.set(readings.drift_found)
        self.drift_repaired.set(readings.drift_repaired)
        for name, state in readings.components.items():
            self.component_up.labels(name).set(1 if state == "running" else 0)
        for check in readings.checks:
            self.dependency_up.labels(check.name).set(1 if check.ok else 0)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

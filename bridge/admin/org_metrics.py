"""Per-org gauges, read from the ledger's org rows at scrape time, on their own private registry.

    org_state{org,state}     1 for the org's state, 0 for the others (active | paused | disconnected)
    org_pending{org}         links and activities waiting to be written
    org_failed{org}          links and activities that failed
    org_api_used{org}        the org's daily API requests used, as its last Sforce-Limit-Info said
    org_api_limit{org}       the org's daily API allocation

The label set is bounded by the orgs the ledger holds: an org id and a state name, nothing else. A scrape
sets every gauge afresh, so an org that left the ledger leaves the metrics too.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest

from bridge.admin.orgs import OrgRow
from bridge.metrics import PREFIX
from bridge.records.ledger import OrgState


class OrgMetrics:
    """The per-org gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def gauge(name: str, doc: str, labels: Sequence[str] = ("org",)) -> Gauge:
            return Gauge(PREFIX + name, doc, labelnames=labels, registry=self.registry)

        self.state = gauge("org_state", "1 for the org's state (active, paused, ...)", ("org", "state"))
        self.pending = gauge("org_pending", "the org's links and activities waiting to be written")
        self.failed = gauge("org_failed", "the org's links and activities that failed")
        self.api_used = gauge("org_api_used", "the org's daily API requests used (last Sforce-Limit-Info)")
        self.api_limit = gauge("org_api_limit", "the org's daily API allocation")

    def update(self, rows: Sequence[OrgRow]) -> None:
        """Set every gauge from the orgs' rows, dropping orgs no longer there."""
        for metric in (self.state, self.pending, self.failed, self.api_used, self.api_limit):
            metric.clear()
        states = {s.value for s in OrgState}
        for row in rows:
            for state in sorted(states | {row.state}):
                self.state.labels(org=row.org_id, state=state).set(1 if row.state == state else 0)
            self.pending.labels(org=row.org_id).set(row.pending)
            self.failed.labels(org=row.org_id).set(row.failed)
            if row.api_used is not None:
                self.api_used.labels(org=row.org_id).set(row.api_used)
            if row.api_limit is not None:
                self.api_limit.labels(org=row.org_id).set(row.api_limit)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

"""While the replication reader is disconnected, the replication lag is unknown, never 0."""

from __future__ import annotations

import math
import re

from tests.adapters.admin.conftest import AUTH, Harness, Make


def _sample(text: str, name: str) -> float:
    """The value of one unlabelled sample in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def test_lag_is_unknown_while_the_reader_is_disconnected(make: Make) -> None:
    """A disconnected reader: lag_seconds null in /api/status, NaN in /metrics, "unknown" on the page."""
    h: Harness = await make()
    h.source.stats.connected = False
    body = await (await h.client.get("/api/status", headers=AUTH)).json()
    assert body["replication"]["connected"] is False
    assert body["replication"]["lag_seconds"] is None
    metrics = await (await h.client.get("/metrics")).text()
    assert math.isnan(_sample(metrics, "mogli_bridge_replication_lag_seconds"))
    page = await (await h.client.get("/")).text()
    assert re.search(r"lag \(seconds\)(?:\s|<[^>]*>)*unknown", page), "the page shows a lag"


async def test_lag_is_measured_while_the_reader_is_connected(make: Make) -> None:
    """A connected reader gives the commit-time gap between received and applied, in JSON and /metrics."""
    h: Harness = await make()
    body = await (await h.client.get("/api/status", headers=AUTH)).json()
    assert body["replication"]["lag_seconds"] == 10.0
    metrics = await (await h.client.get("/metrics")).text()
    assert _sample(metrics, "mogli_bridge_replication_lag_seconds") == 10.0

"""API usage accounting: the rolling 24-hour request allocation, request counters and the `/limits` map."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

_DAY_SECONDS = 24 * 3600
_BUCKET_SECONDS = 60


class ApiUsage:
    """Counts REST calls (in one-minute buckets over a rolling day), token requests and calls per route."""

    def __init__(self, allocation: int, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.allocation = allocation
        self._wall_clock = wall_clock
        self._buckets: dict[int, int] = {}
        self._offset = 0  # set by the control API to simulate usage from other integrations
        self.by_route: Counter[str] = Counter()
        self.total_requests = 0
        self.token_requests = 0
        self.faults_fired = 0

    def used(self) -> int:
        """Requests counted against the allocation within the last 24 hours."""
        self._prune()
        return self._offset + sum(self._buckets.values())

    def exhausted(self) -> bool:
        """True once the rolling-day usage has reached the allocation."""
        return self.used() >= self.allocation

    def count(self, route: str) -> None:
        """Record one API request against the allocation and the per-route counters."""
        bucket = int(self._wall_clock()) // _BUCKET_SECONDS
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        self.by_route[route] += 1
        self.total_requests += 1

    def set(self, *, allocation: int | None = None, used: int | None = None) -> None:
        """Change the allocation and/or pretend exactly `used` requests were made today."""
        if allocation is not None:
            self.allocation = allocation
        if used is not None:
            self._buckets.clear()
            self._offset = used

    def header(self) -> str:
        """The `Sforce-Limit-Info` header value."""
        return f"api-usage={self.used()}/{self.allocation}"

    def reset(self) -> None:
        """Forget every counted request (allocation unchanged)."""
        self._buckets.clear()
        self._offset = 0
        self.by_route.clear()
        self.total_requests = 0
        self.token_requests = 0
        self.faults_fired = 0

    def _prune(self) -> None:
        oldest = (int(self._wall_clock()) - _DAY_SECONDS) // _BUCKET_SECONDS
        for bucket in [b for b in self._buckets if b <= oldest]:
            del self._buckets[bucket]


def limits_document(
    usage: ApiUsage, *, streaming_stats: Mapping[str, int], daily_events: int, max_clients: int
) -> dict[str, Any]:
    """The `GET /limits` body: a map of `{Max, Remaining}` per limit."""
    delivered = int(streaming_stats.get("delivered_events", 0))
    clients = int(streaming_stats.get("streaming_clients", 0))

    def entry(maximum: int, used: int) -> dict[str, int]:
        return {"Max": maximum, "Remaining": max(maximum - used, 0)}

    return {
        "ConcurrentAsyncGetReportInstances": entry(200, 0),
        "DailyApiRequests": entry(usage.allocation, usage.used()),
        "DailyAsyncApexExecutions": entry(250_000, 0),
        "DailyBulkApiBatches": entry(15_000, 0),
        "DailyBulkV2QueryJobs": entry(10_000, 0),
        "DailyDeliveredPlatformEvents": entry(daily_events, delivered),
        "DailyStreamingApiEvents": entry(daily_events, delivered),
        "DataStorageMB": entry(5, 0),
        "HourlyPublishedPlatformEvents": entry(50_000, 0),
        "StreamingApiConcurrentClients": entry(max_clients, clients),
    }

"""The last hour of the daemon's readings, in memory, for the status page's charts.

`History` is a ring buffer of `Sample`s (bounded: the oldest falls out); `sample_every` takes one sample every
N seconds from the probe until stopped. Nothing is persisted: a restart starts an empty hour.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from bridge.aio import sleep_or_stop
from bridge.errors import BridgeError
from bridge.metrics import Readings

log = structlog.get_logger(__name__)

SAMPLE_SECONDS = 15.0
WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Sample:
    """The figures the charts draw, at one moment."""

    at: datetime
    pushed: int  # the pusher's running count of records written
    pending: int
    lag_seconds: float | None  # None while the replication stream is cut
    api_left: int | None  # calls left of the daily allocation, None before the first reading

    @classmethod
    def of(cls, readings: Readings) -> Sample:
        """The sample of one snapshot."""
        used, limit = readings.api_used, readings.api_limit
        return cls(
            at=readings.at,
            pushed=readings.pushed,
            pending=readings.count("pending"),
            lag_seconds=readings.replication.lag_seconds,
            api_left=max(limit - used, 0) if used is not None and limit is not None else None,
        )


Point = tuple[datetime, float | None]


class History:
    """A ring buffer of samples: at most `capacity`, the oldest dropped first."""

    def __init__(self, capacity: int = int(WINDOW / timedelta(seconds=SAMPLE_SECONDS))) -> None:
        if capacity < 2:
            raise ValueError("a history needs room for at least two samples")
        self._samples: deque[Sample] = deque(maxlen=capacity)

    def add(self, sample: Sample) -> None:
        """Keep a sample (dropping the oldest when full)."""
        self._samples.append(sample)

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def since(self, start: datetime) -> list[Sample]:
        """Samples taken at or after `start`, oldest first."""
        return [s for s in self._samples if s.at >= start]

    def writes_per_minute(self, start: datetime) -> list[Point]:
        """Records written per minute between consecutive samples (None across a restart of the count)."""
        samples = self.since(start)
        points: list[Point] = []
        for before, after in itertools.pairwise(samples):
            seconds = (after.at - before.at).total_seconds()
            written = after.pushed - before.pushed
            rate = written * 60.0 / seconds if seconds > 0 and written >= 0 else None
            points.append((after.at, rate))
        return points

    def series(self, start: datetime, figure: Callable[[Sample], float | int | None]) -> list[Point]:
        """One figure of every sample since `start`."""
        points: list[Point] = []
        for s in self.since(start):
            value = figure(s)
            points.append((s.at, None if value is None else float(value)))
        return points


async def sample_every(
    seconds: float, read: Callable[[], Awaitable[Readings]], history: History, stop: asyncio.Event
) -> None:
    """Add one sample every `seconds` until `stop`; a failed reading is logged and skipped."""
    while not stop.is_set():
        try:
            history.add(Sample.of(await read()))
        except (BridgeError, OSError) as exc:  # the charts are advisory: an outage never stops the admin app
            log.warning("admin.sample_failed", error_type=type(exc).__name__, error=str(exc)[:200])
        if await sleep_or_stop(stop, seconds):
            return

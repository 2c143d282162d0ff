"""The status page's last hour: the bounded ring buffer of samples, its series, and their SVG charts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bridge.admin.charts import line_chart
from bridge.admin.history import History, Sample, sample_every
from bridge.admin.page import ago, stamp
from bridge.metrics import Readings
from tests.unit.test_admin_health import readings

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def sample(seconds: float, pushed: int = 0, pending: int = 0, lag: float | None = 0.0) -> Sample:
    """A sample `seconds` after T0."""
    return Sample(T0 + timedelta(seconds=seconds), pushed, pending, lag, api_left=1000)


def test_the_buffer_keeps_only_the_newest_samples() -> None:
    """Past its capacity the oldest sample falls out: memory stays bounded however long the daemon runs."""
    history = History(capacity=4)
    for i in range(10):
        history.add(sample(i * 15, pushed=i))
    assert len(history) == 4
    assert [s.pushed for s in history] == [6, 7, 8, 9]


def test_a_default_buffer_holds_one_hour_of_samples() -> None:
    """The default capacity is one hour at the default sampling interval (240 samples of 15 s)."""
    history = History()
    for i in range(1000):
        history.add(sample(i * 15))
    assert len(history) == 240
    assert history.since(T0 + timedelta(seconds=999 * 15 - 3600))[0].at == T0 + timedelta(seconds=760 * 15)


def test_a_buffer_too_small_to_draw_a_line_is_refused() -> None:
    """A history of fewer than two samples cannot draw anything."""
    with pytest.raises(ValueError, match="at least two"):
        History(capacity=1)


def test_writes_per_minute_come_from_the_pushed_count_between_samples() -> None:
    """30 records in 30 s is 60 a minute; a count that went down (a restart) is a gap, not a negative rate."""
    history = History(capacity=10)
    for seconds, pushed in ((0, 0), (30, 30), (60, 40), (90, 5)):
        history.add(sample(seconds, pushed=pushed))
    rates = history.writes_per_minute(T0)
    assert [r for _, r in rates] == [60.0, 20.0, None]


def test_series_keep_unknown_values_unknown() -> None:
    """A lag of None (stream cut) stays None in the series: drawn as a gap, never as 0."""
    history = History(capacity=10)
    history.add(sample(0, lag=2.0))
    history.add(sample(15, lag=None))
    history.add(sample(30, lag=4.0))
    assert [v for _, v in history.series(T0, lambda s: s.lag_seconds)] == [2.0, None, 4.0]


def test_a_chart_is_inline_svg_with_a_gap_for_unknown_values() -> None:
    """Two runs of known values are two polylines; the caption gives the latest value and unit."""
    points = [(T0 + timedelta(minutes=m), v) for m, v in ((0, 1.0), (1, 3.0), (2, None), (3, 2.0), (4, 5.0))]
    svg = line_chart("Replication lag", points, T0, T0 + timedelta(hours=1), "s")
    assert svg.count("<polyline") == 2 and "<svg" in svg and "http" not in svg.replace("xmlns", "")
    assert "Replication lag <b>5 s</b>" in svg


def test_a_chart_without_samples_says_so() -> None:
    """No known value: no line, the words "no samples yet"."""
    svg = line_chart("Pending", [(T0, None)], T0, T0 + timedelta(hours=1), "rows")
    assert "<polyline" not in svg and "no samples yet" in svg


async def test_the_sampler_adds_one_sample_per_interval_until_stopped() -> None:
    """sample_every reads the probe, keeps what it read, and returns once stop is set."""
    history, stop, calls = History(capacity=10), asyncio.Event(), []

    async def read() -> Readings:
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        return readings(pushed=len(calls))

    await asyncio.wait_for(sample_every(0.001, read, history, stop), 5)
    assert [s.pushed for s in history] == [1, 2, 3] and history.since(T0)[0].pending == 2


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3, "just now"),
        (42, "42 s ago"),
        (180, "3 min ago"),
        (7300, "2 h ago"),
        (86400, "1 day ago"),
        (-5, "in the future"),
    ],
)
def test_times_on_the_page_read_as_ages(seconds: int, text: str) -> None:
    """Ages in the largest whole unit."""
    assert ago(T0 - timedelta(seconds=seconds), T0) == text


def test_exact_times_have_no_microseconds() -> None:
    """The exact time (tooltip, header) is to the second, in UTC."""
    assert stamp(datetime(2026, 12, 3, 12, 0, 1, 123456, tzinfo=UTC)) == "2026-12-03 12:00:01 UTC"

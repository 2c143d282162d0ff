"""The inbound bench's arithmetic and table: rates, CPU per 1,000 events, delays and their percentiles."""

from __future__ import annotations

import io
from dataclasses import asdict

import pytest
from rich.console import Console

from bridge.devtools.bench_inbound import (
    FULL_INBOUND,
    QUICK_INBOUND,
    InboundWorkload,
    burst_result,
    delays_ms,
    events_per_second,
    inbound_table,
    per_thousand,
    steady_result,
)


def test_cpu_per_thousand_events_scales_to_a_thousand_and_has_no_value_for_no_events() -> None:
    """3 CPU seconds over 1,500 events is 2 per 1,000; with nothing applied there is no figure, not 0."""
    assert per_thousand(3.0, 1_500) == 2.0
    assert per_thousand(0.25, 100) == 2.5
    assert per_thousand(1.0, 0) is None


def test_events_per_second_is_the_count_over_the_window() -> None:
    """1,000 events in 4 s is 250/s; an empty window is 0, never a division error."""
    assert events_per_second(1_000, 4.0) == 250.0
    assert events_per_second(5, 0.0) == 0.0


def test_delays_pair_each_change_with_its_own_effect() -> None:
    """Each change's delay is its own journal time less its own write time; a change that never took
    effect has no delay (it is counted as not applied), and clock jitter never makes a negative delay."""
    changed = {"a": 100.0, "b": 101.0, "c": 102.0, "lost": 103.0}
    applied = {"a": 100.25, "b": 101.5, "c": 101.999, "other": 50.0}
    assert sorted(delays_ms(changed, applied)) == [0.0, 250.0, 500.0]


def test_a_burst_is_timed_from_its_start_to_the_last_effect() -> None:
    """The burst's window ends at its last journal entry; CPU is spread over the changes applied."""
    result = burst_result(events=4, started=10.0, applied_at=[11.0, 12.0, 14.0, 12.5], cpu_seconds=0.2)
    assert (result.events, result.applied, result.seconds) == (4, 4, 4.0)
    assert result.events_per_second == 1.0
    assert result.cpu_seconds_per_1000 == 50.0


def test_a_burst_with_nothing_applied_reports_zero_rate_and_no_cpu_figure() -> None:
    """No effect at all: 0 applied, rate 0, no CPU figure."""
    result = burst_result(events=10, started=10.0, applied_at=[], cpu_seconds=1.0)
    assert (result.applied, result.events_per_second, result.cpu_seconds_per_1000) == (0, 0.0, None)


def test_steady_percentiles_come_from_the_delays_by_nearest_rank() -> None:
    """p50/p95/p99/max of 100 delays 1..100 ms are 50, 95, 99 and 100; applied counts the delays."""
    result = steady_result(10.0, 10.0, [float(d) for d in range(100, 0, -1)], events=120, cpu=0.5)
    assert (result.p50_ms, result.p95_ms, result.p99_ms, result.max_ms) == (50.0, 95.0, 99.0, 100.0)
    assert (result.events, result.applied, result.cpu_seconds_per_1000) == (120, 100, 5.0)


@pytest.mark.parametrize("work", [QUICK_INBOUND, FULL_INBOUND], ids=["quick", "full"])
def test_the_burst_and_the_steady_run_use_distinct_events(work: InboundWorkload) -> None:
    """Every reassignment hits an Event of its own: the burst and the steady run fit in the Events written,
    and the quick plan stays small."""
    assert work.burst + int(work.steady_rate * work.steady_seconds) <= work.bookings
    assert QUICK_INBOUND.bookings <= 2_000 and QUICK_INBOUND.steady_seconds <= 20


def test_the_inbound_table_shows_both_transports_with_cpu_beside_each_rate() -> None:
    """The table has a column per transport and the figures of each, CPU per 1,000 events included."""
    burst = asdict(burst_result(events=1_000, started=0.0, applied_at=[4.0] * 1_000, cpu_seconds=3.0))
    steady = asdict(steady_result(10.0, 10.0, [12.0] * 100, events=100, cpu=1.5))
    slower = {**steady, "p95_ms": 987.0}
    table = inbound_table(
        {"cometd": {"burst": burst, "steady": steady}, "pubsub": {"burst": burst, "steady": slower}}
    )
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    text = out.getvalue()
    assert "cometd" in text and "pubsub" in text
    assert "250" in text  # events/s
    assert "3.00" in text and "15.00" in text  # CPU s per 1,000: burst and steady
    assert "987" in text

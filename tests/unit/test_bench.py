"""The benchmark's arithmetic and report: percentiles, ratios, targets, the table and the JSON shape."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from bridge.devtools.bench import (
    FULL,
    QUICK,
    BurstResult,
    SteadyResult,
    _ratios,
    _table,
    _targets,
    percentile,
)
from bridge.devtools.bench_world import NAIVE, PIPELINED, peak_rss_mb


def burst(bookings: int, per_second: float, calls: int, rss: float | None = 120.0) -> dict[str, Any]:
    """A burst result as the report holds it."""
    return asdict(
        BurstResult(
            bookings=bookings,
            links=bookings // 50,
            startup_seconds=1.5,
            drain_seconds=1.5 + bookings / per_second,
            bookings_per_second=per_second,
            api_calls=calls,
            api_calls_per_booking=calls / bookings,
            peak_rss_mb=rss,
            failed=0,
        )
    )


def steady(p95: float, p99: float) -> dict[str, Any]:
    """A steady result as the report holds it."""
    return asdict(SteadyResult(50.0, 60.0, 3000, 3000, 200.0, p95, p99, p99 + 50))


def report(naive: bool = True) -> dict[str, Any]:
    """A whole report: pipelined bursts at 10k and 100k, naive at 600."""
    out: dict[str, Any] = {
        "plan": "full",
        "latency_ms": 150,
        "pipelined": {
            "bursts": [burst(10_000, 2500.0, 60), burst(100_000, 2100.0, 520, rss=190.0)],
            "steady": steady(350.0, 700.0),
        },
    }
    if naive:
        out["naive"] = {"bursts": [burst(600, 6.0, 660)], "steady": steady(20_000.0, 21_000.0)}
        out["ratios"] = _ratios(out["pipelined"], out["naive"])
    return out


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..100 is 50, p95 is 95, p100 the maximum; no values give 0."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_ratios_compare_the_largest_bursts() -> None:
    """Calls per booking and bookings per second of the last burst of each mode give the two ratios."""
    ratios = report()["ratios"]
    assert ratios["fewer_api_calls"] == round((660 / 600) / (520 / 100_000), 1)
    assert ratios["throughput"] == round(2100.0 / 6.0, 1)


def test_targets_follow_the_issue() -> None:
    """Every target of issue 7 is judged from the figures; a run without --naive leaves the ratios open."""
    met = _targets(report())
    assert all(met.values()), met
    slow = report(naive=False)
    slow["pipelined"]["bursts"][-1]["bookings_per_second"] = 1500.0
    slow["pipelined"]["bursts"][0]["peak_rss_mb"] = 250.0
    slow["pipelined"]["steady"] = steady(450.0, 900.0)
    judged = _targets(slow)
    assert judged["burst_bookings_per_second_ge_2000"] is False
    assert judged["peak_rss_le_200mb"] is False
    assert judged["steady_p95_le_400ms"] is False
    assert judged["steady_p99_le_800ms"] is False
    assert judged["fewer_calls_ge_50x"] is None
    assert judged["throughput_ge_10x"] is None


def test_table_shows_both_modes_and_the_ratio() -> None:
    """The printed table has a column per mode, a row per figure and the ratio caption."""
    console = Console(width=160, record=True)
    console.print(_table(report()))
    text = console.export_text()
    for needle in ("pipelined", "naive", "100,000 / 2,000", "latency p95 ms", "faster", "daemon peak RSS"):
        assert needle in text
    assert json.loads(json.dumps(report()))["pipelined"]["bursts"][1]["bookings"] == 100_000


def test_plans_keep_the_issue_sizes() -> None:
    """Full runs 10k and 100k bookings over 2,000 links at 50/s for 60 s; quick is scaled down."""
    assert FULL.pipelined.bursts == ((10_000, 2_000), (100_000, 2_000))
    assert (FULL.pipelined.steady_rate, FULL.pipelined.steady_seconds) == (50.0, 60.0)
    assert FULL.latency_ms == 150
    assert QUICK.pipelined.bursts[-1][0] <= 5_000 and QUICK.pipelined.steady_seconds <= 20


def test_naive_mode_configures_one_record_per_call() -> None:
    """The naive daemon gets batch size 1 and one call in flight; the pipelined one keeps the defaults."""
    assert NAIVE.env == {
        "MOGLI_BRIDGE_SYNC__BATCH_SIZE": "1",
        "MOGLI_BRIDGE_SALESFORCE__MAX_IN_FLIGHT": "1",
    }
    assert PIPELINED.env == {}


def test_peak_rss_reads_this_process(tmp_path: Path) -> None:
    """VmHWM of a live process is a positive number of MiB; a missing process gives None."""
    import os

    own = peak_rss_mb(os.getpid())
    assert own is not None and own > 1.0
    assert peak_rss_mb(2**22 + 12345) is None

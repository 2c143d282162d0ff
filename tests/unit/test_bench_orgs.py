"""The many-org bench's pure parts: the size mix, the plans, the latency arithmetic, the targets, the table,
and how `bench --orgs` is parsed."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from bridge.cli import _parser
from bridge.devtools.bench_orgs import (
    latency_summary,
    orgs_table,
    plan_for,
    rate,
    size_mix,
    targets,
    workers_table,
)
from bridge.devtools.bench_orgs_world import links_for


def test_the_size_mix_adds_up_and_is_skewed() -> None:
    """100 orgs, 100,000 bookings: every booking given to exactly one org, 5 orgs hold half, 20 hold 30%, the
    other 75 share a fifth; largest first."""
    sizes = size_mix(100, 100_000)
    assert len(sizes) == 100
    assert sum(sizes) == 100_000
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes[:5]) == 50_000
    assert sum(sizes[5:25]) == 30_000
    assert sum(sizes[25:]) == 20_000
    assert min(sizes) >= 1


def test_the_size_mix_of_few_orgs_still_adds_up() -> None:
    """Small and odd sizes (1, 2, 3, 10, 1,000 orgs) give one size per org that add up to the total."""
    for orgs, bookings in ((1, 50), (2, 7), (3, 1_000), (10, 5_000), (1_000, 100_003)):
        sizes = size_mix(orgs, bookings)
        assert (len(sizes), sum(sizes)) == (orgs, bookings), (orgs, bookings, sizes[:5])
        assert sizes == sorted(sizes, reverse=True)
    assert size_mix(10, 5_000)[0] == 2_500, "one org of ten is the large tier and takes half"


def test_plans_full_and_quick() -> None:
    """The full plan is issue 13's (100 orgs, 100,000 bookings, 50,000 backlog at 50/s, 1,000 idle orgs);
    the quick one is small; `--orgs N` changes the number of orgs only."""
    full, quick = plan_for(None, quick=False), plan_for(None, quick=True)
    assert (full.orgs, full.bookings, full.fair_backlog, full.fair_rate, full.idle_orgs) == (
        100,
        100_000,
        50_000,
        50.0,
        1_000,
    )
    assert (full.latency_ms, quick.latency_ms) == (150, 150)
    assert quick.orgs == 10 and quick.bookings == 5_000 and quick.idle_orgs == 100
    assert plan_for(20, quick=False).orgs == 20
    assert plan_for(20, quick=False).bookings == full.bookings


def test_links_per_org() -> None:
    """One link per 50 bookings, at least one, at most 200."""
    assert [links_for(n) for n in (1, 49, 100, 2_500, 50_000)] == [1, 1, 2, 50, 200]


def test_latency_summary_counts_only_arrived_bookings() -> None:
    """Latency from each booking's commit to its Event's commit, over the bookings that arrived; the missing
    one is counted as not arrived, never as a latency."""
    committed = {f"b{k}": 100.0 + k for k in range(100)}
    seen = {f"b{k}": 100.0 + k + (k + 1) / 1000.0 for k in range(99)}  # b99 never arrived
    got = latency_summary(committed, seen)
    assert (got["bookings"], got["arrived"]) == (100, 99)
    assert got["p50_ms"] == 50.0
    assert got["p99_ms"] == 99.0
    assert got["max_ms"] == 99.0
    assert latency_summary({}, {})["p99_ms"] == 0.0


def test_rate_over_an_empty_window_is_zero() -> None:
    """Bookings per second over a window; an empty window gives 0.0, not a division error."""
    assert rate(5_000, 2.0) == 2500.0
    assert rate(5_000, 0.0) == 0.0


def report(*, per_second: float, calls: int, p99: float, rss: float, clients: int) -> dict[str, Any]:
    """A report as run_orgs_bench builds it."""
    return {
        "plan": "full",
        "latency_ms": 150,
        "burst": {
            "orgs": 100,
            "bookings": 100_000,
            "sizes": {"largest": 10_000, "smallest": 266, "median": 266},
            "startup_seconds": 3.0,
            "drain_seconds": 3.0 + 100_000 / per_second,
            "bookings_per_second": per_second,
            "events": 100_000,
            "api_calls": calls,
            "api_calls_per_booking": calls / 100_000,
            "peak_rss_mb": 250.0,
            "cpu_seconds": 80.0,
            "cpu_seconds_per_1000": 0.8,
            "emulator_cpu_seconds": 60.0,
            "failed": 0,
        },
        "fairness": {
            "big_backlog": 50_000,
            "big_transactions": 50,
            "big_commit_seconds": 4.2,
            "big_drained": True,
            "big_synced": 50_000,
            "big_drain_seconds": 30.0,
            "big_bookings_per_second": 1666.7,
            "small_orgs": 99,
            "small_rate": 50.0,
            "small": {
                "bookings": 1500,
                "arrived": 1500,
                "p50_ms": 300.0,
                "p95_ms": 600.0,
                "p99_ms": p99,
                "max_ms": p99,
            },
            "cpu_seconds": 40.0,
            "cpu_seconds_per_1000": 0.78,
            "emulator_cpu_seconds": 30.0,
        },
        "idle": {
            "orgs": 1000,
            "streaming_clients": clients,
            "rss_mb": rss,
            "peak_rss_mb": rss,
            "idle_cpu_share": 0.042,
        },
        "verdict": {"bookings": 151_500, "lost": 0, "doubled": 0, "wrong_fields": 0, "cross_org": 0},
    }


def test_targets_follow_the_figures() -> None:
    """Each target is met or missed by its figure: rate 2,000/s, 0.01 calls per booking, p99 1 s, RSS 600 MB,
    one CometD client per idle org."""
    met = targets(report(per_second=2500.0, calls=600, p99=900.0, rss=500.0, clients=1000))
    assert all(met.values()), met
    missed = targets(report(per_second=1500.0, calls=1200, p99=1200.0, rss=700.0, clients=999))
    assert not any(missed.values()), missed
    assert targets({})["burst_bookings_per_second_ge_2000"] is None


def test_the_table_shows_every_section() -> None:
    """The printed table carries the burst, fairness, idle and verdict figures."""
    console = Console(record=True, width=160)
    console.print(orgs_table(report(per_second=2500.0, calls=600, p99=900.0, rss=500.0, clients=1000)))
    text = console.export_text()
    needles = ("100 / 100,000", "2,500", "600 (0.0060)", "50,000 in 50 txns, 50,000 synced", "latency p99 ms")
    for needle in (*needles, "1000 / 1000", "4.2%", "0 / 0 / 0"):
        assert needle in text, needle
    console = Console(record=True, width=160)
    undrained = {**report(per_second=1.0, calls=1, p99=1.0, rss=1.0, clients=1), "verdict": None}
    console.print(orgs_table(undrained))
    assert "not judged" in console.export_text(), "an undrained run says why it has no verdict"


def test_bench_orgs_is_parsed() -> None:
    """`bench` without --orgs stays the single-org bench (orgs None); `--orgs` alone takes the default size
    (0, read as 100 or 10); `--orgs 20` twenty orgs."""
    assert _parser().parse_args(["bench", "--quick"]).orgs is None
    assert _parser().parse_args(["bench", "--orgs", "--quick"]).orgs == 0
    assert _parser().parse_args(["bench", "--orgs", "20", "--json"]).orgs == 20


def test_the_workers_table_has_a_row_per_worker_count() -> None:
    """One row per run: workers, rate, both CPU figures, the orgs each worker held and the verdict."""
    runs = [
        {
            "workers": k,
            "bookings_per_second": 900.0 * k,
            "cpu_seconds_per_1000": 1.5,
            "machine_cpu_seconds_per_1000": 4.25,
            "orgs_per_worker": [101 - 50 * (k - 1)] * k,
            "lost": 0,
            "doubled": 0,
            "cross_org": 0,
        }
        for k in (1, 2)
    ]
    console = Console(record=True, width=160)
    console.print(workers_table(runs))
    text = console.export_text()
    for needle in ("1,800", "4.25", "101", "51 / 51", "0 / 0 / 0"):
        assert needle in text, needle


def test_bench_workers_needs_orgs(capsys: Any) -> None:
    """`--workers` is parsed, and refused without `--orgs` (exit 2, one line)."""
    from bridge.commands import bench

    assert _parser().parse_args(["bench", "--orgs", "--workers", "3"]).workers == 3
    assert bench.run(None, _parser().parse_args(["bench", "--workers", "2"])) == 2
    assert "--workers K needs --orgs" in capsys.readouterr().out

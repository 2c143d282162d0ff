"""End to end, the many-org bench (`bench --orgs`) on a tiny plan: the real daemon in tenancy mode, the
emulator hosting the orgs; its counts add up (timing is reported, never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.devtools.bench_orgs import OrgsPlan, measure, run_workers, targets
from bridge.devtools.localpg import LocalPostgres

pytestmark = pytest.mark.timeout(420)

TINY = OrgsPlan(orgs=3, bookings=600, fair_backlog=300, fair_rate=5.0, idle_orgs=4)


def test_a_tiny_many_org_bench_lands_every_booking_once_in_its_own_org(
    pg_cluster: LocalPostgres, tmp_path: Path
) -> None:
    """Burst, fairness and idle runs over three orgs (four idle ones): every booking of the burst became one
    Event, none failed, every small org's booking of the fairness run arrived, the cross-org verdict over
    every booking finds nothing lost, doubled, wrong or misplaced, each idle org has its one CometD client,
    and the report carries every target's verdict."""
    said: list[str] = []
    report = measure(pg_cluster, tmp_path, TINY, said.append)
    burst, fair, verdict, idle = report["burst"], report["fairness"], report["verdict"], report["idle"]
    assert (burst["orgs"], burst["bookings"], burst["events"], burst["failed"]) == (3, 600, 600, 0)
    assert burst["api_calls"] > 0
    assert burst["cpu_seconds_per_1000"] is not None and burst["peak_rss_mb"] > 0
    assert fair["big_drained"] and fair["big_synced"] == 300
    assert fair["small"]["arrived"] == fair["small"]["bookings"] > 0
    assert verdict["bookings"] == 600 + 300 + fair["small"]["bookings"]
    assert (verdict["lost"], verdict["doubled"], verdict["wrong_fields"]) == (0, 0, 0)
    assert (verdict["cross_org"], verdict["orphans"]) == (0, 0)
    assert (idle["orgs"], idle["streaming_clients"]) == (4, 4)
    assert idle["rss_mb"] is not None
    assert set(targets(report)) == {
        "burst_bookings_per_second_ge_2000",
        "api_calls_per_booking_le_0.01",
        "fairness_small_p99_le_1s",
        "idle_rss_le_600mb",
        "idle_one_stream_per_org",
    }
    assert any(line.startswith("idle:") for line in said), "progress is told as it goes"


def test_the_workers_bench_runs_one_then_two_workers_on_a_postgresql_ledger(
    pg_cluster: LocalPostgres, tmp_path: Path
) -> None:
    """`bench --orgs --workers 2` on a tiny plan: one run per worker count, each landing every booking once in
    its own org; with two workers both held orgs at the end, and the figures are counted."""
    runs = run_workers(pg_cluster, tmp_path, TINY, 2, lambda _: None)
    assert [run["workers"] for run in runs] == [1, 2]
    for run in runs:
        assert run["bookings"] == 600
        assert (run["lost"], run["doubled"], run["cross_org"]) == (0, 0, 0)
        assert run["bookings_per_second"] > 0 and run["cpu_seconds_per_1000"] is not None
        assert run["machine_cpu_seconds_per_1000"] >= run["cpu_seconds_per_1000"]
    assert sum(runs[0]["orgs_per_worker"]) == 4  # three customer orgs and the default org
    assert len(runs[1]["orgs_per_worker"]) == 2 and sum(runs[1]["orgs_per_worker"]) == 4

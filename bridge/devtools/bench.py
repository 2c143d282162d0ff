"""`mogli-bridge bench`: throughput, latency, API calls and memory of the real daemon against the emulator.

Everything runs as on a real installation: a private PostgreSQL cluster, the emulator as its own process
(150 ms per request by default, to model a real org) and `mogli-bridge run` as its own process.

- burst: N bookings committed before the daemon starts (backfill `since:2000-01-01` makes them work), then
  the time until the org holds all N Events and the ledger has nothing pending; bookings per second, API
  requests per booking (the emulator's counter, minus what the bench itself sent), the daemon's peak RSS.
  Two sizes are run so the memory figure shows whether it grows with N.
- steady: on the smaller burst's stack, once drained, bookings committed one per transaction at a fixed rate;
  latency from the client's clock right after COMMIT to the Event's commit in the emulator.
- naive (`--naive`): the same workload, scaled down (one record per call is ~6 bookings per second at
  150 ms), with the daemon set to one record per REST call and one call in flight; ratios are reported.
- inbound (bench_inbound.py): a person's changes in the org to their effect in the ledger, on each
  change-event transport (CometD and Pub/Sub): events per second applied and the delay p50/p95/p99, each
  with the daemon's CPU seconds per 1,000 events.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.devtools.bench_inbound import (
    FULL_INBOUND,
    QUICK_INBOUND,
    TRANSPORTS,
    inbound_table,
    per_thousand,
    run_inbound,
)
from bridge.devtools.bench_world import NAIVE, PIPELINED, BenchWorld, DaemonMode, cpu_seconds, percentile
from bridge.devtools.localpg import LocalPostgres

LATENCY_MS = 150
POLL_SECONDS = 0.025
DRAIN_TIMEOUT_SECONDS = 3600.0
SETTLED = ("synced", "cancelled", "failed", "skipped")


@dataclass(frozen=True, slots=True)
class Workload:
    """Sizes of one mode's runs."""

    bursts: tuple[tuple[int, int], ...]  # (bookings, links), smallest first
    steady_rate: float
    steady_seconds: float


@dataclass(frozen=True, slots=True)
class Plan:
    """What a bench run does."""

    pipelined: Workload
    naive: Workload
    latency_ms: int = LATENCY_MS


FULL = Plan(
    pipelined=Workload(bursts=((10_000, 2_000), (100_000, 2_000)), steady_rate=50.0, steady_seconds=60.0),
    naive=Workload(bursts=((600, 60),), steady_rate=50.0, steady_seconds=6.0),
)
QUICK = Plan(
    pipelined=Workload(bursts=((1_000, 200), (5_000, 200)), steady_rate=50.0, steady_seconds=20.0),
    naive=Workload(bursts=((150, 15),), steady_rate=50.0, steady_seconds=3.0),
)


@dataclass(frozen=True, slots=True)
class BurstResult:
    """Figures of one burst."""

    bookings: int
    links: int
    startup_seconds: float  # process start to `daemon.started` (imports, ledger, source, login)
    drain_seconds: float  # process start to the last Event's commit
    bookings_per_second: float  # over the drain less the start-up
    api_calls: int
    api_calls_per_booking: float
    peak_rss_mb: float | None
    failed: int
    cpu_seconds: float | None = None  # the daemon's, from its start to the drain (start-up included)
    cpu_seconds_per_1000: float | None = None


@dataclass(frozen=True, slots=True)
class SteadyResult:
    """Figures of one steady run (latency in milliseconds)."""

    rate: float
    seconds: float
    bookings: int
    arrived: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cpu_seconds: float | None = None  # the daemon's, over the run
    cpu_seconds_per_1000: float | None = None


# ------------------------------------------------------------------------------------------ measuring


def _drain(world: BenchWorld, bookings: int, started: float) -> tuple[float, dict[str, int], float | None]:
    """Wait until the org holds `bookings` Events (or their rows settled otherwise) and nothing is pending.

    Returns (seconds from `started` to the last Event's commit, ledger counts, peak RSS).
    """
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    rss: float | None = None
    while time.monotonic() < deadline:
        world.watcher.poll()
        rss = world.daemon_peak_rss_mb() or rss
        if not world.daemon.alive():
            raise RuntimeError(f"the daemon exited; see {world.daemon.log_path}")
        counts = world.ledger_counts()
        if sum(counts.get(s, 0) for s in SETTLED) >= bookings and not counts.get("pending"):
            world.watcher.poll()
            last = max(world.watcher.seen.values(), default=time.time())
            return last - started, counts, rss
        time.sleep(0.25)
    raise TimeoutError(f"{world.name}: {bookings} bookings did not drain in {DRAIN_TIMEOUT_SECONDS:.0f}s")


def run_burst(world: BenchWorld, bookings: int, links: int) -> BurstResult:
    """Commit `bookings` before the daemon starts, then start it and time the drain."""
    world.add_links(links)
    world.add_bookings(bookings)
    setup = world.daemon.setup()
    if setup.returncode != 0:
        raise RuntimeError(f"mogli-bridge setup failed: {setup.stdout}{setup.stderr}")
    calls_before = world.api_requests()
    started = time.time()
    world.daemon.start()
    seconds, counts, rss = _drain(world, bookings, started)
    cpu = _daemon_cpu(world)
    calls = world.api_requests() - calls_before
    startup = (world.daemon_started_at() or started) - started
    working = seconds - startup
    return BurstResult(
        bookings=bookings,
        links=links,
        startup_seconds=round(startup, 2),
        drain_seconds=round(seconds, 2),
        bookings_per_second=round(bookings / working, 1) if working > 0 else 0.0,
        api_calls=calls,
        api_calls_per_booking=round(calls / bookings, 5),
        peak_rss_mb=round(rss, 1) if rss is not None else None,
        failed=counts.get("failed", 0),
        cpu_seconds=round(cpu, 2),
        cpu_seconds_per_1000=per_thousand(cpu, bookings),
    )


def _daemon_cpu(world: BenchWorld) -> float:
    """CPU seconds the running daemon has used so far."""
    proc = world.daemon.proc
    used = cpu_seconds(proc.pid) if proc is not None else None
    if used is None:
        raise RuntimeError(f"the daemon is not running; see {world.daemon.log_path}")
    return used


def run_steady(world: BenchWorld, rate: float, seconds: float) -> SteadyResult:
    """Book at `rate` per second for `seconds` (one transaction each) and measure commit-to-Event latency."""
    committed: dict[str, float] = {}
    total = int(rate * seconds)
    done = threading.Event()

    def book() -> None:
        begin = time.monotonic()
        for k in range(total):
            pause = begin + k / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            booking_id, at = world.book_one(k)
            committed[booking_id] = at
        done.set()

    cpu_before = _daemon_cpu(world)
    writer = threading.Thread(target=book, name="bench-steady-writer", daemon=True)
    writer.start()
    deadline = time.monotonic() + seconds + 120.0
    while time.monotonic() < deadline:
        world.watcher.poll()
        if done.is_set() and all(b in world.watcher.seen for b in list(committed)):
            break
        time.sleep(POLL_SECONDS)
    writer.join(timeout=5)
    cpu = _daemon_cpu(world) - cpu_before
    latencies = [
        (world.watcher.seen[b] - at) * 1000.0 for b, at in list(committed.items()) if b in world.watcher.seen
    ]
    return SteadyResult(
        rate=rate,
        seconds=seconds,
        bookings=len(committed),
        arrived=len(latencies),
        p50_ms=round(percentile(latencies, 50), 1),
        p95_ms=round(percentile(latencies, 95), 1),
        p99_ms=round(percentile(latencies, 99), 1),
        max_ms=round(max(latencies, default=0.0), 1),
        cpu_seconds=round(cpu, 2),
        cpu_seconds_per_1000=per_thousand(cpu, len(committed)),
    )


def run_mode(
    pg: LocalPostgres, workdir: Path, mode: DaemonMode, work: Workload, latency_ms: int, say: Any
) -> dict[str, Any]:
    """Every burst of one mode (each on a fresh stack), then steady on the first burst's stack."""
    bursts: list[BurstResult] = []
    steady: SteadyResult | None = None
    for index, (bookings, links) in enumerate(work.bursts):
        world = BenchWorld(pg, workdir, f"{mode.name}_{index}", latency_ms, mode)
        try:
            say(f"{mode.name}: burst of {bookings:,} bookings over {links:,} links")
            bursts.append(run_burst(world, bookings, links))
            say(f"  {asdict(bursts[-1])}")
            if index == 0:
                say(f"{mode.name}: steady {work.steady_rate:g}/s for {work.steady_seconds:g}s")
                steady = run_steady(world, work.steady_rate, work.steady_seconds)
                say(f"  {asdict(steady)}")
        finally:
            world.close()
    return {
        "bursts": [asdict(b) for b in bursts],
        "steady": asdict(steady) if steady is not None else None,
    }


# ------------------------------------------------------------------------------------------ reporting


def _ratios(pipelined: dict[str, Any], naive: dict[str, Any]) -> dict[str, float | None]:
    fast = pipelined["bursts"][-1]
    slow = naive["bursts"][-1]
    calls = (
        slow["api_calls_per_booking"] / fast["api_calls_per_booking"]
        if fast["api_calls_per_booking"]
        else None
    )
    speed = fast["bookings_per_second"] / slow["bookings_per_second"] if slow["bookings_per_second"] else None
    return {
        "fewer_api_calls": round(calls, 1) if calls else None,
        "throughput": round(speed, 1) if speed else None,
    }


def _targets(report: dict[str, Any]) -> dict[str, bool | None]:
    """Which of issue 7's targets this run met (None: not measured)."""
    big = report["pipelined"]["bursts"][-1]
    rss = [b["peak_rss_mb"] for b in report["pipelined"]["bursts"] if b["peak_rss_mb"] is not None]
    steady = report["pipelined"]["steady"]
    ratios = report.get("ratios") or {}
    return {
        "burst_bookings_per_second_ge_2000": big["bookings_per_second"] >= 2000,
        "api_calls_per_booking_le_0.01": big["api_calls_per_booking"] <= 0.01,
        "peak_rss_le_200mb": bool(rss) and max(rss) <= 200,
        "steady_p95_le_400ms": steady["p95_ms"] <= 400 if steady else None,
        "steady_p99_le_800ms": steady["p99_ms"] <= 800 if steady else None,
        "fewer_calls_ge_50x": ratios["fewer_api_calls"] >= 50 if ratios.get("fewer_api_calls") else None,
        "throughput_ge_10x": ratios["throughput"] >= 10 if ratios.get("throughput") else None,
    }


def _table(report: dict[str, Any]) -> Table:
    modes = [m for m in ("pipelined", "naive") if report.get(m)]
    table = Table(title=f"mogli-bridge bench ({report['plan']}, emulator latency {report['latency_ms']} ms)")
    table.add_column("figure")
    for mode in modes:
        table.add_column(mode, justify="right")
    rows: list[tuple[str, list[str]]] = []
    width = max(len(report[m]["bursts"]) for m in modes)
    for i in range(width):
        bursts = [report[m]["bursts"][i] if i < len(report[m]["bursts"]) else None for m in modes]
        rows += [
            ("burst: bookings / links", [f"{b['bookings']:,} / {b['links']:,}" if b else "" for b in bursts]),
            ("  drain s (of which start-up)", [_drain_cell(b) for b in bursts]),
            (
                "  bookings/s after start-up",
                [f"{b['bookings_per_second']:,.0f}" if b else "" for b in bursts],
            ),
            ("  API calls (per booking)", [_calls(b) for b in bursts]),
            ("  daemon peak RSS MB", [f"{b['peak_rss_mb']}" if b else "" for b in bursts]),
            ("  daemon CPU s (per 1,000)", [_cpu_cell(b) for b in bursts]),
            ("  failed", [f"{b['failed']}" if b else "" for b in bursts]),
        ]
    steadies = [report[m]["steady"] for m in modes]
    rows += [
        ("steady: rate x seconds", [f"{s['rate']:g}/s x {s['seconds']:g}s" if s else "" for s in steadies]),
        ("  arrived / committed", [f"{s['arrived']} / {s['bookings']}" if s else "" for s in steadies]),
        *[
            (f"  latency {p} ms", [f"{s[p + '_ms']:,.0f}" if s else "" for s in steadies])
            for p in ("p50", "p95", "p99", "max")
        ],
        ("  daemon CPU s (per 1,000)", [_cpu_cell(s) for s in steadies]),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    if report.get("ratios"):
        r = report["ratios"]
        table.caption = (
            f"naive / pipelined: {r['fewer_api_calls']}x the API calls; "
            f"pipelined is {r['throughput']}x faster"
        )
    return table


def _drain_cell(b: dict[str, Any] | None) -> str:
    return f"{b['drain_seconds']:.1f} ({b['startup_seconds']:.1f})" if b else ""


def _cpu_cell(figures: dict[str, Any] | None) -> str:
    if not figures or figures.get("cpu_seconds") is None:
        return ""
    return f"{figures['cpu_seconds']:.2f} ({figures['cpu_seconds_per_1000']})"


def _calls(b: dict[str, Any] | None) -> str:
    return f"{b['api_calls']:,} ({b['api_calls_per_booking']:.4f})" if b else ""


def run_bench(*, quick: bool, naive: bool, as_json: bool, out: Path | None) -> int:
    """Run the benchmark; prints a table (or JSON with `as_json`), writes JSON to `out` when given."""
    plan = QUICK if quick else FULL
    console = Console(stderr=as_json)

    def say(text: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)

    workdir = Path(tempfile.mkdtemp(prefix="mogli-bench-"))
    # synchronous_commit on, as a production server runs: with it off, commits reach logical replication
    # only when the WAL writer flushes (every 200 ms), which would add up to 200 ms to every latency.
    pg = LocalPostgres(synchronous_commit="on").start()
    report: dict[str, Any] = {
        "plan": "quick" if quick else "full",
        "latency_ms": plan.latency_ms,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    try:
        report["pipelined"] = run_mode(pg, workdir, PIPELINED, plan.pipelined, plan.latency_ms, say)
        if naive:
            report["naive"] = run_mode(pg, workdir, NAIVE, plan.naive, plan.latency_ms, say)
            report["ratios"] = _ratios(report["pipelined"], report["naive"])
        inbound = QUICK_INBOUND if quick else FULL_INBOUND
        report["inbound"] = {t: run_inbound(pg, workdir, t, inbound, say) for t in TRANSPORTS}
        report["targets"] = _targets(report)
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    if as_json:
        print(text)
    else:
        console.print(_table(report))
        console.print(inbound_table(report["inbound"]))
        console.print(report["targets"])
    return 0

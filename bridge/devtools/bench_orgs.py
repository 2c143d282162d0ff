"""`mogli-bridge bench --orgs N`: the daemon serving many customer orgs from one change stream (issue 13).

As the single-org bench (bench.py): a private PostgreSQL, the emulator as its own process (every org at
150 ms per request) and `mogli-bridge run` as its own process, here in tenancy mode with a SQLite ledger.

- burst: the bookings are committed before the daemon starts (backfill makes them work), spread over the
  orgs by a skewed mix (`size_mix`: 5% of the orgs take half the bookings, 20% take 30%, the other 75% share
  20%). Figures: aggregate bookings per second from the daemon's `daemon.started` to the last Event's commit
  in any org, API requests per booking (every org's counter), the daemon's peak RSS and CPU seconds per
  1,000 bookings.
- fairness: on the burst's stack, once drained: the largest org commits a backlog (in transactions of
  FAIR_CHUNK bookings, back to back) while the other orgs together book at a fixed rate, one booking per
  transaction, round robin; their commit -> Event latency (the emulator's commit time) p50/p95/p99, and
  separately the big org's drain time.
- idle: a fresh stack of many connected orgs without bookings: the daemon's RSS once every org has its
  CometD client, and the number of those clients.
- verdict: after fairness, the cross-org verdict (tenants.py) over every booking: lost, doubled, cross-org.
- workers (`--workers K`): the burst again for 1, 2, ... K worker processes on a PostgreSQL ledger (issue 14),
  each on a fresh stack: aggregate bookings per second, the workers' CPU seconds per 1,000 bookings, the
  whole machine's (every process: workers, emulator, PostgreSQL), the orgs each worker held at the end, and
  the verdict.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.devtools.bench_inbound import per_thousand
from bridge.devtools.bench_orgs_world import OrgsWorld, links_for
from bridge.devtools.bench_world import machine_cpu_seconds, percentile
from bridge.devtools.localpg import LocalPostgres
from bridge.devtools.stack import Scheduler

LATENCY_MS = 150
DRAIN_TIMEOUT_SECONDS = 3600.0
IDLE_TIMEOUT_SECONDS = 900.0
IDLE_CPU_SECONDS = 20.0  # the idle daemon's CPU is measured over this long, once settled
FAIR_MAX_SECONDS = 600.0  # the small orgs book at most this long while the big org drains
# The big org's backlog arrives as an import would: transactions of this many bookings, committed back to
# back. One transaction of 50,000 would be one change of the one ordered stream: every org's later
# bookings wait until all of it is decoded and in the ledger (README, limitations), which is not a
# question of scheduling between orgs.
FAIR_CHUNK = 1_000
# (share of the orgs, share of the bookings), largest orgs first; the last tier takes what is left
MIX = ((0.05, 0.50), (0.20, 0.30), (1.0, 0.20))


@dataclass(frozen=True, slots=True)
class OrgsPlan:
    """Sizes of a many-org bench run."""

    orgs: int
    bookings: int  # the burst's total over the orgs
    fair_backlog: int  # the big org's burst in the fairness run
    fair_rate: float  # bookings per second of the other orgs together
    idle_orgs: int
    latency_ms: int = LATENCY_MS


def plan_for(orgs: int | None, *, quick: bool) -> OrgsPlan:
    """The full run (100 orgs unless told) or the quick one (10 orgs unless told)."""
    if quick:
        return OrgsPlan(orgs=orgs or 10, bookings=5_000, fair_backlog=2_000, fair_rate=10.0, idle_orgs=100)
    return OrgsPlan(orgs=orgs or 100, bookings=100_000, fair_backlog=50_000, fair_rate=50.0, idle_orgs=1_000)


def size_mix(orgs: int, bookings: int) -> list[int]:
    """Bookings per org, largest first, by MIX; they add up to `bookings` exactly (every org at least one when
    there are enough bookings)."""
    tiers: list[int] = []
    left = orgs
    for org_share, _ in MIX[:-1]:
        n = min(left - 1, max(1, round(orgs * org_share))) if left > 1 else 0
        tiers.append(n)
        left -= n
    tiers.append(left)
    sizes: list[int] = []
    given = 0
    for n, (_, share) in zip(tiers, MIX, strict=True):
        if n == 0:
            continue
        total = round(bookings * share)
        sizes += [total // n + (1 if k < total % n else 0) for k in range(n)]
        given += total
    sizes[-1] += bookings - given  # rounding
    return sorted(sizes, reverse=True)


# ------------------------------------------------------------------------------------------ arithmetic


def rate(count: int, seconds: float) -> float:
    """Count per second over a window; 0.0 for an empty window."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def latency_summary(committed: dict[str, float], seen: dict[str, float]) -> dict[str, Any]:
    """Commit -> Event latency (ms) of the committed bookings that arrived: count and percentiles."""
    delays = [(seen[b] - at) * 1000.0 for b, at in committed.items() if b in seen]
    return {
        "bookings": len(committed),
        "arrived": len(delays),
        "p50_ms": round(percentile(delays, 50), 1),
        "p95_ms": round(percentile(delays, 95), 1),
        "p99_ms": round(percentile(delays, 99), 1),
        "max_ms": round(max(delays, default=0.0), 1),
    }


def latency_windows(
    committed: dict[str, float], seen: dict[str, float], start: float, width: float = 5.0
) -> list[dict[str, Any]]:
    """The latency by window of commit time (`start` = the backlog's commit): where a stall sits."""
    windows: dict[int, list[float]] = {}
    for booking, at in committed.items():
        if booking in seen:
            windows.setdefault(int((at - start) // width), []).append((seen[booking] - at) * 1000.0)
    return [
        {
            "from_s": index * width,
            "bookings": len(delays),
            "p50_ms": round(percentile(delays, 50), 1),
            "max_ms": round(max(delays), 1),
        }
        for index, delays in sorted(windows.items())
    ]


def targets(report: dict[str, Any]) -> dict[str, bool | None]:
    """Which of issue 13's targets this run met (None: not measured)."""
    burst, fair, idle = report.get("burst"), report.get("fairness"), report.get("idle")
    return {
        "burst_bookings_per_second_ge_2000": burst["bookings_per_second"] >= 2000 if burst else None,
        "api_calls_per_booking_le_0.01": burst["api_calls_per_booking"] <= 0.01 if burst else None,
        "fairness_small_p99_le_1s": fair["small"]["p99_ms"] <= 1000 if fair else None,
        "idle_rss_le_600mb": idle["rss_mb"] <= 600 if idle and idle["rss_mb"] is not None else None,
        "idle_one_stream_per_org": idle["streaming_clients"] == idle["orgs"] if idle else None,
    }


# ------------------------------------------------------------------------------------------ runs


def _wait(world: OrgsWorld, done: Any, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        world.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{world.name}: {what} within {timeout:.0f}s")
        time.sleep(every)


def run_burst(world: OrgsWorld, sizes: list[int]) -> dict[str, Any]:
    """Commit every org's bookings, start the daemon, and time the drain."""
    for org, size in zip(world.orgs, sizes, strict=True):
        world.add_links(org, links_for(size))
        world.add_bookings(org, size)
    total = sum(sizes)
    calls_before, routes_before = world.api_requests(), world.api_requests_by_route()
    emulator_before = world.emulator_cpu_seconds()
    started = world.start_daemon()
    peak: list[float] = []

    def drained() -> bool:
        peak.append(world.peak_rss_mb() or 0.0)
        return world.drained(total)

    _wait(world, drained, DRAIN_TIMEOUT_SECONDS, f"{total} bookings to drain")
    cpu = world.cpu_seconds()
    emulator_cpu = world.emulator_cpu_seconds() - emulator_before
    world.poll(world.orgs)
    last = max((max(world.seen(o).values(), default=started) for o in world.orgs), default=started)
    calls = world.api_requests() - calls_before
    routes = {r: n - routes_before.get(r, 0) for r, n in world.api_requests_by_route().items()}
    up = _started_at(world) or started
    counts = world.ledger_counts()
    return {
        "orgs": len(sizes),
        "bookings": total,
        "sizes": {"largest": sizes[0], "smallest": sizes[-1], "median": sizes[len(sizes) // 2]},
        "startup_seconds": round(up - started, 2),
        "drain_seconds": round(last - started, 2),
        "bookings_per_second": rate(total, last - up),
        "events": sum(len(world.seen(o)) for o in world.orgs),
        "api_calls": calls,
        "api_calls_per_booking": round(calls / total, 5) if total else 0.0,
        "api_calls_by_route": dict(sorted(((r, n) for r, n in routes.items() if n), key=lambda i: -i[1])),
        "peak_rss_mb": round(max(peak, default=0.0), 1),
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_1000": per_thousand(cpu, total),
        "emulator_cpu_seconds": round(emulator_cpu, 2),
        "failed": counts.get("failed", 0),
    }


def _started_at(world: OrgsWorld) -> float | None:
    starts = [
        datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
        for daemon in world.daemons
        for line in daemon.log_lines()
        if line.get("event") == "daemon.started" and isinstance(line.get("timestamp"), str)
    ]
    return min(starts, default=None)


def run_workers(
    pg: LocalPostgres, workdir: Path, plan: OrgsPlan, workers: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The burst for 1..`workers` worker processes on a PostgreSQL ledger, each on a fresh stack."""
    sizes = size_mix(plan.orgs, plan.bookings)
    runs: list[dict[str, Any]] = []
    for k in range(1, workers + 1):
        say(f"workers: {k} on a PostgreSQL ledger, {plan.bookings:,} bookings over {plan.orgs} orgs")
        world = OrgsWorld(pg, workdir, f"workers{k}", plan.orgs, plan.latency_ms, workers=k)
        try:
            machine_before = machine_cpu_seconds()
            burst = run_burst(world, sizes)
            machine = machine_cpu_seconds() - machine_before
            found = verdict_counts(world)
            runs.append(
                {
                    "workers": k,
                    "bookings": burst["bookings"],
                    "bookings_per_second": burst["bookings_per_second"],
                    "startup_seconds": burst["startup_seconds"],
                    "cpu_seconds_per_1000": burst["cpu_seconds_per_1000"],
                    "machine_cpu_seconds_per_1000": per_thousand(machine, burst["bookings"]),
                    "api_calls_per_booking": burst["api_calls_per_booking"],
                    "peak_rss_mb_per_worker": burst["peak_rss_mb"],
                    "orgs_per_worker": world.orgs_per_worker(),
                    "lost": found["lost"],
                    "doubled": found["doubled"],
                    "cross_org": found["cross_org"],
                }
            )
            say(f"  {runs[-1]}")
        finally:
            world.close()
    return runs


def run_fairness(world: OrgsWorld, backlog: int, per_second: float, offset: int) -> dict[str, Any]:
    """The first (largest) org commits `backlog` at once while the others book `per_second` in total."""
    big, small = world.orgs[0], world.orgs[1:]
    committed: dict[str, float] = {}
    stop = threading.Event()

    def book() -> None:
        conn = Scheduler(world.dsn)
        try:
            begin, k = time.monotonic(), 0
            while not stop.is_set():
                pause = begin + k / per_second - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                booking_id, at = world.book_one(small[k % len(small)], k, conn)
                committed[booking_id] = at
                k += 1
        finally:
            conn.close()

    before = world.ledger_counts(big)
    big_before = sum(before.values())
    cpu_before, emulator_before = world.cpu_seconds(), world.emulator_cpu_seconds()
    writer = threading.Thread(target=book, name="bench-fair-writer", daemon=True)
    writer.start()
    time.sleep(2.0)  # the small orgs' steady flow first, then the backlog lands in it
    big_conn = Scheduler(world.dsn)
    burst_at = time.time()
    try:
        for first in range(0, backlog, FAIR_CHUNK):
            count = min(FAIR_CHUNK, backlog - first)
            world.add_bookings(big, count, offset=offset + first, conn=big_conn)
    finally:
        big_conn.close()
    committed_in = time.time() - burst_at

    def big_drained() -> bool:
        world.poll(small)
        return world.drained(big_before + backlog, big)

    deadline = time.monotonic() + FAIR_MAX_SECONDS
    _wait(world, lambda: big_drained() or time.monotonic() > deadline, DRAIN_TIMEOUT_SECONDS, "", 1.0)
    drained = world.drained(big_before + backlog, big)
    stop.set()
    writer.join(timeout=10)
    booked = dict(committed)
    _wait(world, lambda: _arrived(world, small, booked), 120.0, "the small orgs' bookings to arrive", 1.0)
    cpu = world.cpu_seconds() - cpu_before
    emulator_cpu = world.emulator_cpu_seconds() - emulator_before
    world.poll([big])
    last_big = max(world.seen(big).values(), default=burst_at)
    big_synced = world.ledger_counts(big).get("synced", 0) - before.get("synced", 0)
    seen = {b: at for o in small for b, at in world.seen(o).items()}
    return {
        "big_backlog": backlog,
        "big_transactions": -(-backlog // FAIR_CHUNK),
        "big_commit_seconds": round(committed_in, 2),
        "big_drained": drained,  # False: the small orgs stopped booking after FAIR_MAX_SECONDS
        "big_synced": big_synced,
        "big_drain_seconds": round(last_big - burst_at, 2),
        "big_bookings_per_second": rate(big_synced, last_big - burst_at),
        "small_orgs": len(small),
        "small_rate": per_second,
        "small": latency_summary(booked, seen),
        "small_by_window": latency_windows(booked, seen, burst_at),
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_1000": per_thousand(cpu, backlog + len(booked)),
        "emulator_cpu_seconds": round(emulator_cpu, 2),
    }


def _arrived(world: OrgsWorld, orgs: list[Any], booked: dict[str, float]) -> bool:
    world.poll(orgs)
    seen = {b for o in orgs for b in world.seen(o)}
    return all(b in seen for b in booked)


def run_idle(world: OrgsWorld) -> dict[str, Any]:
    """Start the daemon over connected orgs without bookings; RSS once every org has its stream."""
    started = world.start_daemon()
    wanted = len(world.orgs)
    _wait(world, lambda: world.streaming_clients() >= wanted, IDLE_TIMEOUT_SECONDS, "every org's stream", 5.0)
    connected_at = time.time()
    time.sleep(10.0)  # settle: the first long polls, timers
    clients = world.streaming_clients()
    cpu_settled = world.cpu_seconds()
    time.sleep(IDLE_CPU_SECONDS)  # nothing to do: what the daemon spends on timers, polls and sweeps
    idle_cpu = world.cpu_seconds() - cpu_settled
    return {
        "orgs": wanted,
        "streaming_clients": clients,
        "seconds_to_connect": round(connected_at - started, 1),
        "rss_mb": _round(world.rss_mb()),
        "peak_rss_mb": _round(world.peak_rss_mb()),
        "cpu_seconds": round(world.cpu_seconds(), 2),
        "idle_cpu_share": round(idle_cpu / IDLE_CPU_SECONDS, 3),  # of one core, once connected
    }


def _share(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1%}"


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def verdict_counts(world: OrgsWorld) -> dict[str, int]:
    """The cross-org verdict over every booking of the stack (before any repair)."""
    found = world.world.verdict()
    return {
        "bookings": len(world.scheduler.rows("bookings")),
        "lost": found.lost,
        "doubled": found.doubled,
        "wrong_fields": found.wrong_fields,
        "cross_org": found.cross_org,
        "orphans": found.orphans,
    }


# ------------------------------------------------------------------------------------------ reporting


def workers_table(runs: list[dict[str, Any]]) -> Table:
    """The workers runs, one row each."""
    table = Table(title="mogli-bridge bench --orgs --workers (PostgreSQL ledger, burst)")
    for column in ("workers", "bookings/s", "workers' CPU s / 1,000", "machine CPU s / 1,000", "orgs each"):
        table.add_column(column, justify="right")
    table.add_column("lost / doubled / cross-org", justify="right")
    for run in runs:
        table.add_row(
            str(run["workers"]),
            f"{run['bookings_per_second']:,.0f}",
            f"{run['cpu_seconds_per_1000']}",
            f"{run['machine_cpu_seconds_per_1000']}",
            " / ".join(str(n) for n in run["orgs_per_worker"]) or "-",
            f"{run['lost']} / {run['doubled']} / {run['cross_org']}",
        )
    return table


def orgs_table(report: dict[str, Any]) -> Table:
    """The figures as a two-column table."""
    table = Table(title=f"mogli-bridge bench --orgs ({report['plan']}, latency {report['latency_ms']} ms)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    b, f, i = report["burst"], report["fairness"], report["idle"]
    rows = [
        ("burst: orgs / bookings", f"{b['orgs']} / {b['bookings']:,} ({b['sizes']})"),
        ("  drain s (of which start-up)", f"{b['drain_seconds']:.1f} ({b['startup_seconds']:.1f})"),
        ("  bookings/s after start-up", f"{b['bookings_per_second']:,.0f}"),
        ("  API calls (per booking)", f"{b['api_calls']:,} ({b['api_calls_per_booking']:.4f})"),
        ("  daemon peak RSS MB", f"{b['peak_rss_mb']}"),
        ("  daemon CPU s (per 1,000)", f"{b['cpu_seconds']} ({b['cpu_seconds_per_1000']})"),
        ("  emulator CPU s (every org)", f"{b['emulator_cpu_seconds']}"),
        (
            "fairness: big org backlog",
            f"{f['big_backlog']:,} in {f['big_transactions']} txns, {f['big_synced']:,} synced",
        ),
        ("  in s (drained)", f"{f['big_drain_seconds']:.1f} ({f['big_drained']})"),
        ("  small orgs x rate", f"{f['small_orgs']} x {f['small_rate']:g}/s in total"),
        ("  small arrived / committed", f"{f['small']['arrived']} / {f['small']['bookings']}"),
        *[(f"  small latency {p} ms", f"{f['small'][p + '_ms']:,.0f}") for p in ("p50", "p95", "p99", "max")],
        ("  daemon CPU s (per 1,000)", f"{f['cpu_seconds']} ({f['cpu_seconds_per_1000']})"),
        ("  emulator CPU s (every org)", f"{f['emulator_cpu_seconds']}"),
        ("idle: orgs / CometD clients", f"{i['orgs']} / {i['streaming_clients']}"),
        ("  RSS MB (peak)", f"{i['rss_mb']} ({i['peak_rss_mb']})"),
        ("  CPU once connected (of one core)", _share(i.get("idle_cpu_share"))),
        ("verdict: lost / doubled / cross-org", _verdict_cell(report["verdict"])),
    ]
    for label, cell in rows:
        table.add_row(label, cell)
    return table


def _verdict_cell(v: dict[str, int] | None) -> str:
    if v is None:
        return "not judged (the big org had not drained)"
    return f"{v['lost']} / {v['doubled']} / {v['cross_org']} of {v['bookings']:,}"


def measure(pg: LocalPostgres, workdir: Path, plan: OrgsPlan, say: Callable[[str], None]) -> dict[str, Any]:
    """Every run of a plan on a PostgreSQL cluster (each stack in `workdir`): the report without targets."""
    report: dict[str, Any] = {}
    sizes = size_mix(plan.orgs, plan.bookings)
    say(f"burst: {plan.bookings:,} bookings over {plan.orgs} orgs ({sizes[0]} to {sizes[-1]} each)")
    world = OrgsWorld(pg, workdir, "burst", plan.orgs, plan.latency_ms)
    try:
        report["burst"] = run_burst(world, sizes)
        say(f"  {report['burst']}")
        say(f"fairness: {plan.fair_backlog:,} in one org, the others {plan.fair_rate:g}/s")
        report["fairness"] = run_fairness(world, plan.fair_backlog, plan.fair_rate, offset=sizes[0])
        say(f"  {report['fairness']}")
        # A backlog still pending would count as lost: judged only once everything drained.
        report["verdict"] = verdict_counts(world) if report["fairness"]["big_drained"] else None
        say(f"  verdict {report['verdict']}")
    finally:
        world.close()
    say(f"idle: {plan.idle_orgs} connected orgs")
    idle = OrgsWorld(pg, workdir, "idle", plan.idle_orgs, plan.latency_ms)
    try:
        report["idle"] = run_idle(idle)
        say(f"  {report['idle']}")
    finally:
        idle.close()
    return report


def run_orgs_bench(
    *, orgs: int | None, quick: bool, as_json: bool, out: Path | None, workers: int | None = None
) -> int:
    """Run the many-org bench; prints a table (or JSON with `as_json`), writes JSON to `out` when given.
    With `workers`, only the workers runs (the burst for 1..workers processes)."""
    plan = plan_for(orgs, quick=quick)
    console = Console(stderr=as_json)

    def say(text: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)

    workdir = Path(tempfile.mkdtemp(prefix="mogli-bench-orgs-"))
    pg = LocalPostgres(synchronous_commit="on").start()
    report: dict[str, Any] = {
        "plan": "quick" if quick else "full",
        "latency_ms": plan.latency_ms,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }
    try:
        if workers:
            report["workers"] = run_workers(pg, workdir, plan, workers, say)
        else:
            report.update(measure(pg, workdir, plan, say))
            report["targets"] = targets(report)
    finally:
        pg.stop()
        if os.environ.get("MOGLI_BENCH_KEEP"):  # the daemons' logs and the ledgers, for a look afterwards
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    if as_json:
        print(text)
    elif workers:
        console.print(workers_table(report["workers"]))
    else:
        console.print(orgs_table(report))
        console.print(report["targets"])
    return 0

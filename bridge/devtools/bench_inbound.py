"""The inbound half of `mogli-bridge bench`: a person's changes in the org, on each change-event transport.

As the outbound bench, against real processes; one fresh stack per transport (CometD, Pub/Sub), its emulator
answering at once (0 ms added latency), so that a delay counts from the person's write returning:

- the daemon first writes `bookings` Events (outbound, not timed here) and subscribes to change events;
- burst: a person reassigns `burst` of those Events in sObject Collections requests of 200 (each record with
  its own Subject, so that every record is a change event of its own); then the time until the ledger's
  journal has each reassignment (`salesforce.owner_changed`, the default policy records it and writes
  nothing): events applied per second, from the first request to the last journal entry;
- steady: one reassignment at a time at a fixed rate; the delay from each write returning to its journal
  entry (p50/p95/p99/max).
Beside each rate, the daemon's CPU seconds (user + system) per 1,000 events, over the same window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bridge.devtools.bench_world import PIPELINED, BenchWorld, percentile
from bridge.devtools.localpg import LocalPostgres

TRANSPORTS = ("cometd", "pubsub")
POLL_SECONDS = 0.05
SUBSCRIBE_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class InboundWorkload:
    """Sizes of one transport's run."""

    bookings: int  # Events written first; the burst and the steady run reassign distinct ones
    links: int
    burst: int
    steady_rate: float
    steady_seconds: float


QUICK_INBOUND = InboundWorkload(bookings=1_200, links=100, burst=1_000, steady_rate=10.0, steady_seconds=10.0)
FULL_INBOUND = InboundWorkload(bookings=7_000, links=500, burst=5_000, steady_rate=20.0, steady_seconds=60.0)


@dataclass(frozen=True, slots=True)
class InboundBurst:
    """Figures of one inbound burst."""

    events: int
    applied: int
    seconds: float  # first request sent to the last change journaled
    events_per_second: float
    cpu_seconds_per_1000: float | None


@dataclass(frozen=True, slots=True)
class InboundSteady:
    """Figures of one steady inbound run (delays in milliseconds)."""

    rate: float
    seconds: float
    events: int
    applied: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cpu_seconds_per_1000: float | None


# ------------------------------------------------------------------------------------------ arithmetic


def per_thousand(cpu_seconds: float, events: int) -> float | None:
    """CPU seconds per 1,000 events; None when nothing was applied."""
    return round(cpu_seconds / events * 1000.0, 3) if events > 0 else None


def events_per_second(events: int, seconds: float) -> float:
    """The rate over a window; 0.0 for an empty window."""
    return round(events / seconds, 1) if seconds > 0 else 0.0


def delays_ms(changed: Mapping[str, float], applied: Mapping[str, float]) -> list[float]:
    """The delay of each change that took effect (its journal time less its write's), in milliseconds.
    Both clocks are this machine's; a negative difference (a journal entry written before the person's
    request returned) is a delay of 0."""
    return [max(0.0, (applied[key] - at) * 1000.0) for key, at in changed.items() if key in applied]


def burst_result(
    events: int, started: float, applied_at: Sequence[float], cpu_seconds: float
) -> InboundBurst:
    """A burst's figures from when it started, when each change took effect, and the CPU it cost."""
    seconds = max(applied_at) - started if applied_at else 0.0
    return InboundBurst(
        events=events,
        applied=len(applied_at),
        seconds=round(seconds, 2),
        events_per_second=events_per_second(len(applied_at), seconds),
        cpu_seconds_per_1000=per_thousand(cpu_seconds, len(applied_at)),
    )


def steady_result(rate: float, seconds: float, delays: list[float], events: int, cpu: float) -> InboundSteady:
    """A steady run's figures from the delays of the changes that took effect."""
    return InboundSteady(
        rate=rate,
        seconds=seconds,
        events=events,
        applied=len(delays),
        p50_ms=round(percentile(delays, 50), 1),
        p95_ms=round(percentile(delays, 95), 1),
        p99_ms=round(percentile(delays, 99), 1),
        max_ms=round(max(delays, default=0.0), 1),
        cpu_seconds_per_1000=per_thousand(cpu, len(delays)),
    )


# ------------------------------------------------------------------------------------------ measuring


def _wait(what: str, done: Callable[[], bool], world: BenchWorld, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if not world.daemon.alive():
            raise RuntimeError(f"the daemon exited; see {world.daemon.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{world.name}: {what} did not happen in {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


def _reassignments(
    world: BenchWorld, bookings: Sequence[str], events: Mapping[str, tuple[str, str]]
) -> list[tuple[str, str]]:
    """(Event id, a new owner) for each booking: the next seeded user after the Event's current owner."""
    users = world.seed.users
    return [
        (
            events[b][0],
            users[(users.index(events[b][1]) + 1) % len(users)] if events[b][1] in users else users[0],
        )
        for b in bookings
    ]


def run_burst(
    world: BenchWorld, bookings: Sequence[str], events: Mapping[str, tuple[str, str]]
) -> InboundBurst:
    """Reassign the bookings' Events as fast as the org takes them; time until the ledger has them all."""
    person = world.seed.users[-1]
    changes = _reassignments(world, bookings, events)
    wanted = set(bookings)
    cpu_before = world.daemon_cpu_seconds()
    started = time.time()
    world.reassign(changes, person, "Burst")
    _wait(
        f"{len(wanted):,} reassignments", lambda: wanted <= world.owner_changes_applied().keys(), world, 600
    )
    cpu = world.daemon_cpu_seconds() - cpu_before
    applied = world.owner_changes_applied()
    return burst_result(len(changes), started, [applied[b] for b in wanted], cpu)


def run_steady(
    world: BenchWorld,
    bookings: Sequence[str],
    events: Mapping[str, tuple[str, str]],
    rate: float,
    seconds: float,
) -> InboundSteady:
    """Reassign one Event at a time at `rate` per second; the delay from each write to its journal entry."""
    person = world.seed.users[-1]
    changes = _reassignments(world, bookings, events)[: int(rate * seconds)]
    changed: dict[str, float] = {}
    done = threading.Event()

    def write() -> None:
        begin = time.monotonic()
        for k, change in enumerate(changes):
            pause = begin + k / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            changed[bookings[k]] = world.reassign([change], person, f"Steady {k}")
        done.set()

    cpu_before = world.daemon_cpu_seconds()
    writer = threading.Thread(target=write, name="bench-inbound-writer", daemon=True)
    writer.start()
    _wait(
        "the steady reassignments",
        lambda: done.is_set() and set(changed) <= world.owner_changes_applied().keys(),
        world,
        seconds + 120.0,
    )
    writer.join(timeout=5)
    cpu = world.daemon_cpu_seconds() - cpu_before
    delays = delays_ms(changed, world.owner_changes_applied())
    return steady_result(rate, seconds, delays, len(changed), cpu)


def _synced(world: BenchWorld, bookings: int) -> bool:
    counts = world.ledger_counts()
    return counts.get("synced", 0) >= bookings and not counts.get("pending")


def run_inbound(
    pg: LocalPostgres, workdir: Path, transport: str, work: InboundWorkload, say: Callable[[str], None]
) -> dict[str, Any]:
    """One transport's burst and steady run, on a fresh stack whose daemon wrote the Events first."""
    world = BenchWorld(pg, workdir, f"inbound_{transport}", 0, PIPELINED, transport=transport)
    try:
        world.add_links(work.links)
        world.add_bookings(work.bookings)
        setup = world.daemon.setup()
        if setup.returncode != 0:
            raise RuntimeError(f"mogli-bridge setup failed: {setup.stdout}{setup.stderr}")
        world.daemon.start()
        say(f"inbound over {transport}: writing {work.bookings:,} Events first")
        _wait("the first sync", lambda: _synced(world, work.bookings), world, 1800)
        _wait("the change-event subscription", world.streaming_subscribed, world, SUBSCRIBE_TIMEOUT_SECONDS)
        events = world.events_by_booking()
        ordered = sorted(events)
        say(f"inbound over {transport}: burst of {work.burst:,} reassignments")
        burst = run_burst(world, ordered[: work.burst], events)
        say(f"  {asdict(burst)}")
        say(f"inbound over {transport}: steady {work.steady_rate:g}/s for {work.steady_seconds:g}s")
        steady = run_steady(world, ordered[work.burst :], events, work.steady_rate, work.steady_seconds)
        say(f"  {asdict(steady)}")
    finally:
        world.close()
    return {"burst": asdict(burst), "steady": asdict(steady)}


# ------------------------------------------------------------------------------------------ reporting


def inbound_table(inbound: Mapping[str, Mapping[str, Any]]) -> Table:
    """Both transports side by side: burst rate and steady delays, each with CPU per 1,000 events."""
    transports = [t for t in TRANSPORTS if t in inbound]
    table = Table(title="inbound: a person's changes in the org to the ledger (emulator latency 0 ms)")
    table.add_column("figure")
    for transport in transports:
        table.add_column(transport, justify="right")
    bursts = [inbound[t]["burst"] for t in transports]
    steadies = [inbound[t]["steady"] for t in transports]
    rows: list[tuple[str, list[str]]] = [
        ("burst: events applied / sent", [f"{b['applied']:,} / {b['events']:,}" for b in bursts]),
        ("  events/s applied", [f"{b['events_per_second']:,.0f}" for b in bursts]),
        ("  CPU s per 1,000 events", [_cpu(b) for b in bursts]),
        ("steady: rate x seconds", [f"{s['rate']:g}/s x {s['seconds']:g}s" for s in steadies]),
        ("  applied / sent", [f"{s['applied']} / {s['events']}" for s in steadies]),
        *[
            (f"  delay {p} ms", [f"{s[p + '_ms']:,.0f}" for s in steadies])
            for p in ("p50", "p95", "p99", "max")
        ],
        ("  CPU s per 1,000 events", [_cpu(s) for s in steadies]),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    return table


def _cpu(figures: Mapping[str, Any]) -> str:
    value = figures["cpu_seconds_per_1000"]
    return "" if value is None else f"{value:.2f}"

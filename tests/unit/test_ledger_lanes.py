"""The ledger's fair worker thread: orgs' operations take turns, each org's stay in order."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bridge.ledger.lanes import EVERY_LANE, FairExecutor


def _blocked(executor: FairExecutor) -> threading.Event:
    """Occupy the worker thread until the returned event is set (so that the queue can be arranged)."""
    release, running = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        release.wait(5)

    executor.submit_to("hold", hold)
    assert running.wait(5)
    return release


def test_a_backlog_in_one_lane_waits_its_turn_behind_every_other_lane() -> None:
    executor = FairExecutor()
    ran: list[str] = []
    release = _blocked(executor)
    futures = [executor.submit_to("big", ran.append, f"big{k}") for k in range(4)]
    futures += [
        executor.submit_to("small-a", ran.append, "a"),
        executor.submit_to("small-b", ran.append, "b"),
    ]
    futures.append(executor.submit(ran.append, "ingest"))
    release.set()
    for future in futures:
        future.result(5)
    executor.shutdown()
    assert ran == ["ingest", "big0", "a", "b", "big1", "big2", "big3"]


def test_the_ingest_lane_takes_every_other_turn_however_many_orgs_wait() -> None:
    executor = FairExecutor()
    ran: list[str] = []
    release = _blocked(executor)
    futures = [executor.submit(ran.append, f"ingest{k}") for k in range(3)]
    futures += [executor.submit_to(f"org{k}", ran.append, f"org{k}") for k in range(4)]
    release.set()
    for future in futures:
        future.result(5)
    executor.shutdown()
    assert ran == ["ingest0", "org0", "ingest1", "org1", "ingest2", "org2", "org3"]


def test_a_long_ingest_batch_is_paid_for_with_the_org_lanes_time() -> None:
    """Ingest operations of 30 ms against org operations of 1 ms: after each ingest batch the org lanes get
    about as much of the thread before the next one, not a single turn (which would leave an import nearly
    all of it), and the ingest still comes back long before the org lanes are empty."""
    executor = FairExecutor()
    ran: list[str] = []

    def ingest(k: int) -> None:
        time.sleep(0.03)
        ran.append(f"ingest{k}")

    def org(k: int) -> None:
        time.sleep(0.001)
        ran.append(f"org{k}")

    release = _blocked(executor)
    futures = [executor.submit(ingest, k) for k in range(3)]
    futures += [executor.submit_to(f"org{k}", org, k) for k in range(200)]
    release.set()
    for future in futures:
        future.result(10)
    executor.shutdown()
    first, second = ran.index("ingest1"), ran.index("ingest2")
    assert ran[0] == "ingest0"
    assert 5 <= first - 1 <= 40, ran[: first + 1]
    assert 5 <= second - first - 1 <= 40, ran[first : second + 1]


def test_a_lane_keeps_its_order_and_errors_reach_the_caller() -> None:
    executor = FairExecutor()
    ran: list[int] = []
    release = _blocked(executor)
    lane = executor.lane("org-1")
    firsts = [lane.submit(ran.append, k) for k in range(3)]
    failing = lane.submit(int, "not a number")
    last = lane.submit(ran.append, 3)
    release.set()
    for future in [*firsts, last]:
        future.result(5)
    with pytest.raises(ValueError):
        failing.result(5)
    executor.shutdown()
    assert ran == [0, 1, 2, 3]


def test_shutdown_runs_what_is_queued_then_refuses_more() -> None:
    executor = FairExecutor()
    ran: list[str] = []
    release = _blocked(executor)
    queued = [executor.submit_to(key, ran.append, key) for key in ("x", "y", EVERY_LANE)]
    release.set()
    executor.shutdown(wait=True)
    assert all(f.done() for f in queued)
    assert sorted(ran) == sorted(["x", "y", EVERY_LANE])
    assert executor.queued() == {}
    with pytest.raises(RuntimeError):
        executor.submit(ran.append, "late")


def test_an_event_loop_awaits_lane_work_in_one_thread() -> None:
    executor = FairExecutor()
    threads: set[str] = set()

    def where(k: int) -> int:
        threads.add(threading.current_thread().name)
        return k * 2

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        lanes = [executor.lane(f"org-{k % 3}") for k in range(9)]
        return await asyncio.gather(*(loop.run_in_executor(lane, where, k) for k, lane in enumerate(lanes)))

    assert asyncio.run(main()) == [k * 2 for k in range(9)]
    executor.shutdown()
    assert threads == {"ledger_0"}

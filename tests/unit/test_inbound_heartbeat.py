"""A channel without a replay id: its "seen until" heartbeat is stored, and a later gap is reconciled."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

from bridge.pipeline.inbound import Inbound
from bridge.records.inbound import Heartbeat, InboundBatch, WindowLost
from bridge.rules.policy import PolicyOptions
from tests.unit.test_policy_inbound import CHANNEL, FAST, T0, Feed, Ledger, Reader, Writer, change


async def _run_until(inbound: Inbound, ledger: Ledger, wanted: int) -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(inbound.run(stop))
    async with asyncio.timeout(10):
        while True:
            if len(ledger.batches) >= wanted:
                break
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # several more sweeps (each flushes what is pending)
    stop.set()
    await task


def _inbound(feed: Feed, ledger: Ledger, log: list[str], **kw: object) -> Inbound:
    return Inbound(
        feed, ledger, Reader(), Writer(log), PolicyOptions(), on_work=lambda: None, settings=FAST, **kw
    )  # type: ignore[arg-type]


def _positions(batches: list[InboundBatch]) -> list[tuple[str | None, str | None]]:
    return [(b.checkpoint_stream, b.checkpoint_position) for b in batches if b.checkpoint_stream]


async def test_a_heartbeat_is_stored_as_a_position_without_replay_id() -> None:
    """`Heartbeat(channel, t)` becomes the channel's position `-1;t` (nothing else is written)."""
    log: list[str] = []
    ledger = Ledger(log)
    feed = Feed([Heartbeat(CHANNEL, T0), Heartbeat(CHANNEL, T0 + timedelta(minutes=1))])
    inbound = Inbound(
        feed, ledger, Reader(), Writer(log), PolicyOptions(), on_work=lambda: None, settings=FAST
    )  # type: ignore[arg-type]
    await _run_until(inbound, ledger, 1)
    assert _positions(ledger.batches)[-1] == (CHANNEL, f"-1;{(T0 + timedelta(minutes=1)).isoformat()}")
    assert all(not b.activities and not b.notes for b in ledger.batches)


async def test_a_first_heartbeat_is_stored_at_once_and_a_later_one_at_the_next_flush() -> None:
    """A channel's first report is written as it arrives; the next waits for the sweep's flush."""
    log: list[str] = []
    ledger = Ledger(log)
    later = T0 + timedelta(minutes=1)
    feed = Feed([Heartbeat(CHANNEL, T0, first=True), Heartbeat(CHANNEL, later)])
    slow = replace(FAST, sweep_seconds=3600)  # no flush but the one at the stop
    inbound = Inbound(
        feed, ledger, Reader(), Writer(log), PolicyOptions(), on_work=lambda: None, settings=slow
    )  # type: ignore[arg-type]
    await _run_until(inbound, ledger, 1)  # times out unless the first is written before the stop
    assert _positions(ledger.batches) == [
        (CHANNEL, f"-1;{T0.isoformat()}"),
        (CHANNEL, f"-1;{later.isoformat()}"),  # flushed at the stop
    ]


async def test_a_heartbeat_never_replaces_a_real_position() -> None:
    """Once a delivered change gave the channel a replay id, a late heartbeat does not overwrite it."""
    log: list[str] = []
    ledger = Ledger(log)
    echo = change(5, origin="com/salesforce/api/rest/60.0;client=mogli-bridge")
    feed = Feed([echo, Heartbeat(CHANNEL, T0 + timedelta(minutes=1))])
    inbound = Inbound(
        feed, ledger, Reader(), Writer(log), PolicyOptions(), on_work=lambda: None, settings=FAST
    )  # type: ignore[arg-type]
    await _run_until(inbound, ledger, 1)
    assert _positions(ledger.batches) == [(CHANNEL, f"5;{T0.isoformat()}")]


async def test_a_gap_without_replay_id_is_reconciled_from_the_last_heartbeat() -> None:
    """WindowLost with its reason asks for a reconciliation from `since` and journals the reason."""
    log: list[str] = []
    ledger = Ledger(log)
    calls: list[tuple[datetime, str]] = []

    async def reconcile(since: datetime, reason: str) -> None:
        calls.append((since, reason))

    feed = Feed([WindowLost(CHANNEL, T0, reason="resubscribed_without_replay_id")])
    inbound = Inbound(
        feed,
        ledger,
        Reader(),
        Writer(log),
        PolicyOptions(),
        on_work=lambda: None,
        reconcile=reconcile,
        settings=FAST,  # type: ignore[arg-type]
    )
    await _run_until(inbound, ledger, 1)
    assert calls == [(T0, f"resubscribed_without_replay_id:{CHANNEL}")]
    assert [n[2] for n in ledger.batches[0].notes] == [
        "streaming.resubscribed_without_replay_id",
        "reconcile_requested",
    ]

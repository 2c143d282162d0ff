"""A gap the stream reports is handed to the gap reconciler durably: if the ledger is away when the run is
opened, the change is retried, not journaled as done."""

from __future__ import annotations

import asyncio
from datetime import datetime

from bridge.errors import LedgerUnavailable
from bridge.pipeline.inbound import Inbound
from bridge.records.inbound import WindowLost
from bridge.rules.policy import PolicyOptions
from tests.unit.test_policy_inbound import CHANNEL, FAST, T0, Feed, Ledger, Reader, Writer


async def test_a_gap_request_the_ledger_refuses_is_retried_until_its_run_is_open() -> None:
    """When opening the gap's run fails because the ledger is unavailable, the window is not written off as
    `reconcile_needed`: the change is retried (its position not committed) until the request succeeds, then
    journaled as `reconcile_requested`."""
    log: list[str] = []
    ledger = Ledger(log)
    calls: list[tuple[datetime, str]] = []

    async def request(since: datetime, reason: str) -> None:
        calls.append((since, reason))
        if len(calls) == 1:
            raise LedgerUnavailable("the ledger database is unreachable")

    feed = Feed([WindowLost(CHANNEL, T0, reason="resubscribed_without_replay_id")])
    inbound = Inbound(
        feed,  # type: ignore[arg-type]
        ledger,  # type: ignore[arg-type]
        Reader(),  # type: ignore[arg-type]
        Writer(log),  # type: ignore[arg-type]
        PolicyOptions(),
        on_work=lambda: None,
        reconcile=request,
        settings=FAST,
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(inbound.run(stop))
    async with asyncio.timeout(10):
        while True:
            if ledger.batches:
                break
            await asyncio.sleep(0.005)
    stop.set()
    await task
    reason = f"resubscribed_without_replay_id:{CHANNEL}"
    assert calls == [(T0, reason), (T0, reason)]
    notes = [n[2] for b in ledger.batches for n in b.notes]
    assert notes == ["streaming.resubscribed_without_replay_id", "reconcile_requested"]

"""The Ledger runs every repository call in one worker thread, never on the event loop's thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event

from bridge.ledger.repository import Ledger
from tests.adapters.ledger.factory import NOW, batch, booking, setup_link, txn


@pytest.fixture
async def ledger(repo: Ledger) -> AsyncIterator[Ledger]:
    """The migrated test repository, closed (worker thread stopped) after the test."""
    try:
        yield repo
    finally:
        await repo.close()


async def test_calls_run_off_the_loop_in_one_thread(ledger: Ledger) -> None:
    """Every statement executes in the same worker thread, which is not the loop's thread."""
    threads: set[int] = set()

    def remember(*_args: object) -> None:
        threads.add(threading.get_ident())

    event.listen(ledger.engine, "before_cursor_execute", remember)
    summary = await ledger.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    work, counts = await asyncio.gather(ledger.claim_link_work(NOW, 10), ledger.counts())
    await ledger.write_checkpoint("/data/EventChangeEvent", "7")
    assert summary.pending_work and len(work) == 1 and counts["activities.pending"] == 1
    assert await ledger.read_checkpoint("/data/EventChangeEvent") == "7"
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_calls_are_serialised_in_issue_order(ledger: Ledger) -> None:
    """Calls issued concurrently run one after the other, in the order they were issued."""
    writes = [ledger.write_checkpoint("stream", str(i)) for i in range(20)]
    await asyncio.gather(*writes)
    assert await ledger.read_checkpoint("stream") == "19"


async def test_errors_propagate_to_the_caller(ledger: Ledger) -> None:
    """An exception raised in the worker thread reaches the awaiting coroutine."""
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(Exception, match="timezone-aware"):
        await ledger.apply_source_batch(batch(txn(booking("b1", start=naive))))
    assert await ledger.get_activity("b1") is None


async def test_close_is_idempotent(repo: Ledger) -> None:
    """Closing twice is harmless."""
    wrapper = repo
    await wrapper.ping()
    await wrapper.close()
    await wrapper.close()

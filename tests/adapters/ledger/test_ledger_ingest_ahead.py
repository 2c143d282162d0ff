"""Transactions applied ahead of the source position (pipeline/ingest_order.py) are remembered with it, in
the same ledger transaction, and a replay from the position skips exactly them."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.ledger.repository import Ledger
from bridge.records.source import IngestBatch, SourceTransaction
from tests.adapters.ledger.factory import BIG, NOW, batch, booking, link, setup_link, txn, user

A, B, C, D = BIG + 100, BIG + 200, BIG + 300, BIG + 400


def chosen(*txns: SourceTransaction, position: int | None) -> IngestBatch:
    """A batch chosen from the read-ahead, with the position the stream's applied prefix reaches."""
    return IngestBatch(transactions=txns, now=NOW, position=position, reordered=True)


async def _two_links(repo: Ledger) -> None:
    await repo.apply_source_batch(batch(setup_link(), txn(user("u2"), link("l2", "u2"), lsn=BIG)))


async def test_a_transaction_applied_ahead_is_remembered_and_the_position_stays(repo: Ledger) -> None:
    """B applied before A: the position stays at what precedes A, B is remembered as ahead."""
    await _two_links(repo)
    summary = await repo.apply_source_batch(chosen(txn(booking("b2", "l2"), lsn=B), position=None))
    assert summary.bookings == 1 and summary.checkpoint == str(BIG)
    assert await repo.read_checkpoint("source") == str(BIG)
    assert await repo.read_checkpoint("source.ahead") == str(B)


async def test_a_replay_after_a_restart_skips_what_was_applied_ahead_and_applies_the_rest(
    repo: Ledger,
) -> None:
    """The daemon died with B and D applied ahead of A; the stream comes again from the position: A and C
    are applied, B and D skipped (no second version of their work), and the ahead list shrinks with it."""
    await _two_links(repo)
    await repo.apply_source_batch(chosen(txn(booking("b2", "l2"), lsn=B), position=None))
    await repo.apply_source_batch(chosen(txn(booking("b4", "l2"), lsn=D), position=None))
    assert await repo.read_checkpoint("source.ahead") == f"{B},{D}"
    b2 = await repo.get_activity("b2")
    assert b2 is not None and b2.version == 1

    replay = (txn(booking("b1", "l1"), lsn=A), txn(booking("b2", "l2"), lsn=B))
    summary = await repo.apply_source_batch(chosen(*replay, position=B))
    assert summary.skipped_txns == 1 and summary.bookings == 1
    assert await repo.read_checkpoint("source") == str(B)
    assert await repo.read_checkpoint("source.ahead") == str(D)
    b2 = await repo.get_activity("b2")
    assert b2 is not None and b2.version == 1, "B was applied twice"

    rest = (txn(booking("b3", "l1"), lsn=C), txn(booking("b4", "l2"), lsn=D))
    summary = await repo.apply_source_batch(chosen(*rest, position=D))
    assert summary.skipped_txns == 1
    assert await repo.read_checkpoint("source") == str(D)
    assert await repo.read_checkpoint("source.ahead") == ""
    assert {a.booking_id for a in await repo.list_activities()} == {"b1", "b2", "b3", "b4"}


async def test_a_batch_in_stream_order_moves_the_position_to_its_end(repo: Ledger) -> None:
    """Without `reordered` the batch is a stretch of the stream; what was remembered below it is dropped."""
    await _two_links(repo)
    await repo.apply_source_batch(chosen(txn(booking("b2", "l2"), lsn=B), position=None))
    summary = await repo.apply_source_batch(
        batch(txn(booking("b1", "l1"), lsn=A), txn(booking("b2", "l2"), lsn=B))
    )
    assert summary.skipped_txns == 1 and summary.checkpoint == str(B)
    assert await repo.read_checkpoint("source.ahead") == ""


async def test_a_failed_batch_remembers_nothing(repo: Ledger) -> None:
    """The position and the ahead list belong to the batch's transaction: a batch that fails leaves both."""
    await _two_links(repo)
    broken = dataclasses.replace(txn(booking("b2", "l2"), lsn=B), changes=(None,))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):  # a change without a row: the batch fails inside the transaction
        await repo.apply_source_batch(chosen(broken, position=None))
    assert await repo.read_checkpoint("source.ahead") is None
    assert await repo.read_checkpoint("source") == str(BIG)

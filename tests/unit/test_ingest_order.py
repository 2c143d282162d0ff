"""The read-ahead's order (pipeline/ingest_order.py): one org's bookings pass another org's backlog, nothing
else is reordered, and the watermark is the applied prefix of the stream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.pipeline import ingest_order
from bridge.pipeline.ingest_order import Entry, IngestOrder, OrderLimits
from bridge.records.source import (
    BookingRow,
    ChangeOp,
    LinkRow,
    SourceChange,
    SourceTable,
    SourceTransaction,
)

NOW = datetime(2026, 12, 4, tzinfo=UTC)
ORGS = {"big-link": "big", "small-link": "small", "other-link": "other", "default-link": None}


def bookings(lsn: int, link: str, *ids: str, op: ChangeOp = ChangeOp.INSERT) -> SourceTransaction:
    """A transaction of bookings on one link."""
    changes = tuple(SourceChange(SourceTable.BOOKINGS, op, BookingRow(id=i, link_id=link)) for i in ids)
    return SourceTransaction(lsn, NOW, changes)


def a_link(lsn: int) -> SourceTransaction:
    """A transaction that creates a link: it changes which org bookings belong to."""
    return SourceTransaction(lsn, NOW, (SourceChange(SourceTable.LINKS, ChangeOp.INSERT, LinkRow(id="new")),))


def sorted_order(*txns: SourceTransaction, limits: OrderLimits = OrderLimits()) -> IngestOrder:
    """An order holding `txns`, sorted with every known link's org."""
    order = IngestOrder(limits=limits)
    for t in txns:
        order.add(t)
    ask(order)
    return order


def ask(order: IngestOrder) -> None:
    """Ask the "ledger" (ORGS) about the unknown links, as the Ingestor does, and sort."""
    asked = order.unknown_links()
    order.classify({link: ORGS[link] for link in asked if link in ORGS}, asked=asked)


def lsns(batch: list[Entry]) -> list[int]:
    return [e.txn.end_lsn for e in batch]


def drain(order: IngestOrder) -> list[list[int]]:
    """Every batch until the order is empty, applying each; sorted again before each, as the Ingestor does."""
    batches = []
    while order.waiting():
        ask(order)
        batch = order.take()
        order.applied(batch)
        batches.append(lsns(batch))
    return batches


def test_a_small_orgs_booking_passes_a_big_orgs_backlog() -> None:
    """Ten 1,000-booking transactions of one org, then one booking of another: the first batch is that
    booking alone (it does not wait for a backlog's transaction beside it), the watermark stays below the
    big org's unapplied transactions, and the big org alone then gets batches as large as the limits allow."""
    big = [bookings(100 + k, "big-link", *(f"b{k}-{i}" for i in range(1000))) for k in range(10)]
    order = sorted_order(*big, bookings(200, "small-link", "s1"))
    first = order.take()
    assert lsns(first) == [200]
    assert order.settled(first).ack_lsn is None
    order.applied(first)
    assert order.ahead == 1
    second = order.take()
    assert lsns(second) == [100, 101, 102, 103, 104]
    assert order.settled(second).position == 104


def test_a_few_bookings_and_a_backlog_alternate_and_the_backlog_keeps_its_share() -> None:
    """Two backlogs and a steady trickle: batches of the few bookings and of the backlogs take turns, and
    while other lanes are busy a backlog takes its share (one transaction), not a whole batch."""
    order = sorted_order(
        *(bookings(100 + k, "big-link", *(f"b{k}-{i}" for i in range(1000))) for k in range(3)),
        *(bookings(200 + k, "other-link", *(f"o{k}-{i}" for i in range(1000))) for k in range(3)),
        bookings(300, "small-link", "s1"),
    )
    assert lsns(order.take()) == [300]
    assert lsns(order.take()) == [100, 200]
    order.add(bookings(301, "small-link", "s2"))
    ask(order)
    assert lsns(order.take()) == [301]
    assert lsns(order.take()) == [101, 201]


def test_while_the_reader_is_behind_a_backlog_waits_and_few_bookings_do_not() -> None:
    """`read_first`: a lane holding a share of changes or more waits; lanes with a few bookings are taken;
    with only backlogs queued nothing is taken. The lane's count follows what is taken."""
    big = [bookings(100 + k, "big-link", *(f"b{k}-{i}" for i in range(600))) for k in range(2)]
    order = sorted_order(*big, bookings(200, "small-link", "s1"), bookings(201, "other-link", "o1", "o2"))
    assert order.backlogged()
    assert lsns(order.take(read_first=True)) == [200, 201]
    assert order.take(read_first=True) == []
    first = order.take()
    assert lsns(first) == [100, 101]
    assert not order.backlogged() and not order.waiting()
    small = sorted_order(bookings(300, "big-link", *(f"c{i}" for i in range(999))))
    assert not small.backlogged()
    assert lsns(small.take(read_first=True)) == [300]  # below a share: not a backlog


def test_one_org_alone_is_taken_in_stream_order_up_to_the_full_batch() -> None:
    """With one lane busy the batch is as large as the limits allow, in stream order."""
    order = sorted_order(
        *(bookings(100 + k, "big-link", *(f"b{k}-{i}" for i in range(1000))) for k in range(7))
    )
    assert drain(order) == [[100, 101, 102, 103, 104], [105, 106]]


def test_a_link_change_is_a_barrier() -> None:
    """Bookings after a link change wait for it, and it waits for everything before it."""
    order = sorted_order(
        bookings(100, "big-link", *(f"b{i}" for i in range(1000))),
        bookings(101, "big-link", *(f"c{i}" for i in range(1000))),
        a_link(102),
        bookings(103, "small-link", "s1"),
    )
    batches = drain(order)
    flat = [lsn for b in batches for lsn in b]
    assert flat.index(102) > flat.index(101) and flat.index(103) > flat.index(102)


def test_a_booking_changed_in_two_orgs_transactions_keeps_its_order() -> None:
    """A booking inserted on one org's link and then moved to another org's link: the move waits for the
    insert, however the lanes turn."""
    order = sorted_order(
        bookings(100, "big-link", *(f"b{i}" for i in range(1000))),
        bookings(101, "big-link", "moved"),
        bookings(102, "small-link", "moved", op=ChangeOp.UPDATE),
        bookings(103, "other-link", "o1"),
    )
    flat = [lsn for b in drain(order) for lsn in b]
    assert flat.index(102) > flat.index(101)
    assert sorted(flat) == [100, 101, 102, 103]


def test_an_unknown_link_or_a_delete_is_not_sorted() -> None:
    """A booking on a link the ledger does not know, and a delete (only the id), go in stream order."""
    order = sorted_order(
        bookings(100, "big-link", *(f"b{i}" for i in range(1000))),
        bookings(101, "nowhere", "x1"),
        bookings(102, "small-link", "s1"),
    )
    assert drain(order)[0] == [100]
    order = sorted_order(
        bookings(100, "big-link", *(f"b{i}" for i in range(1000))),
        bookings(101, "small-link", "s1", op=ChangeOp.DELETE),
    )
    assert drain(order) == [[100], [101]]


def test_a_transaction_read_while_the_ledger_was_asked_waits_for_the_next_question() -> None:
    """A booking read after the links were looked up is neither sorted on a guess nor made a barrier."""
    order = IngestOrder()
    order.add(bookings(100, "big-link", *(f"b{i}" for i in range(1000))))
    asked = order.unknown_links()
    order.add(bookings(101, "small-link", "s1"))  # read during the lookup
    order.classify({link: ORGS[link] for link in asked}, asked=asked)
    assert lsns(order.take()) == [100]
    ask(order)
    batch = order.take()
    assert lsns(batch) == [101] and batch[0].free


def test_an_empty_transaction_is_no_barrier() -> None:
    """The bridge's own write-back arrives emptied: it changes nothing, so what follows is still sorted."""
    order = sorted_order(
        bookings(100, "big-link", *(f"b{i}" for i in range(1000))),
        bookings(101, "big-link", *(f"c{i}" for i in range(1000))),
        SourceTransaction(102, NOW, ()),
        bookings(103, "small-link", "s1"),
    )
    assert drain(order)[0] == [102, 103]  # both sorted (the default org's lane and the small org's)


def test_without_reordering_everything_is_in_stream_order() -> None:
    """Tenancy off: one stream, one order."""
    order = IngestOrder(reorder=False)
    order.add(bookings(100, "big-link", *(f"b{i}" for i in range(5000))))
    order.add(bookings(101, "small-link", "s1"))
    assert order.unknown_links() == []
    assert drain(order) == [[100], [101]]


def test_running_ahead_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once MAX_AHEAD transactions are applied ahead, only the lane of the oldest unapplied one is served."""
    monkeypatch.setattr(ingest_order, "MAX_AHEAD", 5)
    order = sorted_order(
        bookings(1, "big-link", *(f"b{i}" for i in range(1000))),
        bookings(2, "big-link", *(f"c{i}" for i in range(1000))),
        *(bookings(10 + k, "small-link", f"s{k}") for k in range(10)),
        bookings(30, "other-link", "o1"),
        limits=OrderLimits(shared_changes=3 * 999),
    )
    first = order.take()
    assert lsns(first) == [1, *range(10, 20), 30]
    order.applied(first)
    assert order.ahead == 11
    order.add(bookings(40, "small-link", "late"))
    order.classify({})
    second = order.take()
    assert lsns(second) == [2], "the small lane ran further ahead"
    order.applied(second)
    assert order.ahead == 0
    assert drain(order) == [[40]]


def test_an_unfinished_snapshot_is_no_position() -> None:
    """Snapshot chunks move the acknowledged LSN, but only the last one is a position."""
    order = IngestOrder()
    chunk = SourceTransaction(500, NOW, bookings(0, "big-link", "b1").changes, snapshot=True)
    order.add(chunk)
    batch = order.take()
    assert order.settled(batch).position is None and order.settled(batch).ack_lsn == 500

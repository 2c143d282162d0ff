"""The order in which read source transactions go to the ledger: stream order, except that one org's bookings
may pass another org's (issue 13: a backlog of one org never delays another's bookings).

The change stream is one ordered queue for every org. Applying it strictly in order makes every org's new
booking wait behind whatever any other org committed before it: an import of 50,000 bookings holds the others
for as long as the ledger takes to write it. Two transactions that change only bookings, on links of
different orgs, and no booking in common, commute: their ledger effects touch disjoint rows. So the read-ahead
is sorted into one lane per org, kept in stream order within the lane, and a batch takes a share of every
lane's head (round robin, a quantum of changes each).

What may be reordered, and what may not:
- A transaction is `free` when it changes bookings only (inserts and updates), is not a snapshot chunk,
  every booking names its link, and every link is known to the ledger in one org. It joins
  that org's lane, unless a booking of it is also in an unapplied transaction of another lane: then it waits
  for that lane and is treated as below. An empty transaction (the bridge's own write-back, emptied by the
  echo filter) changes nothing and joins the default org's lane.
- Everything else is a `barrier`: users, links, organizations and connections change which org a booking
  belongs to; truncates, snapshot chunks and deletes (which carry only the booking id) are not sorted. A
  barrier waits until every transaction before it is applied, and no transaction after it is sorted into a
  lane before it is applied: from a barrier on, batches are taken in stream order, as with a single org.
- A link's org only changes through a barrier (its owner moves to another organization, the link gets
  another owner; once its Mogli Event is written it no longer changes at all), so the link orgs read from
  the ledger stay true until the next barrier is applied, and are read again after it.

While the reader works through a backlog (the source is `behind`), what it has not read yet may hold other
orgs' bookings, and a ledger busy writing an import slows the reader down (they share one interpreter). So
then a lane holding a share of changes or more waits, for at most a second per catch-up (the Ingestor
decides when: `take(read_first=True)`), and the lanes with a few bookings are still taken. Otherwise lanes
with a few bookings and lanes with a backlog go in batches of their own, in turn, so that a few bookings
never share a ledger transaction with an import's.

The source is acknowledged only up to the watermark: the end of the longest applied prefix of the stream.
A transaction applied ahead of it is remembered in the ledger (ingest.py, the `source.ahead` position) in
the same ledger transaction, so that a restart, which replays the stream from the watermark, skips it.
How far ahead a lane may run is bounded (MAX_AHEAD transactions): beyond it, only the lane holding the
oldest unapplied transaction is served until the watermark moves.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from bridge.records.source import BookingRow, ChangeOp, SourceTable, SourceTransaction

MAX_AHEAD = 2000  # transactions applied ahead of the watermark, at most
MAX_CLASSIFIED = 2000  # transactions sorted into lanes per look at the queue
MAX_UNKNOWN_LINKS = 2000  # link orgs asked of the ledger at once

_FREE_OPS = (ChangeOp.INSERT, ChangeOp.UPDATE)

Lane = str | None  # an org (None: the default org)


@dataclass(frozen=True, slots=True)
class OrderLimits:
    """How much one batch takes."""

    max_transactions: int = 500
    max_changes: int = 5000  # with one lane busy
    shared_changes: int = 1000  # with several lanes busy: a lane's share is this over the lanes


@dataclass(eq=False, slots=True)
class Entry:
    """One read transaction on its way to the ledger."""

    seq: int
    txn: SourceTransaction
    size: int
    free: bool  # bookings only, every link named: may be sorted into a lane
    routing: bool  # changes which org a booking belongs to (or the booking rows themselves wholesale)
    links: frozenset[str] = frozenset()
    bookings: frozenset[str] = frozenset()
    lane: Lane = None
    applied: bool = False


@dataclass(frozen=True, slots=True)
class Settled:
    """Where the stream stands once a batch is applied: the LSN to acknowledge and the checkpoint."""

    ack_lsn: int | None  # the end of the applied prefix (None: it did not move)
    position: int | None  # the same, counting only what is a position (not an unfinished snapshot)


def _entry(seq: int, txn: SourceTransaction, reorder: bool) -> Entry:
    size = len(txn.changes)
    rows = [c.row for c in txn.changes]
    only_bookings = all(c.table is SourceTable.BOOKINGS for c in txn.changes)
    # An empty transaction (the bridge's own write-back, emptied by the echo filter) fits any lane.
    free = (
        reorder
        and not txn.snapshot
        and only_bookings
        and all(c.op in _FREE_OPS and isinstance(c.row, BookingRow) and c.row.link_id for c in txn.changes)
    )
    routing = txn.snapshot or not only_bookings or any(c.op is ChangeOp.TRUNCATE for c in txn.changes)
    if not free:
        return Entry(seq, txn, size, free=False, routing=routing)
    links = frozenset(r.link_id for r in rows if isinstance(r, BookingRow) and r.link_id)
    bookings = frozenset(r.id for r in rows if isinstance(r, BookingRow))
    return Entry(seq, txn, size, free=True, routing=False, links=links, bookings=bookings)


@dataclass(slots=True)
class IngestOrder:
    """The read-ahead: what is queued, sorted into lanes, applied ahead; chooses each batch."""

    reorder: bool = True  # off (tenancy off): stream order only
    limits: OrderLimits = OrderLimits()
    queued_changes: int = 0  # read and not yet taken into a batch
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _stream: deque[Entry] = field(default_factory=deque)  # every entry not below the watermark
    _pending: deque[Entry] = field(default_factory=deque)  # not sorted into a lane yet, in stream order
    _lanes: dict[Lane, deque[Entry]] = field(default_factory=dict)
    _lane_changes: dict[Lane, int] = field(default_factory=dict)  # changes queued in each lane
    _turn: int = 0
    _small_last: bool = False  # the last batch was of the lanes with a few bookings only (see take)
    _link_orgs: dict[str, Lane | object] = field(default_factory=dict)  # _UNKNOWN: not in the ledger
    _touched: dict[str, Entry] = field(default_factory=dict)  # booking id -> its latest sorted entry
    _ahead: int = 0  # applied entries above the watermark

    def add(self, txn: SourceTransaction) -> None:
        """Queue a transaction read from the stream."""
        entry = _entry(next(self._seq), txn, self.reorder)
        self._stream.append(entry)
        self._pending.append(entry)
        self.queued_changes += entry.size

    def waiting(self) -> bool:
        """Whether anything is queued and not yet taken."""
        return bool(self._pending or self._lanes)

    @property
    def ahead(self) -> int:
        """Transactions applied ahead of the watermark."""
        return self._ahead

    # ------------------------------------------------------------------ sorting into lanes

    def unknown_links(self) -> list[str]:
        """Links of the sortable queued transactions whose org is not known yet (to ask the ledger)."""
        wanted: dict[str, None] = {}
        for entry in itertools.islice(self._pending, MAX_CLASSIFIED):
            if not entry.free:
                break
            for link in entry.links:
                if link not in self._link_orgs:
                    wanted[link] = None
            if len(wanted) >= MAX_UNKNOWN_LINKS:
                break
        return list(wanted)

    def classify(self, link_orgs: Mapping[str, Lane], asked: Iterable[str] = ()) -> None:
        """Sort queued transactions into lanes, in stream order, up to the first that cannot be sorted.
        `link_orgs`: the ledger's org of the links it knows among `asked`; one it does not know makes its
        transaction a barrier. A transaction read since the question waits for the next one."""
        for link in asked:
            self._link_orgs.setdefault(link, _UNKNOWN)
        self._link_orgs.update(link_orgs)
        for _ in range(MAX_CLASSIFIED):
            if not self._pending or not self._pending[0].free:
                return
            entry = self._pending[0]
            lane = self._lane_of(entry)
            if lane is _NOT_YET:
                return
            if lane is _UNKNOWN:
                entry.free = False  # a barrier now: it waits for everything before it
                return
            self._pending.popleft()
            entry.lane = lane  # type: ignore[assignment]
            self._lanes.setdefault(entry.lane, deque()).append(entry)
            self._lane_changes[entry.lane] = self._lane_changes.get(entry.lane, 0) + entry.size
            for booking in entry.bookings:
                self._touched[booking] = entry

    def _lane_of(self, entry: Entry) -> Lane | object:
        """The entry's lane; _NOT_YET when a link of it was not asked about, _UNKNOWN when it cannot go in
        one lane (a link unknown to the ledger, links of two orgs, a booking still in another lane)."""
        if not entry.links:
            return None  # an empty transaction: the default org's lane will do
        orgs = {self._link_orgs.get(link, _NOT_YET) for link in entry.links}
        if _NOT_YET in orgs:
            return _NOT_YET
        if len(orgs) != 1 or _UNKNOWN in orgs:
            return _UNKNOWN
        lane = orgs.pop()
        for booking in entry.bookings:
            before = self._touched.get(booking)
            if before is not None and not before.applied and before.lane != lane:
                return _UNKNOWN
        return lane

    # ------------------------------------------------------------------ taking a batch

    def take(self, *, read_first: bool = False) -> list[Entry]:
        """The next batch, in stream order; empty when nothing is queued.

        `read_first`: the reader is working through a backlog, and what it has not read yet may hold other
        orgs' bookings. A lane holding a backlog of its own (a share of changes or more) then waits, so
        that the ledger does not compete with the reader; lanes with a few bookings are still taken.
        The result is empty when only backlogged lanes are queued."""
        if self._ahead >= MAX_AHEAD:
            oldest = next((e for e in self._stream if not e.applied), None)
            if oldest is not None and oldest.lane in self._lanes and self._lanes[oldest.lane][0] is oldest:
                return self._from_lanes([oldest.lane], among=1)
        busy = [lane for lane, queue in self._lanes.items() if queue]
        if not busy:
            return self._in_stream_order()
        small = [lane for lane in busy if not self._is_backlog(self._lane_changes[lane])]
        if read_first:
            return self._from_lanes(small, among=len(busy)) if small else []
        chosen = busy
        if small and len(small) < len(busy):
            # A few bookings and a backlog go in batches of their own, in turn: a few bookings then never
            # wait for a backlog's ledger transaction beside them, only (at most) for the one before them.
            chosen = [lane for lane in busy if lane not in small] if self._small_last else small
        self._small_last = chosen is small
        return self._from_lanes(chosen, among=len(busy))

    def backlogged(self) -> bool:
        """Whether a lane holds a share of changes or more (what `take(read_first=True)` leaves)."""
        return any(self._is_backlog(n) for n in self._lane_changes.values())

    def _is_backlog(self, queued_changes: int) -> bool:
        """A lane holding a share of changes or more has a backlog; below that, a few bookings."""
        return queued_changes >= self.limits.shared_changes

    def _in_stream_order(self) -> list[Entry]:
        """From the head of the unsorted queue, as read (everything before it is applied)."""
        batch: list[Entry] = []
        changes = 0
        while self._pending and len(batch) < self.limits.max_transactions:
            if batch and changes + self._pending[0].size > self.limits.max_changes:
                break
            entry = self._pending.popleft()
            batch.append(entry)
            changes += entry.size
            if entry.routing:
                self._link_orgs.clear()  # read again once it is applied (nothing is sorted before that)
        self._taken(batch)
        return batch

    def _from_lanes(self, busy: list[Lane], among: int) -> list[Entry]:
        """Round robin over `busy`, each lane taking whole transactions up to its share of changes: all of a
        batch when it is the only busy lane, else a share of `shared_changes` over the `among` busy lanes."""
        limits = self.limits
        share = limits.max_changes if among == 1 else max(limits.shared_changes // among, 1)
        start = self._turn % len(busy)
        self._turn += 1
        batch: list[Entry] = []
        for lane in busy[start:] + busy[:start]:
            queue = self._lanes[lane]
            taken = 0
            while queue and len(batch) < limits.max_transactions:
                if taken and taken + queue[0].size > share:
                    break
                entry = queue.popleft()
                batch.append(entry)
                taken += entry.size
            self._lane_changes[lane] -= taken
            if not queue:
                del self._lanes[lane]
                del self._lane_changes[lane]
        batch.sort(key=lambda e: e.seq)
        self._taken(batch)
        return batch

    def _taken(self, batch: Iterable[Entry]) -> None:
        for entry in batch:
            self.queued_changes -= entry.size

    # ------------------------------------------------------------------ the watermark

    def settled(self, batch: list[Entry]) -> Settled:
        """Where the stream will stand once `batch` is applied (nothing changes yet)."""
        in_batch = {e.seq for e in batch}
        ack: int | None = None
        position: int | None = None
        for entry in self._stream:
            if not (entry.applied or entry.seq in in_batch):
                break
            ack = entry.txn.end_lsn
            if not entry.txn.snapshot or entry.txn.last_snapshot_chunk:
                position = entry.txn.end_lsn if position is None else max(position, entry.txn.end_lsn)
        return Settled(ack, position)

    def applied(self, batch: list[Entry]) -> None:
        """`batch` is durable in the ledger: drop the applied prefix of the stream."""
        for entry in batch:
            entry.applied = True
            entry.txn = replace(entry.txn, changes=())  # its rows are in the ledger; the positions remain
            self._ahead += 1
        while self._stream and self._stream[0].applied:
            done = self._stream.popleft()
            self._ahead -= 1
            for booking in done.bookings:
                if self._touched.get(booking) is done:
                    del self._touched[booking]


_NOT_YET = object()  # a link not asked about yet
_UNKNOWN = object()  # a link the ledger does not know, or no single lane

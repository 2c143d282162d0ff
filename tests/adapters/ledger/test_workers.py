"""Several workers (issue 14) on a real PostgreSQL ledger: membership, org leases spread over workers, expiry
and takeover with a new epoch, draining and leaving, concurrent rounds, and the fence every write of a fenced
scoped ledger checks (LeaseLost, nothing changed; the lease row held until the write commits).

Each `Ledger` here is one worker: its own engine, connections and worker thread, as a separate process has.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime

import pytest
from sqlalchemy import Connection, insert, select, update

from bridge.devtools.localpg import available_bindirs
from bridge.errors import LeaseLost, LedgerUnavailable
from bridge.ledger import upgrade_to_head
from bridge.ledger.checkpoints import write_position
from bridge.ledger.repository import Ledger
from bridge.ledger.tables import CHECKPOINTS, ORG_LEASES, ORGS
from bridge.records.ledger import DEFAULT_ORG, Fence, LeaseRound, OrgState
from bridge.records.outbound import ActivityOutcome, OutcomeState
from tests.adapters.ledger.factory import NOW
from tests.adapters.ledger.tenants import ORG_A, three_orgs

LONG = 30.0  # a lease that does not expire during a test
SHORT = 0.5  # a lease a test outwaits
CHANNEL = "/event/Mogli_Change__e"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """An empty PostgreSQL ledger database, migrated to head (workers coordinate on PostgreSQL only)."""
    with warnings.catch_warnings():  # pgserver's import warns without XDG_RUNTIME_DIR (see conftest.py)
        warnings.simplefilter("ignore")
        available_bindirs()
    url: str = request.getfixturevalue("pg_database")
    upgrade_to_head(url)
    return url


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[Ledger, Ledger]]:
    """Two workers' ledgers on the same database."""
    first, second = Ledger.from_url(pg_url, clock=lambda: NOW), Ledger.from_url(pg_url, clock=lambda: NOW)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _add_orgs(count: int) -> Callable[[Connection], None]:
    """A topic function adding connected orgs so that `count` orgs are served, the default org included."""

    def add(connection: Connection) -> None:
        rows = [
            {
                "org_id": f"org-{i:02d}",
                "connection": "connected",
                "state": OrgState.ACTIVE.value,
                "updated_at": NOW,
            }
            for i in range(1, count)
        ]
        if rows:
            connection.execute(insert(ORGS), rows)

    return add


def _served(count: int) -> set[str]:
    return {DEFAULT_ORG, *(f"org-{i:02d}" for i in range(1, count))}


def _leases(connection: Connection) -> dict[str, tuple[str | None, int]]:
    rows = connection.execute(select(ORG_LEASES.c.org_id, ORG_LEASES.c.worker_id, ORG_LEASES.c.epoch))
    return {org: (worker, epoch) for org, worker, epoch in rows}


async def _join(ledger: Ledger, worker: str, lease: float = LONG, draining: bool = False) -> None:
    await ledger.heartbeat(worker, "host", 1, reader=False, draining=draining, lease_seconds=lease)


async def _round(ledger: Ledger, worker: str, lease: float = LONG, draining: bool = False) -> LeaseRound:
    return await ledger.lease_round(worker, lease_seconds=lease, draining=draining)


async def test_two_workers_split_seven_orgs_four_three(pair: tuple[Ledger, Ledger]) -> None:
    """Both joined: the first round takes its share (4 of 7), the second the rest (3); a second round of the
    first changes nothing. No org is held by both, and the listings say who serves what."""
    a, b = pair
    a.call(_add_orgs(7))
    await _join(a, "a")
    await _join(b, "b")
    first = await _round(a, "a")
    second = await _round(b, "b")
    again = await _round(a, "a")
    assert (first.live_workers, first.share, len(first.held)) == (2, 4, 4)
    assert (second.share, len(second.held), second.surplus) == (4, 3, ())
    assert again.held == first.held and again.surplus == ()
    assert not set(again.held) & set(second.held)
    assert set(again.held) | set(second.held) == _served(7)
    assert set(first.held.values()) == {1}  # the first take of each org
    owners = await a.org_workers()
    assert owners == {**dict.fromkeys(first.held, "a"), **dict.fromkeys(second.held, "b")}
    listed = {w.worker_id: w for w in await b.list_workers()}
    assert set(listed) == {"a", "b"}
    assert set(listed["a"].orgs) == set(first.held) and set(listed["b"].orgs) == set(second.held)
    assert not listed["a"].draining and listed["a"].host == "host" and listed["a"].pid == 1


async def test_a_joining_worker_gets_the_surplus_the_first_released(pair: tuple[Ledger, Ledger]) -> None:
    """Alone, a worker takes all 7 orgs; when a second joins, its round names 3 as surplus; once released
    (after draining them) the second takes exactly those, each at the next epoch."""
    a, b = pair
    a.call(_add_orgs(7))
    await _join(a, "a")
    alone = await _round(a, "a")
    assert (alone.live_workers, alone.share, len(alone.held), alone.surplus) == (1, 7, 7, ())
    await _join(b, "b")
    assert (await _round(b, "b")).held == {}  # every lease is live: nothing to take yet
    crowded = await _round(a, "a")
    assert (crowded.share, len(crowded.held), len(crowded.surplus)) == (4, 7, 3)
    await a.release_leases("a", crowded.surplus)
    taken = await _round(b, "b")
    assert taken.held == dict.fromkeys(crowded.surplus, 2)
    kept = await _round(a, "a")
    assert set(kept.held) == set(crowded.held) - set(crowded.surplus) and kept.surplus == ()


async def test_an_expired_lease_is_taken_with_the_next_epoch(pair: tuple[Ledger, Ledger]) -> None:
    """A worker that stops renewing (lease 0.5 s) loses its orgs to the other at its next round, each with
    epoch + 1; the dead worker no longer counts as live."""
    a, b = pair
    a.call(_add_orgs(3))
    await _join(a, "a", lease=SHORT)
    held = (await _round(a, "a", lease=SHORT)).held
    assert held == dict.fromkeys(_served(3), 1)
    await _join(b, "b")
    await asyncio.sleep(SHORT * 2)
    taken = await _round(b, "b")
    assert taken.live_workers == 1 and taken.held == {org: epoch + 1 for org, epoch in held.items()}
    assert set((await a.org_workers()).values()) == {"b"}


async def _lose_org_a(a: Ledger, b: Ledger) -> tuple[Ledger, int]:
    """Worker a holds ORG_A (lease 0.5 s) and lets it expire; worker b takes it. Returns a's fenced view
    and a's epoch."""
    await three_orgs(a)
    a.call(lambda c: c.execute(update(ORGS).where(ORGS.c.org_id == ORG_A).values(connection="connected")))
    await _join(a, "a", lease=SHORT)
    epoch = (await _round(a, "a", lease=SHORT)).held[ORG_A]
    fenced = a.scoped(ORG_A, fence=Fence("a", epoch))
    await fenced.write_checkpoint(CHANNEL, "1")  # still leased: the fenced write commits
    assert len(await fenced.claim_link_work(NOW, 10)) == 1
    await _join(b, "b")
    await asyncio.sleep(SHORT * 2)
    assert (await _round(b, "b")).held[ORG_A] == epoch + 1
    return fenced, epoch


def _checkpoints(connection: Connection) -> dict[str, str]:
    return {s: p for s, p in connection.execute(select(CHECKPOINTS.c.stream, CHECKPOINTS.c.position))}


async def test_a_fenced_ledger_that_lost_its_lease_writes_nothing(pair: tuple[Ledger, Ledger]) -> None:
    """After the take, every write of the old holder's fenced view raises LeaseLost (not a retried
    LedgerUnavailable) and changes nothing: no claim, no outcome, no position."""
    a, b = pair
    fenced, epoch = await _lose_org_a(a, b)
    stream = f"org/{ORG_A}/{CHANNEL}"
    before = a.call_read(_checkpoints)
    assert before[stream] == "1"
    with pytest.raises(LeaseLost) as lost:
        await fenced.write_checkpoint(CHANNEL, "2")
    assert (lost.value.org_id, lost.value.worker_id, lost.value.epoch) == (ORG_A, "a", epoch)
    assert not isinstance(lost.value, LedgerUnavailable)
    with pytest.raises(LeaseLost):
        await fenced.claim_activity_work(NOW, 10)
    with pytest.raises(LeaseLost):
        await fenced.claim_link_work(NOW, 10)
    outcome = ActivityOutcome("b-a", 1, OutcomeState.SYNCED, activity_id="00U000000000001AAA")
    with pytest.raises(LeaseLost):
        await fenced.record_activity_outcomes([outcome], NOW)
    with pytest.raises(LeaseLost):
        fenced.call(write_position, CHANNEL, "3", NOW)  # the synchronous way in is fenced too
    assert a.call_read(_checkpoints) == before
    activity = await a.get_activity("b-a")
    assert activity is not None and activity.state == "pending" and activity.activity_id is None


async def test_unfenced_and_still_leased_views_write(pair: tuple[Ledger, Ledger]) -> None:
    """The new holder's fenced view and an unfenced view of the same org write as before."""
    a, b = pair
    _, epoch = await _lose_org_a(a, b)
    await b.scoped(ORG_A, fence=Fence("b", epoch + 1)).write_checkpoint(CHANNEL, "2")
    await a.scoped(ORG_A).write_checkpoint("other", "9")
    outcome = ActivityOutcome("b-a", 1, OutcomeState.SYNCED, activity_id="00U000000000001AAA")
    await b.scoped(ORG_A, fence=Fence("b", epoch + 1)).record_activity_outcomes([outcome], NOW)
    streams = a.call_read(_checkpoints)
    assert streams[f"org/{ORG_A}/{CHANNEL}"] == "2" and streams[f"org/{ORG_A}/other"] == "9"
    activity = await a.get_activity("b-a")
    assert activity is not None and activity.state == "synced"


async def test_concurrent_rounds_never_give_an_org_to_both(pair: tuple[Ledger, Ledger]) -> None:
    """Two workers' rounds at once (each in its own thread and connection), over and over from no leases:
    the held sets never overlap, and each org's holder and epoch are what the ledger says."""
    a, b = pair
    a.call(_add_orgs(20))
    await _join(a, "a")
    await _join(b, "b")
    for _ in range(10):
        first, second = await asyncio.gather(_round(a, "a"), _round(b, "b"))
        assert not set(first.held) & set(second.held)
        assert len(first.held) <= 10 and len(second.held) <= 10
        leases = a.call_read(_leases)
        assert {org: (w, e) for org, (w, e) in leases.items() if w == "a"} == {
            o: ("a", e) for o, e in first.held.items()
        }
        assert {org: (w, e) for org, (w, e) in leases.items() if w == "b"} == {
            o: ("b", e) for o, e in second.held.items()
        }
        await asyncio.gather(
            a.release_leases("a", list(first.held)), b.release_leases("b", list(second.held))
        )
    final = await asyncio.gather(_round(a, "a"), _round(b, "b"))
    assert set(final[0].held) | set(final[1].held) <= _served(20)


async def test_a_draining_worker_gives_everything_back(pair: tuple[Ledger, Ledger]) -> None:
    """Draining: share 0, every held org is surplus (and still renewed while the fleet drains); the other
    takes none while those leases live; after `leave` it takes them all at the next epoch."""
    a, b = pair
    a.call(_add_orgs(7))
    await _join(a, "a")
    await _join(b, "b")
    held = (await _round(a, "a")).held
    await _round(b, "b")
    await _join(a, "a", draining=True)
    draining = await _round(a, "a", draining=True)
    assert (draining.share, draining.held, set(draining.surplus)) == (0, held, set(held))
    other = await _round(b, "b")
    assert other.live_workers == 1 and other.share == 7 and not set(other.held) & set(held)
    assert [w.draining for w in await b.list_workers() if w.worker_id == "a"] == [True]
    await a.leave("a")
    after = await _round(b, "b")
    assert set(after.held) == _served(7)
    assert {org: after.held[org] for org in held} == {org: epoch + 1 for org, epoch in held.items()}
    assert [w.worker_id for w in await b.list_workers()] == ["b"]


def _blocking_write(opened: threading.Event, release: threading.Event) -> Callable[[Connection], None]:
    """A topic function that writes a position, then keeps its transaction open until told."""

    def write(connection: Connection) -> None:
        write_position(connection, CHANNEL, "held", NOW)
        opened.set()
        assert release.wait(30), "the test never released the open write"

    return write


async def test_the_fence_holds_the_lease_row_until_the_write_commits(pair: tuple[Ledger, Ledger]) -> None:
    """A fenced write transaction that checked its lease holds the row: a taker whose round runs while it is
    open (the lease has expired meanwhile) skips that org; the write commits; the next round takes it."""
    a, b = pair
    await three_orgs(a)
    await _join(a, "a", lease=SHORT)
    epoch = (await _round(a, "a", lease=SHORT)).held[DEFAULT_ORG]
    fenced = a.scoped(DEFAULT_ORG, fence=Fence("a", epoch))
    opened, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fenced.call(_blocking_write(opened, release))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    writer = threading.Thread(target=run)
    writer.start()
    try:
        assert opened.wait(30)
        await asyncio.sleep(SHORT * 2)  # a's lease expires while its write is open
        await _join(b, "b")
        during = await _round(b, "b")
        assert DEFAULT_ORG not in during.held
    finally:
        release.set()
        writer.join(30)
    assert errors == []
    assert a.call_read(_checkpoints)[CHANNEL] == "held"
    after = await _round(b, "b")
    assert after.held[DEFAULT_ORG] == epoch + 1


def _lease_until(connection: Connection) -> dict[str, datetime | None]:
    return {o: u for o, u in connection.execute(select(ORG_LEASES.c.org_id, ORG_LEASES.c.lease_until))}


@pytest.fixture
def sqlite_ledger(tmp_path: object) -> Iterator[Ledger]:
    """A SQLite ledger migrated to head."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    ledger = Ledger.from_url(url, clock=lambda: NOW)
    try:
        yield ledger
    finally:
        ledger.dispose()


async def test_one_worker_on_sqlite(sqlite_ledger: Ledger) -> None:
    """On SQLite (no row locks) the functions still serve one worker: it takes every org, its fenced view
    writes, a stale epoch's does not, and leaving releases its leases."""
    ledger = sqlite_ledger
    ledger.call(_add_orgs(3))
    await _join(ledger, "w")
    held = (await _round(ledger, "w")).held
    assert held == dict.fromkeys(_served(3), 1)
    assert all(until is not None for until in ledger.call_read(_lease_until).values())
    await ledger.scoped(DEFAULT_ORG, fence=Fence("w", 1)).write_checkpoint(CHANNEL, "1")
    with pytest.raises(LeaseLost):
        await ledger.scoped(DEFAULT_ORG, fence=Fence("w", 0)).write_checkpoint(CHANNEL, "2")
    assert ledger.call_read(_checkpoints)[CHANNEL] == "1"
    await ledger.leave("w")
    assert set((await ledger.org_workers()).values()) == {None}
    assert await ledger.list_workers() == []


async def test_a_lost_fence_fails_alone_among_concurrent_writes(pair: tuple[Ledger, Ledger]) -> None:
    """Writes queued together may share one transaction (group commit): the one whose lease was lost fails
    with LeaseLost and changes nothing, the others commit."""
    a, b = pair
    fenced, _ = await _lose_org_a(a, b)
    results = await asyncio.gather(
        fenced.write_checkpoint(CHANNEL, "lost"),
        a.scoped(None).write_checkpoint(CHANNEL, "kept"),
        a.write_checkpoint("source", "42"),
        return_exceptions=True,
    )
    assert isinstance(results[0], LeaseLost) and results[1:] == [None, None]
    streams = a.call_read(_checkpoints)
    assert (streams[f"org/{ORG_A}/{CHANNEL}"], streams[CHANNEL], streams["source"]) == ("1", "kept", "42")


async def test_a_heartbeat_keeps_the_start_and_moves_the_lease(pair: tuple[Ledger, Ledger]) -> None:
    """The second heartbeat updates the row (flags, lease) and keeps `started_at`."""
    a, _ = pair
    await _join(a, "a")
    [first] = await a.list_workers()
    await a.heartbeat("a", "host", 1, reader=True, draining=False, lease_seconds=LONG)
    [second] = await a.list_workers()
    assert second.started_at == first.started_at and second.lease_until >= first.lease_until
    assert second.reader and not first.reader
